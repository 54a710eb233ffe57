"""The exact Docker arguments of a kernel container, built by pure functions.

Kept free of engine calls so the fast test tier can assert every argument: what is mounted,
which ports are published where, which environment passes, and the safety options.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docker.types import DeviceRequest

from .engine import LABEL_GPUS, LABEL_KERNEL_ID, LABEL_KERNELSPEC, LABEL_ROLE, LABEL_RUN_DIR

# Where the kernel's private run directory (its connection file, IPC sockets) is mounted.
CONTAINER_RUN_DIR = "/tfenv-run"
CONTAINER_CONNECTION_FILE = f"{CONTAINER_RUN_DIR}/connection.json"
CONTAINER_HOME = "/tfenv-home"
# The kernel side of this package (widget, magic) is mounted here, so any image can use it.
CONTAINER_LIB_DIR = "/tfenv-lib"
PACKAGE_DIR = str(Path(__file__).resolve().parent)

# Inside its own network namespace the kernel can always use the same ports; the engine picks
# the host side, so nothing on the host can race for them.
CONTAINER_PORTS = {
    "shell_port": 5555,
    "iopub_port": 5556,
    "stdin_port": 5557,
    "control_port": 5558,
    "hb_port": 5559,
}
PORT_NAMES = tuple(CONTAINER_PORTS)

NETWORK_MODES = ("ipc", "loopback", "host", "none")
# Modes whose kernel channels are IPC sockets in the mounted run dir rather than TCP ports.
IPC_MODES = ("ipc", "none")

# Lines ipykernel prints at every start. In a death reason they only push the lines that say
# what happened out of view, and their "Ctrl-C will not work" is wrong for our kernels.
_IPYKERNEL_BANNER = re.compile(
    r"^\s*($|NOTE: When using the `ipython kernel` entry point|To exit, you will have to "
    r"explicitly quit|\"quit\" from a client, or using Ctrl-|To read more about this, see "
    r"https://github.com/ipython/ipython/issues/2049|To connect another client to this "
    r"kernel, use:|--existing \S+\s*$)"
)


@dataclass
class ContainerPlan:
    """Everything that decides a kernel container's create arguments."""

    image: str
    command: list[str]
    kernel_id: str
    kernelspec: str
    labels: dict[str, str]
    run_dir: str
    network: str = "ipc"
    # Host ports to ask for in loopback mode (a restart keeps the old ones); None: engine picks.
    host_ports: dict[str, int] | None = None
    env: dict[str, str] = field(default_factory=dict)
    notebook_dir: str | None = None
    home_volume: str = ""
    user: str | None = None
    device_requests: list[DeviceRequest] = field(default_factory=list)
    gpus_label: str = "none"
    mem_limit: str = ""
    nano_cpus: int = 0
    shm_size: str = ""
    use_image_entrypoint: bool = False
    # The image's PYTHONPATH, which ours extends rather than replaces.
    image_pythonpath: str = ""
    mount_package: bool = True
    # Folders inside the notebook mount that the kernel must not see (covered by an empty tmpfs).
    hidden_dirs: list[str] = field(default_factory=list)


def host_user() -> str:
    """``uid:gid`` of the user who runs Jupyter, so files written by the kernel are theirs."""
    return f"{os.getuid()}:{os.getgid()}"


def container_name(kernel_id: str) -> str:
    """A readable, unique name: the kernel id's start plus a random suffix (restarts overlap)."""
    return f"tfenv-{kernel_id[:8]}-{secrets.token_hex(3)}"


