"""Kernel launcher for clients that ignore kernel provisioners (jupyter console, VS Code, nbclient).

Such clients run the kernelspec's ``argv`` as a local process. This module is that process: it
starts the same container the provisioner would, on the ports the client chose, forwards
interrupts and termination to it, and removes it when the kernel ends, when it is terminated,
when its client goes away, and (through the owner watchdog of :mod:`jupyter_tfenv.engine`) even
when it is SIGKILLed.

Usage (written into kernel.json by ``jupyter tfenv install``)::

    python -m jupyter_tfenv.launcher --kernelspec-dir DIR CONNECTION_FILE
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
import uuid
from pathlib import Path
from types import FrameType
from typing import Any

import docker
import docker.errors
from jupyter_client.kernelspec import KernelSpec

from . import engine
from .container import CONTAINER_PORTS
from .errors import TfenvError
from .provisioner import DockerProvisioner

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def load_provisioner(kernelspec_dir: str, kernel_id: str) -> DockerProvisioner:
    """A provisioner configured exactly as the server would configure it for this kernelspec."""
    spec = KernelSpec.from_resource_dir(kernelspec_dir)
    config = dict(spec.metadata.get("kernel_provisioner", {}).get("config", {}))
    if not config.get("image"):
        raise TfenvError(
            f"The kernelspec in {kernelspec_dir} names no image. Reinstall it with "
            "`jupyter tfenv install --image IMAGE`."
        )
    return DockerProvisioner(kernel_id=kernel_id, kernel_spec=spec, **config)


def prepare_connection(provisioner: DockerProvisioner, client_info: dict[str, Any]) -> None:
    """Map the client's connection file onto the container: same key, the client's ports."""
    if client_info.get("transport", "tcp") != "tcp":
        raise TfenvError(
            "The tfenv launcher supports the tcp transport only; this client asked for "
            f"{client_info.get('transport')!r}. Use a tcp connection file, or a Jupyter server "
            "(which supports network='none' with IPC)."
        )
    if client_info.get("ip") not in _LOOPBACK:
        raise TfenvError(
            f"The client wants the kernel on {client_info.get('ip')!r}; tfenv publishes kernel "
            "ports on 127.0.0.1 only. Configure the client to use ip 127.0.0.1."
        )
    provisioner._make_run_dir()
    container_info = dict(client_info)
    if provisioner.network == "host":
        container_info["ip"] = "127.0.0.1"
    else:
        # IPC modes cannot serve a tcp client; loopback publishing is the safe equivalent.
        provisioner.network = "loopback"
        container_info["ip"] = "0.0.0.0"
        container_info.update(CONTAINER_PORTS)
        provisioner._host_ports = {name: int(client_info[name]) for name in CONTAINER_PORTS}
    provisioner._container_connection = container_info


class Launcher:
    """Runs one kernel container for a provisioner-less client and mirrors its lifetime."""

    def __init__(self, kernelspec_dir: str, connection_file: str) -> None:
        self.kernel_id = str(uuid.uuid4())
        self.provisioner = load_provisioner(kernelspec_dir, self.kernel_id)
        self.client_info = json.loads(Path(connection_file).read_text())
        self.parent_pid = os.getppid()
        self.exit_code: int | None = None
        self.finished = threading.Event()
        self.stopping = False

    def start(self) -> None:
        prepare_connection(self.provisioner, self.client_info)
        client = engine.get_client(self.provisioner.docker_host)
        engine.sweep_orphans(client)
        # Removes the container even if this launcher is SIGKILLed.
        engine.start_owner_watchdog(self.provisioner.docker_host)
        cmd = self.provisioner.container_command()
        self.client = client
        self.container = self.provisioner._create_and_start(
            client, cmd, {"cwd": os.getcwd(), "env": dict(os.environ)}
        )
        threading.Thread(target=self._wait_for_exit, daemon=True).start()

    def _wait_for_exit(self) -> None:
        try:
            result = self.container.wait()
            self.exit_code = int(result.get("StatusCode", 1))
        except (docker.errors.DockerException, OSError):
            self.exit_code = 1
        self.finished.set()

    def forward(self, signum: int, _frame: FrameType | None = None) -> None:
        """Signal handler: interrupts go to the kernel; termination stops the container."""
        if signum == signal.SIGINT:
            self._signal_container("SIGINT")
            return
        self.stop()

    def _signal_container(self, name: str) -> None:
        with contextlib.suppress(docker.errors.APIError):
            self.container.kill(signal=name)

    def stop(self) -> None:
        """Graceful, then forced: SIGTERM, up to stop_timeout seconds, then removal."""
        if self.stopping:
            return
        self.stopping = True
        self._signal_container("SIGTERM")
        self.finished.wait(self.provisioner.stop_timeout)
        self.finished.set()

    def run(self) -> int:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self.forward)
        try:
            self.start()
        except BaseException:
            self.provisioner._remove_run_dir()
            raise
        try:
            while not self.finished.wait(0.5):
                if os.getppid() != self.parent_pid:
                    # The client went away without shutting the kernel down.
                    self.stop()
        finally:
            engine.remove_container(self.container)
            self.provisioner._remove_run_dir()
        return self.exit_code if self.exit_code is not None else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jupyter_tfenv.launcher")
    parser.add_argument("--kernelspec-dir", help="directory of the tfenv kernelspec")
    parser.add_argument("connection_file", nargs="?", help="the client's connection file")
    args = parser.parse_args(argv)
    if not args.kernelspec_dir or not args.connection_file:
        parser.error("--kernelspec-dir and a connection file are required")
    started = time.monotonic()
    try:
        launcher = Launcher(args.kernelspec_dir, args.connection_file)
        code = launcher.run()
    except (TfenvError, ValueError) as error:
        print(f"jupyter-tfenv: {error}", file=sys.stderr)
        return 2
    print(
        f"jupyter-tfenv: kernel container ended after {time.monotonic() - started:.1f}s",
        file=sys.stderr,
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
