"""`jupyter tfenv images | pull | prepare | doctor` as a user runs them, against the real
engine and the loopback registry; settings come from the same config files as the server's."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from jupyter_tfenv.cli_images import ProgressPrinter, human_size
from jupyter_tfenv.kernelspecs import build_kernel_json
from jupyter_tfenv.pull import PullProgress

from .conftest import ImageKit
from .registry_helpers import LocalRegistry

JUPYTER = str(Path(sys.executable).with_name("jupyter"))


@pytest.fixture
def cli_home(
    tmp_path: Path, tfenv_run_label: str, registry: LocalRegistry, ns: str
) -> dict[str, str]:
    """Isolated Jupyter directories; the server's config names our registry as the mirror."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TFENV_", "JUPYTER_"))
    }
    for name in ("config", "data", "runtime"):
        (tmp_path / name).mkdir()
        env[f"JUPYTER_{name.upper()}_DIR"] = str(tmp_path / name)
    env["TFENV_OWNER_LABEL"] = tfenv_run_label
    # Set once in the server's config, used by the command line as well.
    (tmp_path / "config" / "jupyter_server_config.json").write_text(
        json.dumps(
            {
                "TfenvImages": {
                    "registry_mirrors": [registry.host],
                    "mirror_fallback": False,
                    "tensorflow_repository": f"{registry.host}/{ns}/tensorflow",
                }
            }
        )
    )
    # The command line's own file narrows detection to this run's images (the engine is shared).
    (tmp_path / "config" / "jupyter_tfenv_config.json").write_text(
        json.dumps({"TfenvImages": {"repository_patterns": [f"{ns}/*"], "detect_labels": []}})
    )
    return env