def build_create_kwargs(plan: ContainerPlan) -> dict[str, Any]:
    """Return the keyword arguments of ``client.containers.create`` for ``plan``."""
    labels = dict(plan.labels)
    labels[LABEL_KERNEL_ID] = plan.kernel_id
    labels[LABEL_KERNELSPEC] = plan.kernelspec
    labels[LABEL_ROLE] = "kernel"
    labels[LABEL_GPUS] = plan.gpus_label
    labels[LABEL_RUN_DIR] = plan.run_dir

    env = dict(plan.env)
    env["HOME"] = CONTAINER_HOME
    # docker-init (tini) then signals the kernel's whole process group, as a local kernel's
    # interrupt does: SIGINT reaches Python even through an image entrypoint that runs it
    # without `exec`, and reaches `!command` children of a cell too.
    env["TINI_KILL_PROCESS_GROUP"] = "1"
    if plan.mount_package:
        env["PYTHONPATH"] = ":".join(p for p in (plan.image_pythonpath, CONTAINER_LIB_DIR) if p)

    # The run dir holds the connection file (read-only is enough) and, in IPC mode, the
    # sockets the kernel creates (so it must be writable there).
    volumes: dict[str, dict[str, str]] = {
        plan.run_dir: {
            "bind": CONTAINER_RUN_DIR,
            "mode": "rw" if plan.network in IPC_MODES else "ro",
        },
    }
    if plan.notebook_dir:
        volumes[plan.notebook_dir] = {"bind": plan.notebook_dir, "mode": "rw"}
    if plan.mount_package:
        volumes[PACKAGE_DIR] = {"bind": f"{CONTAINER_LIB_DIR}/jupyter_tfenv", "mode": "ro"}
    kwargs: dict[str, Any] = {
        "image": plan.image,
        "command": plan.command,
        "name": container_name(plan.kernel_id),
        "labels": labels,
        "environment": env,
        "volumes": volumes,
        "detach": True,
        "init": True,
        "privileged": False,
        "security_opt": ["no-new-privileges"],
        "stdin_open": False,
        "tty": False,
    }
    if plan.home_volume:
        volumes[plan.home_volume] = {"bind": CONTAINER_HOME, "mode": "rw"}
    else:
        uid_gid = (plan.user or "0:0").split(":")
        owner = f"uid={uid_gid[0]},gid={uid_gid[-1]}," if uid_gid[0].isdigit() else ""
        kwargs["tmpfs"] = {CONTAINER_HOME: f"{owner}mode=0700"}
    for hidden in plan.hidden_dirs:
        kwargs.setdefault("tmpfs", {})[hidden] = "mode=0700,size=64k"
    if not plan.use_image_entrypoint:
        # Run the kernel directly under docker-init, so signals reach Python itself even when
        # the image's entrypoint is a shell script that does not exec.
        kwargs["entrypoint"] = []
    if plan.notebook_dir:
        kwargs["working_dir"] = plan.notebook_dir
    if plan.user:
        kwargs["user"] = plan.user
        if not plan.user.startswith("0:") and plan.user != "0":
            # A non-root kernel needs no capability at all.
            kwargs["cap_drop"] = ["ALL"]

    if plan.network == "loopback":
        kwargs["network_mode"] = "bridge"
        ports = plan.host_ports or {}
        # Published on 127.0.0.1 only: the kernel is reachable from this machine, nowhere else.
        kwargs["ports"] = {
            f"{CONTAINER_PORTS[name]}/tcp": ("127.0.0.1", str(ports.get(name, "")))
            for name in PORT_NAMES
        }
    elif plan.network == "host":
        kwargs["network_mode"] = "host"
    elif plan.network == "ipc":
        # Outbound network for the notebook's code (pip, datasets); no port is published.
        kwargs["network_mode"] = "bridge"
    else:
        kwargs["network_mode"] = "none"

    if plan.device_requests:
        kwargs["device_requests"] = plan.device_requests
    if plan.mem_limit:
        kwargs["mem_limit"] = plan.mem_limit
    if plan.nano_cpus:
        kwargs["nano_cpus"] = plan.nano_cpus
    if plan.shm_size:
        kwargs["shm_size"] = plan.shm_size
    return kwargs


def published_ports(attrs: dict[str, Any]) -> dict[str, int]:
    """Read the host ports the engine assigned from a container's inspect data."""
    bindings = attrs.get("NetworkSettings", {}).get("Ports") or {}
    found: dict[str, int] = {}
    for name, container_port in CONTAINER_PORTS.items():
        for binding in bindings.get(f"{container_port}/tcp") or []:
            if binding.get("HostIp") in ("127.0.0.1", "") and binding.get("HostPort"):
                found[name] = int(binding["HostPort"])
                break
    return found


def describe_exit(attrs: dict[str, Any], log_tail: str) -> str:
    """A sentence a user can act on: exit code, out of memory or not, the last log lines."""
    state = attrs.get("State", {})
    code = state.get("ExitCode")
    parts = [f"The kernel's container exited with code {code}"]
    if state.get("OOMKilled"):
        limit = attrs.get("HostConfig", {}).get("Memory") or 0
        where = f" of {limit // (1024 * 1024)} MiB" if limit else ""
        parts.append(
            f"; it ran out of memory (the limit{where} was reached). Raise mem_limit or use less "
            "memory (smaller batches)"
        )
    elif code == 137:
        parts.append(
            " (killed by SIGKILL: `docker kill`, the kernel process killed inside its container, "
            "or the system's out-of-memory killer)"
        )
    elif code == 143:
        parts.append(" (stopped by SIGTERM: `docker stop`, or the Docker engine stopping)")
    if state.get("Error"):
        parts.append(f"; engine error: {state['Error']}")
    text = "".join(parts) + "."
    tail = "\n".join(
        line for line in log_tail.strip().splitlines() if not _IPYKERNEL_BANNER.match(line)
    )
    if tail:
        text += " Last lines of its log:\n" + tail
    return text
