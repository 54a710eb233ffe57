"""Access to the Docker engine: one client per process, one async-safe path, our labels.

Every engine call made from the Jupyter event loop goes through :func:`run_blocking`, so a slow
engine never freezes the server. Every object we create carries the labels built by
:func:`owner_labels`; cleanup finds our containers by these labels, never by name patterns.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import docker
import docker.errors
from docker.models.containers import Container

from .errors import EngineUnavailableError

T = TypeVar("T")

LABEL_PREFIX = "org.jupyter-tfenv"
LABEL_MANAGED = f"{LABEL_PREFIX}.managed"
# A free-form group name; tests set it to their run id so they sweep only their own objects.
LABEL_OWNER = f"{LABEL_PREFIX}.owner"
LABEL_OWNER_HOST = f"{LABEL_PREFIX}.owner-host"
LABEL_OWNER_PID = f"{LABEL_PREFIX}.owner-pid"
# The owner's start time tells a live owner from a recycled pid.
LABEL_OWNER_STARTED = f"{LABEL_PREFIX}.owner-started"
LABEL_KERNEL_ID = f"{LABEL_PREFIX}.kernel-id"
LABEL_KERNELSPEC = f"{LABEL_PREFIX}.kernelspec"
LABEL_ROLE = f"{LABEL_PREFIX}.role"
LABEL_GPUS = f"{LABEL_PREFIX}.gpus"
# The kernel's private run dir on the owner's host, removed with an orphaned container.
LABEL_RUN_DIR = f"{LABEL_PREFIX}.run-dir"

DEFAULT_OWNER = "default"

_executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="tfenv-docker")
_clients: dict[str, docker.DockerClient] = {}
_clients_lock = threading.Lock()

log = logging.getLogger("jupyter_tfenv")


def docker_host_from_env() -> str:
    """The engine users chose for jupyter-tfenv (TFENV_DOCKER_HOST), "" for Docker's own choice."""
    return os.environ.get("TFENV_DOCKER_HOST", "")


def owner_from_env() -> str:
    """The owner group for our labels (TFENV_OWNER_LABEL), or the default group."""
    return os.environ.get("TFENV_OWNER_LABEL", DEFAULT_OWNER)


