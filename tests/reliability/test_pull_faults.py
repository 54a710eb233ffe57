"""Pull faults (issue 6): the registry going away mid-pull, and the engine's disk filling up.

Both are replayed with the product's pull code (jupyter_tfenv/pull.py) against a private
engine whose data root is a 96 MB tmpfs, and a real registry (Debian's docker-registry) that
runs inside the engine's network namespace, as does a front that sends blobs slowly so the test
can cut a pull in the middle. The engine is started with --max-download-attempts=1: a default
engine retries a broken download five times over about 50 s (showing "Retrying in N seconds"),
and only the final answer is what the product turns into a message.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import docker
import pytest

from jupyter_tfenv.pull import PullError, pull_image
from tests.integration.test_devenv_dockerd import mini_rootfs_tar

from .private_engine import PrivateEngine

pytestmark = [pytest.mark.engine, pytest.mark.slow]

REGISTRY_BINARY = "/usr/bin/docker-registry"
PROXY_SCRIPT = Path(__file__).resolve().parent / "trickle_proxy.py"
IMAGE = "tfenv-test/blob:1"
PAYLOAD = 24 << 20
# Brings the loopback interface of a fresh network namespace up (SIOCGIFFLAGS/SIOCSIFFLAGS).
LOOPBACK_UP = (
    "import fcntl, socket, struct\n"
    "s = socket.socket()\n"
    "flags = struct.unpack('16sH', fcntl.ioctl(s, 0x8913, struct.pack('16sH', b'lo', 0)))[1]\n"
    "fcntl.ioctl(s, 0x8914, struct.pack('16sH', b'lo', flags | 1))\n"
)
REGISTRY_UP = "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/v2/')"


class PullLab:
    """The private engine, its registry on 127.0.0.1:5000 and a slow front on :5001."""

    def __init__(self, engine: PrivateEngine) -> None:
        self.engine = engine
        self.registry: subprocess.Popen[bytes] | None = None
        self.front: subprocess.Popen[bytes] | None = None

    @property
    def client(self) -> docker.DockerClient:
        return self.engine.client()

    def run_inside(self, *argv: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [*self.engine.in_namespace("-n", "-m"), *argv], capture_output=True, check=False
        )

    def start_registry(self) -> None:
        assert self.run_inside(sys.executable, "-c", LOOPBACK_UP).returncode == 0
        directory = self.engine.root / "registry"
        directory.mkdir()
        config = directory / "config.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n"
            f"  filesystem:\n    rootdirectory: {directory / 'data'}\n"
            "http:\n  addr: 127.0.0.1:5000\n"
        )
        self.registry = subprocess.Popen(
            [*self.engine.in_namespace("-n"), REGISTRY_BINARY, "serve", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while self.run_inside(sys.executable, "-c", REGISTRY_UP).returncode != 0:
            assert time.monotonic() < deadline, "docker-registry did not answer in 15 s"
            time.sleep(0.2)

    def start_front(self, seconds: float) -> None:
        """The slow front on :5001; a blob takes ``seconds`` to pass."""
        self.front = subprocess.Popen(
            [
                *self.engine.in_namespace("-n"),
                sys.executable,
                str(PROXY_SCRIPT),
                "5001",
                "http://127.0.0.1:5000",
                str(seconds),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self.front.stdout is not None
        assert self.front.stdout.readline().strip() == b"ready"

    def stop_front(self) -> None:
        if self.front is not None and self.front.poll() is None:
            self.front.kill()
            self.front.wait(10)

    def push_image(self) -> None:
        """An image with one 24 MB layer of random bytes (it does not compress) in the registry."""
        buffer = io.BytesIO(mini_rootfs_tar())
        with tarfile.open(fileobj=buffer, mode="a") as archive:
            info = tarfile.TarInfo("payload.bin")
            info.size = PAYLOAD
            archive.addfile(info, io.BytesIO(os.urandom(PAYLOAD)))
        name = f"127.0.0.1:5000/{IMAGE}"
        repository, tag = name.rsplit(":", 1)
        self.client.api.import_image_from_data(
            buffer.getvalue(), repository=repository, tag=tag, changes=["ENV PATH=/bin"]
        )
        for event in self.client.api.push(repository, tag=tag, stream=True, decode=True):
            assert "error" not in event, event
        self.client.images.remove(name)

    def assert_nothing_left(self) -> None:
        """No image, and no layer data, after a failed pull: the disk space is back."""
        assert self.client.images.list(all=True) == []
        assert self.client.df()["LayersSize"] == 0
        leftovers = self.run_inside("find", str(self.engine.data_root / "tmp"), "-type", "f")
        assert leftovers.stdout.decode().split() == []

    def stop(self) -> None:
        self.stop_front()
        if self.registry is not None and self.registry.poll() is None:
            self.registry.kill()
            self.registry.wait(10)


@pytest.fixture(scope="module")
def pull_lab(devenv: ModuleType) -> Iterator[PullLab]:
    if os.geteuid() != 0:
        pytest.skip("a private dockerd needs root; CI runs these tests as root")
    missing = [
        tool for tool in ("dockerd", "unshare", "nsenter") if not devenv.RealSystem().which(tool)
    ]
    if not os.path.exists(REGISTRY_BINARY):
        missing.append(REGISTRY_BINARY)
    if missing:
        pytest.fail(
            f"the pull fault tests need {', '.join(missing)}: `apt-get install -y docker.io "
            "docker-registry util-linux`",
            pytrace=False,
        )
    engine = PrivateEngine(devenv, extra_args=("--max-download-attempts=1",), data_mb=96)
    lab = PullLab(engine)
    try:
        engine.start(standin=False)
        lab.start_registry()
        lab.push_image()
        yield lab
    finally:
        lab.stop()
        engine.close()


def test_pull_cut_off_by_the_registry_going_away_says_so_and_leaves_nothing(
    pull_lab: PullLab,
) -> None:
    pull_lab.start_front(seconds=20)
    events: list[dict[str, Any]] = []

    def report(event: dict[str, Any]) -> None:
        events.append(event)
        done = (event.get("progressDetail") or {}).get("current", 0)
        if event.get("status") == "Downloading" and done > 2 << 20:
            pull_lab.stop_front()  # the registry goes away, 2 MB into the layer

    started = time.monotonic()
    with pytest.raises(PullError) as caught:
        pull_image(pull_lab.client, f"127.0.0.1:5001/{IMAGE}", report=report, stall_timeout=30)

    assert time.monotonic() - started < 30
    message = str(caught.value)
    assert message.startswith(f"127.0.0.1:5001/{IMAGE}: the registry 127.0.0.1:5001 cannot be")
    assert "connection refused" in message
    assert "registry_mirrors" in message
    assert any(event.get("status") == "Downloading" for event in events)
    pull_lab.assert_nothing_left()

    # The registry is back: the same pull now works.
    pull_lab.start_front(seconds=0.5)
    try:
        result = pull_image(pull_lab.client, f"127.0.0.1:5001/{IMAGE}", stall_timeout=30)
    finally:
        pull_lab.stop_front()
    assert pull_lab.client.images.get(result.image).id == result.id
    pull_lab.client.images.remove(result.image)


def test_pull_onto_a_full_disk_says_so_and_leaves_nothing(pull_lab: PullLab) -> None:
    # 60 of the 96 MB taken: the 24 MB download fits, unpacking it next to it does not.
    filler = pull_lab.engine.data_root / "filler"
    assert pull_lab.run_inside("fallocate", "-l", "60M", str(filler)).returncode == 0
    try:
        started = time.monotonic()
        with pytest.raises(PullError) as caught:
            pull_image(pull_lab.client, f"127.0.0.1:5000/{IMAGE}", stall_timeout=30)
        assert time.monotonic() - started < 30
        message = str(caught.value)
        assert "the Docker engine's disk is full (no space left on device)" in message
        assert "docker image prune" in message
        pull_lab.assert_nothing_left()
    finally:
        pull_lab.run_inside("rm", "-f", str(filler))

    result = pull_image(pull_lab.client, f"127.0.0.1:5000/{IMAGE}", stall_timeout=30)
    assert pull_lab.client.images.get(result.image).id == result.id
    pull_lab.client.images.remove(result.image)
