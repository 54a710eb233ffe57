"""A private Docker engine for fault tests: a second dockerd that tests may stop and restart.

The shared engine of a test machine is never stopped or reconfigured. Faults that need an
engine restart, or an engine with (or without) the GPU stand-in hook, get a second dockerd with
its own socket, pidfile, data root and exec root, started and stopped by scripts/devenv.py's
EngineManager (the code ``make engine`` runs), so it is stopped by its own PID.

It runs in its own network namespace (``unshare --net``): dockerd started with ``--bridge none``
deletes the host's ``docker0`` (moby's removeDefaultBridgeInterface), which would cut the
shared engine's containers off; inside its own namespace it touches nothing of the host's.
The server cannot reach that namespace's loopback, so kernels on this engine use network
"none": ZeroMQ over IPC sockets in the kernel's run directory, which both sides see.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import docker
import pytest

# The GPU stand-in hook: a script named like NVIDIA's that reads the container state and exits
# 0, so dockerd registers its "nvidia" device driver. No GPU is used or exposed.
STANDIN_NOTE = "GPU stand-in hook (test double, no GPU is used)"


class PrivateEngine:
    """A throw-away dockerd: start with or without the GPU stand-in, stop, restart, remove."""

    def __init__(
        self, devenv: ModuleType, extra_args: tuple[str, ...] = (), data_mb: int = 0
    ) -> None:
        """``data_mb``: put the data root on a tmpfs of that size, to fill the disk at will."""
        self.devenv = devenv
        # Short path: dockerd and containerd put unix sockets under it (108-byte limit).
        self.root = Path(tempfile.mkdtemp(prefix="tfenv-re-", dir="/tmp"))
        daemon_json = self.root / "daemon.json"
        daemon_json.write_text("{}")
        self.data_root = self.root / "data"
        launcher: tuple[str, ...] = ("unshare", "--net", "--")
        if data_mb:
            # In a mount namespace of its own, which ends with dockerd: nothing to unmount.
            self.data_root.mkdir()
            mount = f'mount -t tmpfs -o size={data_mb}m tfenv-test "$0" && exec "$@"'
            launcher = (
                "unshare", "--net", "--mount", "--propagation", "private", "--",
                "sh", "-c", mount, str(self.data_root),
            )  # fmt: skip
        self.config = devenv.EngineConfig(
            socket=str(self.root / "docker.sock"),
            pidfile=str(self.root / "docker.pid"),
            state_file=self.root / "state.json",
            log_file=self.root / "dockerd.log",
            standin_dir=self.root / "standin",
            extra_args=(
                "--data-root",
                str(self.data_root),
                "--exec-root",
                str(self.root / "exec"),
                "--config-file",
                str(daemon_json),
                "--bridge",
                "none",
                "--iptables=false",
                *extra_args,
            ),
            launcher=launcher,
        )
        self.output = io.StringIO()
        self.manager = devenv.EngineManager(
            config=self.config, reporter=devenv.Reporter(self.output)
        )
        self.standin: bool | None = None
        self._client: docker.DockerClient | None = None

    @property
    def url(self) -> str:
        return str(self.config.url)

    @property
    def pid(self) -> int | None:
        state = self.manager.own_state()
        return None if state is None else int(state.pid)

    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = docker.DockerClient(base_url=self.url, timeout=300)
        return self._client

    def start(self, standin: bool) -> None:
        """Start dockerd (its data root, so images and stopped containers, persists)."""
        self.manager.ensure(docker_host=None, gpu_standin=standin)
        state = self.manager.own_state()
        if state is None or state.gpu_standin != standin:
            raise RuntimeError(
                f"private dockerd did not start {'with' if standin else 'without'} the "
                f"{STANDIN_NOTE}:\n{self.output.getvalue()}"
            )
        self.standin = standin

    def stop(self) -> float:
        """Stop dockerd by its PID (SIGTERM: it stops its containers first); return seconds."""
        started = time.monotonic()
        if self._client is not None:
            self._client.close()
            self._client = None
        pid = self.pid
        self.manager.stop_own(timeout=60)
        if pid is not None:
            # devenv keeps the Popen of the dockerd it spawned: polling it reaps the exited
            # process, so restarts leave no zombies behind in the test process.
            self.manager.system.exit_status(pid)
        return time.monotonic() - started

    def use(self, standin: bool) -> PrivateEngine:
        """Make sure the engine runs, with the stand-in hook on its PATH or without."""
        if self.standin is not standin or self.pid is None:
            if self.pid is not None:
                self.stop()
            self.start(standin)
        return self

    def load_image(self, source: docker.DockerClient, name: str) -> None:
        """Copy an image from the shared engine (`docker save | docker load`, streamed)."""
        with contextlib.suppress(docker.errors.ImageNotFound):
            if self.client().images.get(name).id == source.images.get(name).id:
                return
        for _event in self.client().api.load_image(source.api.get_image(name)):
            pass

    def in_namespace(self, *namespaces: str) -> list[str]:
        """The command prefix that runs a program in this engine's namespaces ("-n", "-m")."""
        pid = self.pid
        if pid is None:
            raise RuntimeError("the private engine is not running")
        return ["nsenter", "-t", str(pid), *namespaces, "--"]

    def containers(self, label: str) -> list[dict[str, Any]]:
        """Every container (running or not) carrying ``label`` on this engine."""
        found: list[dict[str, Any]] = self.client().api.containers(
            all=True, filters={"label": label}
        )
        return found

    def close(self) -> None:
        """Stop the engine by PID (SIGKILL if it hangs) and remove everything it stored."""
        with contextlib.suppress(Exception):
            self.stop()
        pid = self.pid
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        self._kill_own_containerd()
        self.devenv._remove_tree_safely(self.root, self.devenv.Reporter(self.output))

    def _kill_own_containerd(self) -> None:
        """A dockerd killed outright leaves its containerd; find it by our exec root only."""
        marker = str(self.root / "exec").encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes()
                name = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if name.startswith("containerd") and marker in argv:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(entry.name), signal.SIGKILL)


_ENGINE = pytest.StashKey[PrivateEngine]()


def shared_private_engine(
    config: pytest.Config, devenv: ModuleType, source: docker.DockerClient, image: str
) -> PrivateEngine:
    """The one private engine of this test session (GPU and fault tests share it)."""
    engine = config.stash.get(_ENGINE, None)
    if engine is not None:
        return engine
    if os.geteuid() != 0:
        pytest.skip("a private dockerd needs root; CI runs these tests as root")
    missing = [tool for tool in ("dockerd", "unshare") if not devenv.RealSystem().which(tool)]
    if missing:
        pytest.fail(
            f"the private engine needs {', '.join(missing)}: run `make engine` (it installs "
            "docker.io on Debian/Ubuntu)",
            pytrace=False,
        )
    engine = PrivateEngine(devenv)
    config.add_cleanup(engine.close)
    engine.start(standin=True)
    engine.load_image(source, image)
    config.stash[_ENGINE] = engine
    return engine
