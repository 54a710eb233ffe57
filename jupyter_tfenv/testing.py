"""A real Jupyter server in a subprocess, for the end-to-end tests, the demo and the benchmark.

The server gets its own config, data and runtime directories, a random token and a free
loopback port, so runs never see each other's kernelspecs or state. It is stopped by its own PID.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServerProcess:
    """``jupyter server`` (or ``jupyter lab``) on 127.0.0.1 with isolated Jupyter directories."""

    def __init__(
        self,
        root_dir: Path,
        home: Path,
        app: str = "server",
        extra_env: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.root_dir = root_dir
        self.home = home
        self.app = app
        self.port = free_loopback_port()
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = home / f"jupyter-{self.app}-{self.port}.log"
        self.env = dict(os.environ)
        dirs = {
            "JUPYTER_CONFIG_DIR": home / "config",
            "JUPYTER_DATA_DIR": home / "data",
            "JUPYTER_RUNTIME_DIR": home / "runtime",
            "IPYTHONDIR": home / "ipython",
            "JUPYTERLAB_SETTINGS_DIR": home / "lab-settings",
            "JUPYTERLAB_WORKSPACES_DIR": home / "lab-workspaces",
        }
        for name, path in dirs.items():
            path.mkdir(parents=True, exist_ok=True)
            self.env[name] = str(path)
        self.env.update(extra_env or {})
        self.extra_args = extra_args or []
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def data_dir(self) -> Path:
        return Path(self.env["JUPYTER_DATA_DIR"])

    def start(self, timeout: float = 60) -> ServerProcess:
        args = [
            sys.executable,
            "-m",
            f"jupyter{'lab' if self.app == 'lab' else '_server'}",
            f"--ServerApp.port={self.port}",
            "--ServerApp.ip=127.0.0.1",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            "--ServerApp.open_browser=False",
            f"--ServerApp.root_dir={self.root_dir}",
            "--ServerApp.shutdown_no_activity_timeout=0",
        ]
        if os.getuid() == 0:
            args.append("--allow-root")
        if self.app == "lab":
            args += [
                "--LabApp.news_url=None",
                "--LabApp.expose_app_in_browser=True",
                "--LabApp.check_for_updates_class="
                "jupyterlab.handlers.announcements.NeverCheckForUpdate",
            ]
        args += self.extra_args
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            args,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=str(self.root_dir),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Jupyter server exited early; log:\n{self.log()}")
            try:
                with urllib.request.urlopen(
                    f"{self.url}api/status?token={self.token}", timeout=2
                ) as answer:
                    if answer.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
        raise TimeoutError(f"Jupyter server not up within {timeout}s; log:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self, timeout: float = 30) -> None:
        """Stop the way Ctrl-C does (SIGINT handled without a prompt), then SIGKILL if stuck."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def __enter__(self) -> ServerProcess:
        # `with ServerProcess(...).start():` must not start a second server.
        return self if self.process is not None else self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