async def run_blocking(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking Docker SDK call off the event loop, on the engine's own thread pool."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_executor, functools.partial(func, *args, **kwargs))


def _explain_connect_failure(docker_host: str, error: BaseException) -> str:
    text = str(error)
    where = docker_host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if "Permission denied" in text or isinstance(error, PermissionError):
        return (
            f"Permission denied on the Docker engine socket {where}. Add your user to the "
            "'docker' group (`sudo usermod -aG docker $USER`, then log in again), or run Jupyter "
            "as a user that may use the engine."
        )
    if "No such file" in text or "FileNotFoundError" in text:
        return (
            f"No Docker engine socket at {where}. Install and start Docker (Debian/Ubuntu: "
            "`sudo apt-get install docker.io && sudo systemctl start docker`), or point "
            "DOCKER_HOST (or the docker_host setting) at a running engine."
        )
    return (
        f"The Docker engine at {where} does not answer ({text}). Start it (`sudo systemctl start "
        "docker`), or point DOCKER_HOST (or the docker_host setting) at a running engine."
    )


def get_client(docker_host: str = "", timeout: float = 60.0) -> docker.DockerClient:
    """Return this process's client for ``docker_host`` (empty: DOCKER_HOST or the default).

    The first call per host pings the engine, so a missing engine or a socket without permission
    is reported at once, with the fix, instead of as a timeout later.
    """
    with _clients_lock:
        client = _clients.get(docker_host)
        if client is not None:
            return client
        try:
            if docker_host:
                client = docker.DockerClient(
                    base_url=docker_host,
                    timeout=int(timeout),
                    max_pool_size=32,
                    use_ssh_client=docker_host.startswith("ssh://"),
                )
            else:
                client = docker.from_env(
                    timeout=int(timeout),
                    max_pool_size=32,
                    use_ssh_client=os.environ.get("DOCKER_HOST", "").startswith("ssh://"),
                )
            client.ping()
        except (docker.errors.DockerException, OSError) as error:
            raise EngineUnavailableError(_explain_connect_failure(docker_host, error)) from error
        _clients[docker_host] = client
        return client


def unavailable_error(docker_host: str, error: BaseException) -> EngineUnavailableError:
    """The error for an engine that stopped answering after its client was made, with the fix."""
    return EngineUnavailableError(_explain_connect_failure(docker_host, error))


async def get_client_async(docker_host: str = "") -> docker.DockerClient:
    """Like :func:`get_client`, without blocking the event loop on the first ping."""
    with _clients_lock:
        client = _clients.get(docker_host)
    if client is not None:
        return client
    return await run_blocking(get_client, docker_host)


def _process_start_time(pid: int) -> str:
    """The start time of ``pid`` in clock ticks since boot, or "" where /proc cannot tell."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # The command name may contain spaces, so split after its closing parenthesis.
            fields = stat.read().rsplit(")", 1)[1].split()
        return fields[19]
    except (OSError, IndexError):
        return ""


def owner_labels(owner: str = DEFAULT_OWNER) -> dict[str, str]:
    """Labels that tie an object to this process, so a later server can tell it was orphaned."""
    pid = os.getpid()
    return {
        LABEL_MANAGED: "true",
        LABEL_OWNER: owner or DEFAULT_OWNER,
        LABEL_OWNER_HOST: socket.gethostname(),
        LABEL_OWNER_PID: str(pid),
        LABEL_OWNER_STARTED: _process_start_time(pid),
    }


def owner_is_gone(labels: dict[str, str]) -> bool:
    """True when the labels name a process on this host that no longer runs."""
    if labels.get(LABEL_OWNER_HOST) != socket.gethostname():
        # Another machine's server owns it; only that machine can tell whether it is alive.
        return False
    try:
        pid = int(labels.get(LABEL_OWNER_PID, ""))
    except ValueError:
        return False
    started = _process_start_time(pid)
    if not started:
        return True
    recorded = labels.get(LABEL_OWNER_STARTED, "")
    return bool(recorded) and recorded != started


def sweep_orphans(client: docker.DockerClient, owner: str | None = None) -> list[str]:
    """Remove our kernel containers whose owning process on this host is gone.

    Called when a server or launcher starts, so containers of a server that was killed do not
    pile up. Returns the short ids removed.
    """
    label_filter = [f"{LABEL_MANAGED}=true"]
    if owner is not None:
        label_filter.append(f"{LABEL_OWNER}={owner}")
    removed: list[str] = []
    # The plain list call: no per-container inspect that could race with other removals.
    for summary in client.api.containers(all=True, filters={"label": label_filter}):
        labels = summary.get("Labels") or {}
        if not owner_is_gone(labels):
            continue
        short_id = summary["Id"][:12]
        log.warning(
            "Removing container %s of kernel %s: its owner process %s is gone",
            short_id,
            labels.get(LABEL_KERNEL_ID, "?"),
            labels.get(LABEL_OWNER_PID, "?"),
        )
        remove_container_id(client, summary["Id"])
        remove_run_dir(labels)
        removed.append(short_id)
    return removed


_watchdogs: dict[str, subprocess.Popen[bytes]] = {}


def start_owner_watchdog(docker_host: str = "") -> None:
    """Start, once per process and engine, a process that cleans up after this one.

    It blocks reading a pipe whose only writer is this process. When this process ends in any
    way (Ctrl-C without cleanup, SIGKILL, a crash) the pipe closes and the watchdog removes the
    kernel containers this process owned. Its own session keeps it out of our signals.
    """
    with _clients_lock:
        if docker_host in _watchdogs and _watchdogs[docker_host].poll() is None:
            return
        pid = os.getpid()
        _watchdogs[docker_host] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyter_tfenv.engine",
                "--watch-owner",
                str(pid),
                "--started",
                _process_start_time(pid),
                "--docker-host",
                docker_host,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )


def sweep_owner(client: docker.DockerClient, pid: int, started: str) -> list[str]:
    """Remove the kernel containers of the process ``pid`` (started at ``started``) here."""
    filters = {
        "label": [
            f"{LABEL_MANAGED}=true",
            f"{LABEL_OWNER_HOST}={socket.gethostname()}",
            f"{LABEL_OWNER_PID}={pid}",
        ]
    }
    removed = []
    for summary in client.api.containers(all=True, filters=filters):
        if (summary.get("Labels") or {}).get(LABEL_OWNER_STARTED, "") != started:
            continue
        remove_container_id(client, summary["Id"])
        remove_run_dir(summary.get("Labels") or {})
        removed.append(summary["Id"][:12])
    return removed


def remove_run_dir(labels: dict[str, str]) -> None:
    """Remove an orphaned kernel's run dir (its connection file holds the key), if ours."""
    run_dir = labels.get(LABEL_RUN_DIR, "")
    if labels.get(LABEL_OWNER_HOST) != socket.gethostname() or not run_dir:
        return
    if os.path.basename(run_dir).startswith("tfenv-") and os.path.isdir(run_dir):
        shutil.rmtree(run_dir, ignore_errors=True)


def _watch_owner(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m jupyter_tfenv.engine")
    parser.add_argument("--watch-owner", type=int, required=True)
    parser.add_argument("--started", default="")
    parser.add_argument("--docker-host", default="")
    args = parser.parse_args(argv)
    # Returns at end-of-file: when the owner has exited, however it exited.
    sys.stdin.buffer.read()
    try:
        sweep_owner(get_client(args.docker_host), args.watch_owner, args.started)
    except (docker.errors.DockerException, EngineUnavailableError, OSError):
        return 1
    return 0


def remove_container(container: Container) -> None:
    """Force-remove a container; already gone (404) or being removed (409) is fine."""
    remove_container_id(container.client, container.id)


def remove_container_id(client: docker.DockerClient, container_id: str) -> None:
    """Force-remove a container by id; already gone (404) or being removed (409) is fine."""
    try:
        client.api.remove_container(container_id, force=True, v=False)
    except docker.errors.NotFound:
        log.debug("Container %s was already removed", container_id[:12])
    except docker.errors.APIError as error:
        if error.status_code == 409:
            log.debug("Container %s is already being removed", container_id[:12])
        else:
            raise


if __name__ == "__main__":
    sys.exit(_watch_owner(sys.argv[1:]))
