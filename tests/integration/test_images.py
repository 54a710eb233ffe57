"""The test images do what the rest of the suite relies on, checked against a real engine.

Image 2 (``tf_image``) imports TensorFlow and computes, is shaped like the official tag (root,
no WORKDIR, no ipykernel); image 1 (``kernel_image``) runs a real kernel that a jupyter_client
talks to; image 3 adds ipykernel and WORKDIR /tf; image 4 holds another TensorFlow version.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.connect import write_connection_file

pytestmark = pytest.mark.engine

REPO_ROOT = Path(__file__).resolve().parents[2]

# Prints one JSON line describing the interpreter, so each test asserts exact values.
PROBE = (
    "import importlib.util, json, os, sys; print(json.dumps({"
    "'python': '%d.%d' % sys.version_info[:2], 'uid': os.getuid(), 'cwd': os.getcwd(), "
    "'ipykernel': importlib.util.find_spec('ipykernel') is not None}))"
)

MATMUL = (
    "import json, tensorflow as tf; "
    "a = tf.constant([[1.0, 2.0], [3.0, 4.0]]); b = tf.constant([[5.0], [6.0]]); "
    "print(json.dumps({'version': tf.__version__, 'product': tf.matmul(a, b).numpy().tolist()}))"
)

TF_VERSION_CODE = "import tensorflow as tf; print(tf.__version__)"


def last_json_line(text: str) -> dict[str, Any]:
    lines = [line for line in text.splitlines() if line.startswith("{")]
    assert lines, f"no JSON line in the output:\n{text}"
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def run_kernel_code(
    docker_client: Any, image: str, workdir: Path, labels: dict[str, str], code: str
) -> str:
    """Start IMAGE's ipykernel with a mounted connection file, run CODE, return its result."""
    connect_dir = workdir / "connect"
    connect_dir.mkdir()
    connection_file, _ = write_connection_file(
        str(connect_dir / "kernel.json"),
        ip="127.0.0.1",
        transport="tcp",
        key=secrets.token_hex(16).encode(),
    )
    container = docker_client.containers.run(
        image,
        ["python", "-m", "ipykernel_launcher", "-f", "/connect/kernel.json"],
        detach=True,
        network_mode="host",
        volumes={str(connect_dir): {"bind": "/connect", "mode": "ro"}},
        labels=labels,
    )
    client = BlockingKernelClient(connection_file=connection_file)
    client.load_connection_file()
    client.start_channels()
    results: list[str] = []
    errors: list[str] = []

    def collect(message: dict[str, Any]) -> None:
        content = message["content"]
        if message["msg_type"] == "execute_result":
            results.append(content["data"]["text/plain"])
        elif message["msg_type"] == "error":
            errors.append("\n".join(content["traceback"]))

    try:
        try:
            client.wait_for_ready(timeout=60)
        except RuntimeError:
            container.reload()
            logs = container.logs().decode(errors="replace")
            pytest.fail(f"kernel in {image} not ready ({container.status}):\n{logs}")
        reply = client.execute_interactive(code, timeout=60, output_hook=collect)
    finally:
        client.stop_channels()
        container.remove(force=True)
    assert reply["content"]["status"] == "ok", errors
    assert len(results) == 1, (results, errors)
    return results[0]


def test_tf_image_imports_tensorflow_and_computes_a_matmul(
    run_in_image: Callable[..., Any], tf_image: str, tf_version: str
) -> None:
    run = run_in_image(
        tf_image, ["python", "-c", MATMUL], environment={"TF_CPP_MIN_LOG_LEVEL": "2"}
    )

    assert run.status == 0, run.stderr
    result = last_json_line(run.stdout)
    assert result == {"version": tf_version, "product": [[17.0], [39.0]]}