def tfenv(
    env: dict[str, str], *args: str, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [JUPYTER, "tfenv", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_pull_through_the_mirror_with_progress_lines(
    cli_home: dict[str, str], made_images: ImageKit, fresh_remote: str, registry: LocalRegistry
) -> None:
    image = made_images.remember(fresh_remote)
    result = tfenv(cli_home, "pull", image, "--progress-interval=0")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == f"Pulling {registry.host}/{image}"
    bars = [line for line in lines if line.startswith("[")]
    assert bars, result.stderr
    assert bars[-1].startswith("[" + "#" * 20 + "] 100.0%")
    assert "1/1 layers" in bars[-1]
    assert lines[-1].startswith(f"Pulled {image} via {registry.host}/{image} (")
    assert made_images.exists(image)
    assert not made_images.exists(f"{registry.host}/{image}")


def test_pull_failure_says_why_and_exits_non_zero(
    cli_home: dict[str, str], remote_tf: str, ns: str
) -> None:
    result = tfenv(cli_home, "pull", f"{ns}/tensorflow:0.0.404")
    assert result.returncode == 1
    assert "the tag '0.0.404' does not exist" in result.stderr
    bad = tfenv(cli_home, "pull", "Not/An:Image!")
    assert bad.returncode == 2
    assert "Invalid image name 'Not/An:Image!'" in bad.stderr


def test_images_lists_local_images_and_registry_tags(
    cli_home: dict[str, str], made_images: ImageKit, kernel_image: str, remote_tf: str, ns: str
) -> None:
    ref = made_images.tag(kernel_image, f"{ns}/tensorflow:2.99.5")
    result = tfenv(cli_home, "images")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows[0] == ["IMAGE", "TENSORFLOW", "PYTHON", "GPU", "KERNEL", "SIZE"]
    mine = next(row for row in rows if row and row[0] == ref)
    assert mine[1:5] == ["2.99.5", mine[2], "cpu", "ready"]
    assert mine[2].startswith("3.11")
    assert f"Tags of {remote_tf}:" in result.stdout
    assert "2.99.1" in result.stdout and "2.99.0" in result.stdout

    as_json = json.loads(tfenv(cli_home, "images", "--json", "--no-registry").stdout)
    assert ref in [entry["image"] for entry in as_json["local"]]
    assert as_json["registry"]["tags"] == []


def test_prepare_builds_or_reuses(
    cli_home: dict[str, str], no_ipykernel_image: str, made_images: ImageKit
) -> None:
    result = tfenv(cli_home, "prepare", no_ipykernel_image)
    assert result.returncode == 0, result.stderr
    prepared = f"{no_ipykernel_image}-tfenv"
    assert (
        f"Built {prepared} from {no_ipykernel_image}" in result.stdout
        or f"{prepared} was prepared from {no_ipykernel_image} earlier" in result.stdout
    )
    assert made_images.exists(prepared)
    again = tfenv(cli_home, "prepare", no_ipykernel_image, "--quiet")
    assert again.returncode == 0
    assert f"{prepared} was prepared from {no_ipykernel_image} earlier: reusing it." in again.stdout
    assert again.stderr == ""


def _install_spec(env: dict[str, str], name: str, image: str, gpus: str = "none") -> None:
    spec_dir = Path(env["JUPYTER_DATA_DIR"]) / "kernels" / name
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(
        json.dumps(build_kernel_json(image, name, gpus, str(spec_dir)))
    )


def test_doctor_passes_on_a_sound_setup(
    cli_home: dict[str, str], made_images: ImageKit, kernel_image: str, ns: str
) -> None:
    ref = made_images.tag(kernel_image, f"{ns}/doctor-ok/tensorflow:2.99.12")
    _install_spec(cli_home, "good", ref)
    # Only this test's image: the others of this run include one without Python on purpose.
    result = tfenv(cli_home, "doctor", f"--TfenvImages.repository_patterns={ns}/doctor-ok/*")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "[ ok ] Docker engine 20.10" in out
    assert "[ ok ] Docker socket /var/run/docker.sock is usable by this user" in out
    assert f"[ ok ] Image {ref}: TensorFlow 2.99.12" in out
    assert f"[ ok ] Kernelspec 'good' ({ref}, GPUs none) can start" in out
    assert "[ ok ] The jupyter_tfenv server extension is enabled" in out
    assert out.rstrip().endswith("No problems found.")


def test_doctor_names_each_problem_with_its_fix(
    cli_home: dict[str, str],
    made_images: ImageKit,
    no_ipykernel_image: str,
    kernel_image: str,
    ns: str,
) -> None:
    missing = f"{ns}/tensorflow:0.0.1-missing"
    _install_spec(cli_home, "gone", missing)
    _install_spec(cli_home, "no-kernel", no_ipykernel_image)
    _install_spec(
        cli_home, "wants-gpu", made_images.tag(kernel_image, f"{ns}/tensorflow:2.99.5"), "all"
    )
    result = tfenv(
        cli_home,
        "doctor",
        "--TfenvImages.gpu_support=no",
        # Kernelspecs only: image detection finds nothing (the engine is shared).
        "--TfenvImages.repository_patterns=none-such/*",
    )
    assert result.returncode == 1
    out = result.stdout
    assert (
        f"[FAIL] Kernelspec 'gone' ({missing}, GPUs none): the image is not on the engine." in out
    )
    assert f"fix: jupyter tfenv pull {missing}" in out
    assert "[FAIL] Kernelspec 'no-kernel'" in out
    assert f"fix: jupyter tfenv prepare {no_ipykernel_image}" in out
    assert "[FAIL] Kernelspec 'wants-gpu'" in out and "asks for GPUs" in out
    assert "[note] No local TensorFlow image yet." in out
    assert "3 problem(s) found; each has its fix above." in out


def test_doctor_without_engine_says_how_to_get_one(
    cli_home: dict[str, str], tmp_path: Path
) -> None:
    env = dict(cli_home, DOCKER_HOST=f"unix://{tmp_path}/no-docker.sock")
    result = tfenv(env, "doctor")
    assert result.returncode == 1
    assert f"[FAIL] No Docker socket at {tmp_path}/no-docker.sock." in result.stdout
    assert "fix: install and start Docker" in result.stdout


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_redraws_in_place() -> None:
    progress = PullProgress()
    progress.apply(
        {
            "status": "Downloading",
            "id": "a1b2c3d4e5f6",
            "progressDetail": {"current": 250_000, "total": 1_000_000},
        }
    )
    progress.apply({"status": "Already exists", "id": "0f0f0f0f0f0f", "progressDetail": {}})
    assert ProgressPrinter.render(progress, width=20) == (
        "[#####---------------]  25.0%  250.0 KB/1.0 MB  1/2 layers"
    )
    screen = FakeTerminal()
    printer = ProgressPrinter(screen)
    printer.update(progress, force=True)
    printer.line("Digest: sha256:abc")
    printer.update(progress, force=True)
    printer.finish()
    text = screen.getvalue()
    bar = "[" + "#" * 8 + "-" * 22 + "]  25.0%  250.0 KB/1.0 MB  1/2 layers"
    blank = " " * len(bar)
    # Drawn, wiped for the message line, drawn again below it, wiped at the end.
    assert text == f"\r{bar}\r{blank}\rDigest: sha256:abc\n\r{bar}\r{blank}\r"
    assert human_size(1536) == "1.5 KB" and human_size(999) == "999 B"


def test_progress_lines_elsewhere_are_periodic(monkeypatch: Any) -> None:
    clock = iter([0.0, 1.0, 6.0, 6.5])
    monkeypatch.setattr("jupyter_tfenv.cli_images.time.monotonic", lambda: next(clock))
    log = io.StringIO()
    printer = ProgressPrinter(log)
    progress = PullProgress()
    for done in (100, 200, 300, 400):
        progress.apply(
            {
                "status": "Downloading",
                "id": "a1b2c3d4e5f6",
                "progressDetail": {"current": done, "total": 1000},
            }
        )
        printer.update(progress)
    # At 0 s and 6 s: one line per 5 s interval, none for the updates in between.
    assert [line.split("%")[0][-5:] for line in log.getvalue().splitlines()] == [" 10.0", " 30.0"]
