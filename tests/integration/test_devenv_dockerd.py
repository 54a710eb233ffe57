"""devenv's "start dockerd" path, for real, on a private engine next to the shared one.

The shared engine is never stopped or reconfigured: this test starts a second dockerd with its
own socket, pidfile, data and exec roots, inside its own network namespace (a dockerd started
with the bridge disabled deletes the host's docker0, so it must not share the host's network),
lets devenv clean a stale pidfile and put the GPU stand-in on its PATH, and stops it by PID.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.engine

MINI_IMAGE = "tfenv-devenv-mini:1"


@pytest.fixture
def private_root(devenv: ModuleType) -> Iterator[Path]:
    # Short path: dockerd and containerd put unix sockets under it (108-byte limit).
    root = Path(tempfile.mkdtemp(prefix="tfenv-pd-", dir="/tmp"))
    yield root
    devenv._remove_tree_safely(root, devenv.Reporter())


def host_links() -> list[str]:
    """The host's network links other than container veths (which come and go)."""
    return sorted(name for name in os.listdir("/sys/class/net") if not name.startswith("veth"))


def mini_rootfs_tar() -> bytes:
    """A root file system holding only the host's /bin/sh and the libraries it loads."""
    shell = Path(os.path.realpath("/bin/sh"))
    listing = subprocess.run(["ldd", str(shell)], capture_output=True, text=True, check=True)
    libraries = [word for word in listing.stdout.split() if word.startswith("/")]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.add(str(shell), arcname="bin/sh")
        for library in libraries:
            archive.add(os.path.realpath(library), arcname=library.lstrip("/"))
    return buffer.getvalue()


def test_devenv_starts_its_own_dockerd_with_the_gpu_standin(
    devenv: ModuleType,
    private_root: Path,
    capsys: pytest.CaptureFixture[str],
    test_labels: dict[str, str],
) -> None:
    if os.geteuid() != 0:
        pytest.skip("starting a dockerd needs root; this path is exercised by CI as root")
    missing = [
        tool for tool in ("dockerd", "unshare", "ldd") if not devenv.RealSystem().which(tool)
    ]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (make engine installs dockerd on Debian)")
    links_before = host_links()
    daemon_json = private_root / "daemon.json"
    daemon_json.write_text("{}")
    config = devenv.EngineConfig(
        socket=str(private_root / "docker.sock"),
        pidfile=str(private_root / "docker.pid"),
        state_file=private_root / "state.json",
        log_file=private_root / "dockerd.log",
        standin_dir=private_root / "standin",
        extra_args=(
            "--data-root",
            str(private_root / "data"),
            "--exec-root",
            str(private_root / "exec"),
            "--config-file",
            str(daemon_json),
        ),
        launcher=("unshare", "--net", "--"),
    )
    # What a killed dockerd leaves behind: a pidfile naming a process that is gone.
    gone = subprocess.Popen(["true"])
    gone.wait()
    Path(config.pidfile).write_text(str(gone.pid))
    manager = devenv.EngineManager(config=config)

    try:
        manager.ensure(docker_host=None, gpu_standin=True)
        started = capsys.readouterr().out
        manager.ensure(docker_host=None, gpu_standin=True)
        reused = capsys.readouterr().out
        client = devenv.connect(config=config)
        try:
            client.api.import_image_from_data(
                mini_rootfs_tar(),
                repository=MINI_IMAGE.split(":")[0],
                tag="1",
                changes=["ENV PATH=/bin"],
            )
            gpu = devenv.probe_gpu_requests(client, MINI_IMAGE, test_labels, config=config)
        finally:
            client.close()
    finally:
        stopped = manager.stop_own()

    assert f"remove stale {config.pidfile}: removed (it named pid {gone.pid}" in started
    assert "with the GPU stand-in" in started
    assert f"answers at {config.url}" in started
    hook = config.standin_dir / "nvidia-container-runtime-hook"
    assert os.access(hook, os.X_OK)
    assert "TEST STAND-IN" in hook.read_text()
    assert "started by devenv" in reused
    assert "with GPU stand-in" in reused
    assert (gpu.accepted, gpu.standin, gpu.visible_devices) == (True, True, "all")
    assert stopped.startswith("stopped dockerd pid")
    assert host_links() == links_before
    assert not config.state_file.exists()