def test_tf_image_is_shaped_like_the_official_tag(
    run_in_image: Callable[..., Any], docker_client: Any, tf_image: str
) -> None:
    run = run_in_image(tf_image, ["python", "-c", PROBE])

    assert run.status == 0, run.stderr
    assert last_json_line(run.stdout) == {
        "python": "3.11",
        "uid": 0,
        "cwd": "/",
        "ipykernel": False,
    }
    config = docker_client.api.inspect_image(tf_image)["Config"]
    assert (config.get("WorkingDir") or "", config.get("User") or "") == ("", "")


def test_tf_images_carry_labels_that_tools_can_read(
    docker_client: Any, images_mode: str, tf_image: str, tf_alt_jupyter_image: str
) -> None:
    if images_mode == "official":
        pytest.skip("official tags carry no jupyter-tfenv labels (TFENV_TEST_IMAGES=official)")
    labels = docker_client.api.inspect_image(tf_image)["Config"]["Labels"]
    alt_labels = docker_client.api.inspect_image(tf_alt_jupyter_image)["Config"]["Labels"]

    expected = {"org.jupyter-tfenv.python-version": "3.11", "org.jupyter-tfenv.gpu": "false"}
    assert labels | expected == labels
    assert labels["org.tensorflow.version"] == "2.21.0"
    assert alt_labels["org.tensorflow.version"] == "2.20.0"
    assert len(labels["org.jupyter-tfenv.recipe-hash"]) == 64


def test_kernel_image_runs_a_real_kernel(
    docker_client: Any, kernel_image: str, tmp_path: Path, test_labels: dict[str, str]
) -> None:
    assert run_kernel_code(docker_client, kernel_image, tmp_path, test_labels, "1+1") == "2"


def test_tf_jupyter_image_has_ipykernel_and_workdir(
    run_in_image: Callable[..., Any], docker_client: Any, tf_jupyter_image: str
) -> None:
    run = run_in_image(tf_jupyter_image, ["python", "-c", PROBE])

    assert run.status == 0, run.stderr
    assert last_json_line(run.stdout) == {
        "python": "3.11",
        "uid": 0,
        "cwd": "/tf",
        "ipykernel": True,
    }
    assert docker_client.api.inspect_image(tf_jupyter_image)["Config"]["WorkingDir"] == "/tf"


def test_tf_jupyter_image_kernel_imports_tensorflow(
    docker_client: Any,
    tf_jupyter_image: str,
    tf_version: str,
    tmp_path: Path,
    test_labels: dict[str, str],
) -> None:
    code = "import tensorflow as tf; tf.__version__"
    result = run_kernel_code(docker_client, tf_jupyter_image, tmp_path, test_labels, code)

    assert result == repr(tf_version)


def test_tf_alt_jupyter_image_reports_its_own_tf_version(
    run_in_image: Callable[..., Any],
    tf_alt_jupyter_image: str,
    tf_alt_version: str,
    tf_version: str,
) -> None:
    run = run_in_image(
        tf_alt_jupyter_image,
        ["python", "-c", TF_VERSION_CODE],
        environment={"TF_CPP_MIN_LOG_LEVEL": "2"},
    )

    assert run.status == 0, run.stderr
    assert run.stdout.split() == [tf_alt_version]
    assert tf_alt_version != tf_version


def test_second_images_run_reuses_every_image(
    docker_client: Any, images_mode: str, tf_alt_jupyter_image: str, kernel_image: str
) -> None:
    # The fixtures above made sure every image exists; a second run must only check them.
    start = time.monotonic()
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "devenv.py"), "images"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ},
        check=False,
    )
    took = time.monotonic() - start

    assert completed.returncode == 0, completed.stdout + completed.stderr
    image_lines = [line for line in completed.stdout.splitlines() if " image " in line]
    assert len(image_lines) == 6, completed.stdout
    word = {"local": "cached", "official": "present"}
    assert all("cached" in line or word[images_mode] in line for line in image_lines), image_lines
    assert took < 15, f"a cached images run took {took:.1f} s"
