"""A jupyter_client kernel provisioner that runs each kernel in a TensorFlow Docker container.

jupyter_client calls the provisioner through the kernel's life: ``pre_launch`` prepares the
connection data, ``launch_kernel`` creates and starts the container, ``poll``/``wait`` watch it,
``send_signal``/``terminate``/``kill`` signal it, and ``cleanup`` removes it. Every setting is a
trait, settable in ``jupyter_server_config.py`` (``c.DockerProvisioner.mem_limit = "8g"``) and
per kernelspec in ``metadata.kernel_provisioner.config`` of its ``kernel.json``.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import os
import shutil
import signal
import string
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import docker
import docker.errors
import requests
from docker.models.containers import Container
from docker.utils import parse_bytes
from jupyter_client.connect import KernelConnectionInfo, LocalPortCache
from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase
from jupyter_core.paths import jupyter_runtime_dir
from tornado import web
from traitlets import (
    Bool,
    Dict,
    Enum,
    Float,
    Int,
    List,
    TraitError,
    Unicode,
    Union,
    default,
    validate,
)

from . import engine
from .container import (
    CONTAINER_CONNECTION_FILE,
    CONTAINER_HOME,
    CONTAINER_PORTS,
    IPC_MODES,
    NETWORK_MODES,
    PORT_NAMES,
    ContainerPlan,
    build_create_kwargs,
    describe_exit,
    host_user,
    published_ports,
)
from .errors import (
    EngineRefusedError,
    EngineUnavailableError,
    GpuUnavailableError,
    KernelContainerError,
    TfenvError,
    UnsafeMountError,
)
from .gpus import GPU_SPEC_HELP, GpuRequest, is_gpu_driver_error, parse_gpus
from .kernel_image import probe_image, require_kernel_ready

DEFAULT_ENV_ALLOWLIST = [
    "TZ",
    "LANG",
    "LC_ALL",
    "TF_CPP_MIN_LOG_LEVEL",
    "TF_ENABLE_ONEDNN_OPTS",
    "TF_FORCE_GPU_ALLOW_GROWTH",
    "KERAS_BACKEND",
]
DEFAULT_KERNEL_COMMAND = [
    "python3",
    "-m",
    "ipykernel_launcher",
    "-f",
    "{connection_file}",
    # Loads the `%tfenv` magic from the kernel-side modules mounted at CONTAINER_LIB_DIR.
    "--IPKernelApp.extra_extensions=jupyter_tfenv",
]
# Keyword arguments jupyter_client itself passes to every provisioner.
_FACTORY_KWARGS = {"kernel_id", "kernel_spec", "parent", "config", "log"}
_sweep_done: set[str] = set()
# Longest unix socket path Linux takes (sun_path is 108 bytes, with the final NUL).
_MAX_SOCKET_PATH = 107
_visible_classes: dict[type[Exception], type[Exception]] = {}
# Containers that could not be removed while their engine was unreachable, by docker_host;
# removed when that engine answers again, so an engine restart leaves no exited kernels behind.
_unremoved: dict[str, set[str]] = {}


def shown_to_clients(error: Exception) -> Exception:
    """``error`` as an instance of its own class that is also a tornado ``HTTPError``.

    jupyter_server answers POST /api/kernels with just "Unhandled error" when starting a kernel
    raises anything but an ``HTTPError`` (``APIHandler.write_error``), so users never learnt why
    their kernel did not start. Keeping the original class keeps the ``except`` clauses of other
    callers (the launcher, the server extension) working.
    """
    if isinstance(error, web.HTTPError):
        return error
    cls = type(error)
    visible = _visible_classes.get(cls)
    if visible is None:
        namespace = {
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
            "__init__": _visible_init,
            "__str__": _visible_str,
        }
        visible = type(cls.__name__, (cls, web.HTTPError), namespace)
        _visible_classes[cls] = visible
    return visible(_start_failure_status(error), str(error))


def _visible_init(self: Any, status: int, message: str) -> None:
    # No positional args: tornado formats the log message with them when it logs the error.
    web.HTTPError.__init__(self, status, message)
    self.tfenv_message = message


def _visible_str(self: Any) -> str:
    return str(self.tfenv_message)


def _start_failure_status(error: Exception) -> int:
    """400: the kernelspec or its image cannot work; 503: the engine cannot serve it now."""
    if isinstance(error, (EngineUnavailableError, GpuUnavailableError)):
        return 503
    if isinstance(error, KernelContainerError) or not isinstance(
        error, (TfenvError, TraitError, ValueError)
    ):
        return 500
    return 400


def engine_refusal(error: docker.errors.DockerException, image: str) -> TfenvError:
    """A Docker SDK error during a kernel start, as the error users see."""
    explanation = getattr(error, "explanation", None) or str(error)
    if isinstance(error, docker.errors.APIError) and error.is_client_error():
        return EngineRefusedError(
            f"The Docker engine refused the kernel container for {image!r}: {explanation}. "
            "Fix the kernelspec's settings (e.g. mem_limit, home_volume, gpus) and start again."
        )
    return KernelContainerError(
        f"Could not start the kernel container for {image!r}: {explanation}"
    )


def _docker_size(value: str, name: str, example: str) -> str:
    """Validate a Docker byte size ("512m", "8g"); return it unchanged."""
    if not value:
        return value
    try:
        if parse_bytes(value) <= 0:
            raise ValueError
    except (ValueError, docker.errors.DockerException) as error:
        raise TraitError(
            f"Invalid {name} {value!r}: write a positive size with a unit, for example "
            f"{example!r} (units b, k, m, g)."
        ) from error
    return value


class DockerProvisioner(KernelProvisionerBase):  # type: ignore[misc]
    """Starts the kernel in a Docker container from the kernelspec's TensorFlow image."""

    image = Unicode(
        "",
        config=True,
        help="""The Docker image the kernel runs in, e.g.
        "tensorflow/tensorflow:2.21.0-jupyter". Usually set per kernelspec by
        `jupyter tfenv install --image IMAGE`. The image needs Python 3 and ipykernel;
        `jupyter tfenv prepare IMAGE` adds ipykernel to one that lacks it.""",
    )

    gpus = Union(
        [Unicode(), Int(), List(Unicode())],
        default_value="none",
        config=True,
        help=f"""GPUs for the kernel, requested through Docker device requests like
        `docker run --gpus`. {GPU_SPEC_HELP} Default "none". A GPU kernel needs the NVIDIA
        container toolkit on the engine.""",
    )

    network = Enum(
        list(NETWORK_MODES),
        default_value="ipc",
        config=True,
        help="""How the server reaches the kernel, and what network the kernel's code gets.
        "ipc" (default): the kernel's channels are IPC sockets in a private 0700 directory (no TCP
        port at all, so nothing else on the machine can even connect), and the container has
        its own network namespace with outbound access for pip and datasets.
        "loopback": the same namespace, with the kernel's ports published on 127.0.0.1 only,
        host ports chosen by the engine so they never collide (use it when the kernel runs as
        another user than Jupyter, e.g. container_user="image", as IPC sockets then refuse).
        "host": the container shares the host's network and the kernel binds 127.0.0.1.
        "none": no network at all for the kernel's code; IPC sockets as with "ipc".""",
    )

    mem_limit = Unicode(
        "",
        config=True,
        help="""Memory limit of the kernel container, as Docker writes it: "8g", "512m".
        Empty (default): no limit. A kernel killed for memory is reported as such.""",
    )

    cpus = Float(
        0.0,
        config=True,
        help="""CPU limit of the kernel container in CPUs, e.g. 2 or 1.5 (`docker run --cpus`).
        0 (default): no limit.""",
    )

    shm_size = Unicode(
        "1g",
        config=True,
        help="""Size of /dev/shm in the container. TensorFlow and Keras input pipelines with
        several workers need more than Docker's 64 MB default. Default "1g"; "" keeps Docker's.""",
    )

    env_allowlist = List(
        Unicode(),
        default_value=DEFAULT_ENV_ALLOWLIST,
        config=True,
        help=f"""Names of server environment variables copied into the container when set.
        Nothing else of the server's environment passes (it may hold tokens and passwords).
        Default: {", ".join(DEFAULT_ENV_ALLOWLIST)}.""",
    )

    env = Dict(
        value_trait=Unicode(),
        config=True,
        help="""Extra environment variables for the container, e.g. {"TF_CPP_MIN_LOG_LEVEL": "2"}.
        The kernelspec's own "env" is passed as well.""",
    )

    kernel_command = List(
        Unicode(),
        default_value=DEFAULT_KERNEL_COMMAND,
        config=True,
        help="""The command that starts the kernel inside the container; "{connection_file}"
        is replaced by the container path of the connection file.""",
    )

    mount_notebook_dir = Bool(
        True,
        config=True,
        help="""Mount the notebook's directory into the container at the same path and start the
        kernel there, so files the notebook writes appear on the host.""",
    )

    home_volume = Unicode(
        "tfenv-home-{uid}-{kernelspec}",
        config=True,
        help="""Named Docker volume mounted as the kernel's HOME (/tfenv-home), so pip and Keras
        caches survive restarts. "{kernelspec}" is replaced by the kernelspec name and "{uid}"
        by the Jupyter user's uid, so users sharing an engine do not share a HOME. Empty: HOME
        is a private tmpfs, emptied when the kernel stops.""",
    )

    container_user = Unicode(
        "",
        config=True,
        help="""User the kernel runs as. Empty (default): the user who runs Jupyter (uid:gid), so
        files written from the notebook are owned by them. "image": the image's own user.
        Otherwise "uid:gid".""",
    )

    docker_host = Unicode(
        config=True,
        help="""Docker engine to use, e.g. "unix:///var/run/docker.sock", "ssh://user@host" or
        "tcp://host:2376". Default: the TFENV_DOCKER_HOST environment variable, else Docker's own
        choice (DOCKER_HOST or the local socket).""",
    )

    owner_label = Unicode(
        config=True,
        help="""Value of the org.jupyter-tfenv.owner label on containers and volumes this server
        creates, to tell several servers or test runs apart on one engine. Default: the
        TFENV_OWNER_LABEL environment variable, else "default".""",
    )

    use_image_entrypoint = Bool(
        False,
        config=True,
        help="""Run the kernel through the image's ENTRYPOINT. Off by default: the kernel runs
        directly under docker-init so interrupts reach it; an entrypoint must `exec` its
        arguments, or interrupt and shutdown cannot reach the kernel.""",
    )

    auto_prepare = Bool(
        False,
        config=True,
        help="""When the image has Python but no ipykernel (the official non-jupyter tags), build
        a thin kernel-ready image from it (`jupyter tfenv prepare`, needs the package index) and
        start the kernel there. Off by default: the start then fails at once with the command
        that prepares the image.""",
    )

    stop_timeout = Float(
        5.0,
        config=True,
        help="Seconds a kernel gets to exit after a shutdown request before it is killed.",
    )

    @default("docker_host")
    def _docker_host_default(self) -> str:
        return engine.docker_host_from_env()

    @default("owner_label")
    def _owner_label_default(self) -> str:
        return engine.owner_from_env()

    @validate("gpus")
    def _validate_gpus(self, proposal: Any) -> Any:
        try:
            parse_gpus(proposal["value"])
        except ValueError as error:
            raise TraitError(str(error)) from error
        return proposal["value"]

    @validate("mem_limit")
    def _validate_mem_limit(self, proposal: Any) -> str:
        value = _docker_size(proposal["value"], "mem_limit", "8g")
        if value and parse_bytes(value) < 6 * 1024 * 1024:
            raise TraitError(
                f"Invalid mem_limit {value!r}: Docker's smallest memory limit is 6m; a "
                "TensorFlow kernel wants a few gigabytes, e.g. '8g'."
            )
        return value

    @validate("shm_size")
    def _validate_shm_size(self, proposal: Any) -> str:
        return _docker_size(proposal["value"], "shm_size", "2g")

    @validate("cpus")
    def _validate_cpus(self, proposal: Any) -> float:
        value = float(proposal["value"])
        available = os.cpu_count() or 1
        if value < 0:
            raise TraitError(f"Invalid cpus {value!r}: use a positive number such as 2, or 0.")
        if value > available and not self.docker_host:
            raise TraitError(
                f"Invalid cpus {value!r}: this machine has {available} CPUs. Use at most "
                f"{available}, or 0 for no limit."
            )
        return value

    @validate("container_user")
    def _validate_container_user(self, proposal: Any) -> str:
        value = str(proposal["value"]).strip()
        if value in ("", "image"):
            return value
        parts = value.split(":")
        if len(parts) > 2 or not all(part.isdigit() for part in parts):
            raise TraitError(
                f'Invalid container_user {value!r}: use "" (the Jupyter user), "image", or '
                'numeric "uid:gid" such as "1000:1000".'
            )
        return value

    @validate("kernel_command")
    def _validate_kernel_command(self, proposal: Any) -> list[str]:
        value = list(proposal["value"])
        if not value or not any("{connection_file}" in part for part in value):
            raise TraitError(
                f"Invalid kernel_command {value!r}: it must name the connection file, e.g. "
                f"{DEFAULT_KERNEL_COMMAND!r}."
            )
        return value

    @validate("stop_timeout")
    def _validate_stop_timeout(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if value < 0:
            raise TraitError(f"Invalid stop_timeout {value!r}: use 0 or more seconds, e.g. 5.")
        return value

    @validate("image")
    def _validate_image(self, proposal: Any) -> str:
        return validate_image_name(proposal["value"])

    def __init__(self, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - _FACTORY_KWARGS - set(self.class_trait_names(config=True)))
        if unknown:
            raise shown_to_clients(ValueError(unknown_settings_message(unknown, type(self))))
        try:
            super().__init__(**kwargs)
        except TraitError as error:
            spec = kwargs.get("kernel_spec")
            where = getattr(spec, "resource_dir", "") or "the kernelspec"
            raise shown_to_clients(
                TraitError(
                    f"{error} Fix metadata.kernel_provisioner.config in {where}/kernel.json "
                    "(`jupyter tfenv install` writes valid settings)."
                )
            ) from error
        self.container_id: str | None = None
        self.exit_code: int | None = None
        # Why the last container ended, for the server extension and the kernel model's reason.
        self.last_exit: dict[str, Any] | None = None
        self._run_dir: Path | None = None
        self._host_ports: dict[str, int] = {}
        self._ports_from_cache = False
        self._container_connection: dict[str, Any] = {}
        self._started_at = 0.0
        # Set while the engine does not answer polls, so a death found later names the engine.
        self._engine_unreachable = False

    # -- jupyter_client's provisioner interface -------------------------------------------

    @property
    def has_process(self) -> bool:
        """True while this kernel has a container; jupyter_client asserts it after launch."""
        return self.container_id is not None

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        """Choose the transport and ports, and write the kernel's private connection file."""
        if not self.image:
            raise shown_to_clients(
                KernelContainerError(
                    f"Kernelspec {self._kernelspec_name()!r} names no image. Reinstall it with "
                    "`jupyter tfenv install --image IMAGE`."
                )
            )
        km = self.parent
        if km is None:
            raise KernelContainerError("DockerProvisioner needs a KernelManager as its parent.")
        try:
            check_engine_is_local(self.docker_host or os.environ.get("DOCKER_HOST", ""))
        except KernelContainerError as error:
            raise shown_to_clients(error) from error
        run_dir = self._make_run_dir()
        if self.network in IPC_MODES:
            km.transport = "ipc"
            km.ip = str(run_dir / "ipc")
            km.write_connection_file()
            info = km.get_connection_info()
            container_info = dict(info, ip=f"{CONTAINER_CONNECTION_FILE.rsplit('/', 1)[0]}/ipc")
        elif self.network == "host":
            km.transport = "tcp"
            km.ip = "127.0.0.1"
            if not self._ports_from_cache:
                cache = LocalPortCache.instance()
                for name in PORT_NAMES:
                    setattr(km, name, cache.find_available_port(km.ip))
                self._ports_from_cache = True
            km.write_connection_file()
            info = km.get_connection_info()
            container_info = dict(info)
        else:
            km.transport = "tcp"
            km.ip = "127.0.0.1"
            info = km.get_connection_info()
            container_info = dict(info, ip="0.0.0.0", **CONTAINER_PORTS)
        container_info["key"] = info["key"].decode() if isinstance(info["key"], bytes) else ""
        self._container_connection = container_info
        self.connection_info = info

        kwargs = await super().pre_launch(**kwargs)
        kwargs["cmd"] = self.container_command()
        return kwargs

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        """Create and start the kernel's container; return the host-side connection info."""
        if self.container_id is not None:
            # A restart whose cleanup was skipped must still leave exactly one container.
            await self._remove_container()
        try:
            client = await engine.get_client_async(self.docker_host)
            await self._sweep_orphans_once(client)
            await self._remove_leftovers(client)
            await engine.run_blocking(self._create_and_start, client, cmd, kwargs)
        except BaseException as error:
            # jupyter_client calls no cleanup after a failed launch: leave nothing behind.
            self._remove_run_dir()
            if isinstance(error, requests.exceptions.ConnectionError):
                # The engine went away after its client was made (and pinged): say so.
                raise shown_to_clients(engine.unavailable_error(self.docker_host, error)) from error
            if isinstance(error, TfenvError):
                raise shown_to_clients(error) from error
            if isinstance(error, docker.errors.DockerException):
                raise shown_to_clients(engine_refusal(error, self.image)) from error
            raise
        info: dict[str, Any] = dict(self.connection_info)
        if self.network == "loopback":
            info.update(self._host_ports)
        self.connection_info = cast(KernelConnectionInfo, info)
        return self.connection_info

    async def post_launch(self, **kwargs: Any) -> None:
        """Log how long the start took, once jupyter_client has connected its sockets."""
        await super().post_launch(**kwargs)
        self.log.info(
            "Kernel %s: container %s from %s started in %.2fs (network %s, GPUs %s)",
            self.kernel_id,
            (self.container_id or "")[:12],
            self.image,
            time.monotonic() - self._started_at,
            self.network,
            self.gpu_request.describe(),
        )

    async def poll(self) -> int | None:
        """None while the container runs; its exit code once it has ended (and been removed)."""
        if self.container_id is None:
            return self.exit_code if self.exit_code is not None else 0
        try:
            client = await engine.get_client_async(self.docker_host)
            attrs = await engine.run_blocking(client.api.inspect_container, self.container_id)
        except docker.errors.NotFound:
            self._record_exit({"State": {"ExitCode": -1}}, "", removed=True)
            return self.exit_code
        except (docker.errors.DockerException, EngineUnavailableError, OSError) as error:
            # The engine may be restarting; the kernel's fate is unknown, so report it alive.
            if not self._engine_unreachable:
                self.log.warning(
                    "Kernel %s: cannot reach the Docker engine: %s", self.kernel_id, error
                )
            self._engine_unreachable = True
            return None
        await self._remove_leftovers(client)
        if attrs["State"].get("Running") or attrs["State"].get("Status") == "created":
            if self._engine_unreachable:
                self.log.info("Kernel %s: the Docker engine answers again", self.kernel_id)
                self._engine_unreachable = False
            return None
        await self._handle_exit(client, attrs)
        return self.exit_code

    async def wait(self) -> int | None:
        """Wait until the container has ended."""
        while True:
            code = await self.poll()
            if code is not None:
                return code
            await asyncio.sleep(0.1)

    async def send_signal(self, signum: int) -> None:
        """Send ``signum`` to the kernel; SIGINT interrupts the running cell."""
        if self.container_id is None:
            return
        if signum == 0:
            await self.poll()
            return
        await self._kill_with(signum)

    async def kill(self, restart: bool = False) -> None:
        """Kill the kernel at once (SIGKILL); cleanup removes the container."""
        await self._kill_with(signal.SIGKILL)

    async def terminate(self, restart: bool = False) -> None:
        """Ask the kernel to stop (SIGTERM)."""
        await self._kill_with(signal.SIGTERM)

    async def cleanup(self, restart: bool = False) -> None:
        """Remove the container on every path; keep the run dir and ports only for a restart."""
        await self._remove_container()
        if restart:
            return
        if self._ports_from_cache:
            cache = LocalPortCache.instance()
            for name in PORT_NAMES:
                port = self.connection_info.get(name)
                if isinstance(port, int):
                    cache.return_port(port)
            self._ports_from_cache = False
        self._remove_run_dir()

    def get_shutdown_wait_time(self, recommended: float = 5.0) -> float:
        """Give a graceful shutdown ``stop_timeout`` seconds before it turns forced."""
        return max(self.stop_timeout, recommended)

    async def get_provisioner_info(self) -> dict[str, Any]:
        """Saved by jupyter_server with the kernel so a restarted server can find its container."""
        info: dict[str, Any] = await super().get_provisioner_info()
        info.update({"container_id": self.container_id, "image": self.image, "gpus": self.gpus})
        return info

    async def load_provisioner_info(self, provisioner_info: dict[str, Any]) -> None:
        """Restore what :meth:`get_provisioner_info` saved."""
        await super().load_provisioner_info(provisioner_info)
        self.container_id = provisioner_info.get("container_id")
        self.image = provisioner_info.get("image", self.image)
        self.gpus = provisioner_info.get("gpus", self.gpus)

    # -- switching --------------------------------------------------------------------------

    def switch_to(self, image: str | None = None, gpus: Any = None) -> None:
        """Use another image and/or GPU setting from the next (re)start of this kernel on.

        The provisioner lives as long as the kernel, so the choice sticks across restarts.
        Values are validated here, so a bad choice fails before the running kernel is touched.
        """
        if image is not None:
            self.image = image
        if gpus is not None:
            self.gpus = gpus

    # -- helpers ------------------------------------------------------------------------------

    @property
    def gpu_request(self) -> GpuRequest:
        return parse_gpus(self.gpus)

    def _kernelspec_name(self) -> str:
        resource_dir = str(getattr(self.kernel_spec, "resource_dir", None) or "")
        if resource_dir:
            return os.path.basename(resource_dir)
        kernel_name = getattr(self.parent, "kernel_name", None)
        return str(kernel_name or "tfenv")

    def _make_run_dir(self) -> Path:
        if self._run_dir is None:
            base = Path(jupyter_runtime_dir())
            base.mkdir(parents=True, exist_ok=True)
            run_dir = base / f"tfenv-{self.kernel_id}"
            if self.network in IPC_MODES and len(str(run_dir / "ipc-99")) > _MAX_SOCKET_PATH:
                # IPC sockets live in the run dir, and a socket path longer than the kernel's
                # limit fails with "File name too long" only after the container started.
                run_dir = Path(tempfile.mkdtemp(prefix="tfenv-"))
            run_dir.mkdir(mode=0o700, exist_ok=True)
            self._run_dir = run_dir
        return self._run_dir

    def container_command(self) -> list[str]:
        """The kernel command with the container path of its connection file filled in."""
        return [
            part.replace("{connection_file}", CONTAINER_CONNECTION_FILE)
            for part in self.kernel_command
        ]

    def _remove_run_dir(self) -> None:
        if self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
            self._run_dir = None

    def write_container_connection_file(self) -> None:
        """Write the container's view of the connection data, readable by its user only."""
        assert self._run_dir is not None
        path = self._run_dir / "connection.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(self._container_connection, handle)

    def _hand_run_dir_to(self, user: str | None) -> None:
        """Let a kernel that runs as another uid than Jupyter read its connection file.

        The run dir and the file are private to their owner (the file holds the key); a kernel
        started with ``container_user`` "1000:1000" by a root Jupyter could not open it.
        """
        uid_text, _, gid_text = (user or "").partition(":")
        if self._run_dir is None or not uid_text.isdigit() or int(uid_text) == os.getuid():
            return
        if os.geteuid() != 0:
            raise KernelContainerError(
                f"container_user {user!r} is not the user who runs Jupyter (uid {os.getuid()}), "
                "so the kernel could not read its private connection file. Leave container_user "
                "empty (the kernel then runs as you), or run Jupyter as root."
            )
        gid = int(gid_text) if gid_text.isdigit() else -1
        for path in (self._run_dir, self._run_dir / "connection.json"):
            os.chown(path, int(uid_text), gid)

    def container_env(self, launch_env: dict[str, str]) -> dict[str, str]:
        """The container's environment: allowlisted server vars, kernelspec env, our own.

        ``launch_env`` is what jupyter_client would give a local kernel: the server's whole
        environment. Only the allowlist is taken from it.
        """
        env = {name: launch_env[name] for name in self.env_allowlist if name in launch_env}
        spec_env = getattr(self.kernel_spec, "env", None) or {}
        for name, value in spec_env.items():
            env[name] = string.Template(str(value)).safe_substitute(launch_env)
        if "JPY_SESSION_NAME" in launch_env:
            env["JPY_SESSION_NAME"] = launch_env["JPY_SESSION_NAME"]
        env.update(self.env)
        env.update(
            {
                "TFENV_IMAGE": self.image,
                "TFENV_GPUS": self.gpu_request.describe(),
                "TFENV_KERNEL_ID": self.kernel_id or "",
                # Keep CUDA's compiled-kernel cache on the persistent HOME volume.
                "CUDA_CACHE_PATH": f"{CONTAINER_HOME}/.nv/ComputeCache",
                "CUDA_CACHE_MAXSIZE": "4294967296",
            }
        )
        return env

    def container_plan(self, cmd: list[str], launch_kwargs: dict[str, Any]) -> ContainerPlan:
        """Everything that decides the container's create arguments (see container.py)."""
        assert self._run_dir is not None
        kernelspec = self._kernelspec_name()
        user = host_user() if not self.container_user else self.container_user
        if user == "image":
            user = ""
        notebook_dir = self._notebook_dir(launch_kwargs.get("cwd"))
        # The Jupyter runtime dir holds every kernel's connection file: keep it out of view when
        # the notebook's folder contains it (a notebook in the home folder, say).
        hidden_dirs = [
            path
            for path in (os.path.realpath(jupyter_runtime_dir()),)
            if notebook_dir and is_within(path, notebook_dir)
        ]
        labels = engine.owner_labels(self.owner_label)
        nano_cpus = int(self.cpus * 1e9) if self.cpus else 0
        return ContainerPlan(
            image=self.image,
            command=cmd,
            kernel_id=self.kernel_id or "",
            kernelspec=kernelspec,
            labels=labels,
            run_dir=str(self._run_dir),
            network=self.network,
            host_ports=self._host_ports or None,
            env=self.container_env(launch_kwargs.get("env") or dict(os.environ)),
            notebook_dir=notebook_dir,
            home_volume=self.home_volume.replace("{kernelspec}", kernelspec).replace(
                "{uid}", str(os.getuid())
            ),
            hidden_dirs=hidden_dirs,
            user=user or None,
            device_requests=self.gpu_request.device_requests(),
            gpus_label=self.gpu_request.describe(),
            mem_limit=self.mem_limit,
            nano_cpus=nano_cpus,
            shm_size=self.shm_size,
            use_image_entrypoint=self.use_image_entrypoint,
        )

    def _notebook_dir(self, cwd: str | None) -> str | None:
        """The folder to mount and start in: the notebook's, never outside the server's root.

        jupyter_server builds ``cwd`` from the notebook path without resolving "..", so a
        client could name any host folder; system folders are never mounted at all.
        """
        if not self.mount_notebook_dir:
            return None
        root = getattr(getattr(self.parent, "parent", None), "root_dir", None)
        candidate = cwd or root
        if not candidate:
            return None
        path = os.path.realpath(candidate)
        if root:
            root_path = os.path.realpath(root)
            if not is_within(path, root_path):
                self.log.warning(
                    "Kernel %s: %s is outside the server's root %s; using the root",
                    self.kernel_id,
                    path,
                    root_path,
                )
                path = root_path
        check_mountable(path)
        return path

    def _create_and_start(
        self, client: docker.DockerClient, cmd: list[str], launch_kwargs: dict[str, Any]
    ) -> Container:
        """Blocking: check the image, create and start the container, read its ports."""
        self._started_at = time.monotonic()
        facts = probe_image(client, self.image, python=cmd[0], owner=self.owner_label)
        run_image = self.image
        if not facts.kernel_ready and facts.python and self.auto_prepare:
            run_image = self._auto_prepare(client)
            facts = probe_image(client, run_image, python=cmd[0], owner=self.owner_label)
        require_kernel_ready(facts, self.image)
        self.write_container_connection_file()
        plan = self.container_plan(cmd, launch_kwargs)
        self._hand_run_dir_to(plan.user)
        plan.image = run_image
        plan.image_pythonpath = facts.pythonpath
        if plan.home_volume:
            self._ensure_home_volume(client, plan)
        create_kwargs = build_create_kwargs(plan)
        try:
            container = self._start(client, create_kwargs)
        except docker.errors.APIError as error:
            if plan.host_ports and "already allocated" in str(error):
                # The old host ports were taken meanwhile: let the engine pick new ones.
                self.log.warning("Kernel %s: previous ports taken, using new ones", self.kernel_id)
                plan.host_ports = None
                container = self._start(client, build_create_kwargs(plan))
            else:
                raise
        self.container_id = container.id
        self.exit_code = None
        if self.network == "loopback":
            container.reload()
            self._host_ports = published_ports(container.attrs)
            if len(self._host_ports) != len(PORT_NAMES):
                self._fail_start(container)
        if self.gpu_request.wants_gpu:
            self._warn_shared_gpus(client, container.id)
        return container

    def _warn_shared_gpus(self, client: docker.DockerClient, container_id: str) -> None:
        """Warn when another kernel on this engine was given the same GPUs (case B12).

        Docker serves `--gpus N` with the first N GPUs, so every one-GPU kernel gets GPU 0
        unless devices are named; the kernels then share it without anyone noticing.
        """
        mine = visible_gpu_ids(self.gpu_request.describe())
        filters = {"label": [f"{engine.LABEL_MANAGED}=true", f"{engine.LABEL_ROLE}=kernel"]}
        shared: list[str] = []
        for summary in client.api.containers(filters=filters):
            labels = summary.get("Labels") or {}
            if summary["Id"] == container_id:
                continue
            theirs = visible_gpu_ids(labels.get(engine.LABEL_GPUS, "none"))
            if mine is None or theirs is None or mine & theirs:
                shared.append(labels.get(engine.LABEL_KERNEL_ID, summary["Id"][:12]))
        if shared:
            self.log.warning(
                "Kernel %s (gpus=%s) shares GPUs with running kernel(s) %s: Docker gives every "
                '"gpus: N" kernel the first N GPUs. To use other GPUs, name them, e.g. '
                'gpus="device=1" (indexes or UUIDs as `nvidia-smi -L` prints them).',
                self.kernel_id,
                self.gpu_request.describe(),
                ", ".join(sorted(shared)),
            )

    def _auto_prepare(self, client: docker.DockerClient) -> str:
        from .images import TfenvImages

        self.log.info("Kernel %s: preparing %s (adding ipykernel)", self.kernel_id, self.image)
        # The same c.TfenvImages settings as `jupyter tfenv prepare` and the REST API.
        settings = TfenvImages(config=self.config, owner_label=self.owner_label)
        return settings.prepare(client, self.image).image

    def _fail_start(self, container: Container) -> None:
        """The container ended (or lost its ports) right after start: say why, remove it."""
        container.reload()
        log_tail = container.logs(tail=20).decode(errors="replace")
        engine.remove_container(container)
        self.container_id = None
        if container.status in ("exited", "dead"):
            raise KernelContainerError(
                f"The kernel stopped right after starting in {self.image!r}. "
                + describe_exit(container.attrs, log_tail)
            )
        raise KernelContainerError(
            f"The engine published no loopback ports for kernel {self.kernel_id}: "
            f"{container.attrs.get('NetworkSettings', {}).get('Ports')}"
        )

    def _start(self, client: docker.DockerClient, create_kwargs: dict[str, Any]) -> Container:
        try:
            container = client.containers.create(**create_kwargs)
        except docker.errors.ImageNotFound as error:
            raise KernelContainerError(f"Image {self.image!r} disappeared: {error}") from error
        try:
            container.start()
        except docker.errors.APIError as error:
            engine.remove_container(container)
            message = str(error)
            if is_gpu_driver_error(message):
                raise GpuUnavailableError(
                    f"GPUs were requested (gpus={self.gpus!r}) but this Docker engine cannot "
                    "serve them: no NVIDIA device driver is registered. Install the NVIDIA "
                    "container toolkit on the engine's host and restart dockerd "
                    "(https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/), or "
                    "pick the CPU kernel of this image."
                ) from error
            if "already allocated" in message:
                raise
            raise KernelContainerError(
                f"Could not start the kernel container from {self.image!r}: "
                f"{getattr(error, 'explanation', None) or message}"
            ) from error
        return container

    def _ensure_home_volume(self, client: docker.DockerClient, plan: ContainerPlan) -> None:
        try:
            client.volumes.get(plan.home_volume)
            return
        except docker.errors.NotFound:
            pass
        labels = engine.owner_labels(self.owner_label)
        labels[engine.LABEL_ROLE] = "home"
        client.volumes.create(plan.home_volume, labels=labels)
        if plan.user and not plan.user.startswith("0"):
            # A new volume belongs to root; hand it to the kernel's user once.
            client.containers.run(
                plan.image,
                ["chown", plan.user, CONTAINER_HOME],
                entrypoint=[],
                remove=True,
                volumes={plan.home_volume: {"bind": CONTAINER_HOME, "mode": "rw"}},
                network_disabled=True,
                labels=labels,
                user="0:0",
            )

    async def _kill_with(self, signum: int) -> None:
        if self.container_id is None:
            return
        client = await engine.get_client_async(self.docker_host)
        try:
            await engine.run_blocking(
                client.api.kill, self.container_id, signal=signal.Signals(signum).name
            )
        except docker.errors.NotFound:
            self.log.debug("Kernel %s: container already gone", self.kernel_id)
        except docker.errors.APIError as error:
            # 409: the container is not running any more; poll will notice.
            self.log.debug("Kernel %s: signal %s not delivered: %s", self.kernel_id, signum, error)
        except (requests.exceptions.ConnectionError, EngineUnavailableError) as error:
            self.log.warning(
                "Kernel %s: signal %s not delivered, the Docker engine does not answer: %s",
                self.kernel_id,
                signum,
                error,
            )

    async def _handle_exit(self, client: docker.DockerClient, attrs: dict[str, Any]) -> None:
        try:
            raw = await engine.run_blocking(
                client.api.logs, self.container_id, stdout=True, stderr=True, tail=20
            )
            log_tail = raw.decode(errors="replace")
        except docker.errors.DockerException:
            log_tail = ""
        self._record_exit(attrs, log_tail, removed=False)
        await self._remove_container()

    def _record_exit(self, attrs: dict[str, Any], log_tail: str, removed: bool) -> None:
        state = attrs.get("State", {})
        self.exit_code = int(state.get("ExitCode", -1))
        reason = (
            "The kernel's container was removed from outside (e.g. `docker rm -f`)."
            if removed
            else describe_exit(attrs, log_tail)
        )
        if self._engine_unreachable:
            # Stopping the engine stops its containers: the exit code alone would not say so.
            reason = (
                "The Docker engine stopped answering while the kernel ran (it was stopped or "
                "restarted, which stops its containers). " + reason
            )
            self._engine_unreachable = False
        self.last_exit = {
            "exit_code": self.exit_code,
            "oom_killed": bool(state.get("OOMKilled")),
            "log_tail": log_tail.strip().splitlines()[-20:],
            "reason": reason,
        }
        expected = getattr(self.parent, "shutting_down", False)
        if not expected:
            self.log.warning("Kernel %s died. %s", self.kernel_id, reason)
            if self.parent is not None and hasattr(self.parent, "reason"):
                self.parent.reason = reason
        if removed:
            self.container_id = None

    async def _remove_container(self) -> None:
        container_id = self.container_id
        if container_id is None:
            return
        self.container_id = None
        try:
            client = await engine.get_client_async(self.docker_host)
            await engine.run_blocking(client.api.remove_container, container_id, force=True)
            self.log.debug("Kernel %s: removed container %s", self.kernel_id, container_id[:12])
        except (requests.exceptions.ConnectionError, EngineUnavailableError):
            self.log.warning(
                "Kernel %s: the Docker engine does not answer; container %s will be removed "
                "when it answers again",
                self.kernel_id,
                container_id[:12],
            )
            _unremoved.setdefault(self.docker_host, set()).add(container_id)
        except docker.errors.NotFound:
            self.log.debug("Kernel %s: container %s already gone", self.kernel_id, container_id)
        except docker.errors.APIError as error:
            if error.status_code != 409:
                self.log.warning(
                    "Kernel %s: could not remove container %s: %s",
                    self.kernel_id,
                    container_id[:12],
                    error,
                )

    async def _remove_leftovers(self, client: docker.DockerClient) -> None:
        """Remove the containers left while this engine did not answer (see ``_unremoved``)."""
        leftovers = _unremoved.pop(self.docker_host, set())
        for container_id in leftovers:
            try:
                await engine.run_blocking(engine.remove_container_id, client, container_id)
                self.log.info("Removed container %s left while the engine was down", container_id)
            except (docker.errors.DockerException, OSError):
                _unremoved.setdefault(self.docker_host, set()).add(container_id)

    async def _sweep_orphans_once(self, client: docker.DockerClient) -> None:
        key = f"{self.docker_host}|{self.owner_label}"
        if key in _sweep_done:
            return
        _sweep_done.add(key)
        engine.start_owner_watchdog(self.docker_host)
        try:
            await engine.run_blocking(engine.sweep_orphans, client)
        except docker.errors.DockerException as error:
            self.log.warning("Could not sweep containers of stopped servers: %s", error)


def visible_gpu_ids(spec: str) -> frozenset[str] | None:
    """The GPUs a kernel with GPU spec ``spec`` sees: None for all, else indexes or UUIDs.

    Docker's NVIDIA driver serves a count N with indexes 0..N-1 (moby daemon/nvidia_linux.go).
    """
    try:
        request = parse_gpus(spec)
    except ValueError:
        return frozenset()
    if request.count == -1:
        return None
    if request.device_ids:
        return frozenset(request.device_ids)
    return frozenset(str(index) for index in range(request.count))


SYSTEM_DIRS = (
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/proc",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
    "/var",
    "/var/lib",
    "/var/run",
)
# Below these, every folder is the system's or the engine's, never a user's notebook folder.
SYSTEM_TREES = ("/boot", "/dev", "/etc", "/proc", "/run", "/sys", "/var/lib/docker", "/var/run")
DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")


def is_within(path: str, folder: str) -> bool:
    """True when ``path`` is ``folder`` or below it (both already resolved)."""
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def check_mountable(path: str) -> None:
    """Refuse to mount a system folder, or any folder that holds the Docker socket."""
    sockets = [*DOCKER_SOCKETS]
    docker_host = os.environ.get("DOCKER_HOST", "")
    if docker_host.startswith("unix://"):
        sockets.append(docker_host[len("unix://") :])
    holds_socket = any(is_within(os.path.realpath(sock), path) for sock in sockets)
    if path in SYSTEM_DIRS or any(is_within(path, tree) for tree in SYSTEM_TREES) or holds_socket:
        raise UnsafeMountError(
            f"Refusing to mount {path!r} into the kernel container: it is a system folder or "
            "holds the Docker socket. Open the notebook from a project folder, or set "
            "mount_notebook_dir = False."
        )


def check_engine_is_local(docker_host: str) -> None:
    """Refuse a remote engine at once: its kernel ports would not be on this machine's loopback.

    TODO(remote engines; no issue yet, #3 only asks to keep the design open): reach kernels
    on a remote engine (an SSH tunnel per kernel, or ports published on the remote host's
    address with CurveZMQ) and on Docker Swarm.
    """
    if not docker_host or docker_host.startswith(("unix://", "npipe://", "fd://")):
        return
    host = docker_host.split("://", 1)[-1].rsplit("@", 1)[-1].split("/")[0]
    hostname = host.rsplit(":", 1)[0].strip("[]")
    if hostname in ("127.0.0.1", "localhost", "::1"):
        return
    raise KernelContainerError(
        f"The Docker engine {docker_host!r} is on another machine; jupyter-tfenv publishes kernel "
        "ports on this machine's loopback only, so the server could not reach the kernel. Run "
        "Jupyter on that machine, or use a local engine (unset DOCKER_HOST / docker_host)."
    )


def validate_image_name(value: str) -> str:
    """Reject names Docker would refuse, or that look like options or shell, naming the fix."""
    from .imagename import check_image_reference

    try:
        check_image_reference(value, allow_empty=True)
    except ValueError as error:
        raise TraitError(str(error)) from error
    return value


def unknown_settings_message(unknown: list[str], cls: type[DockerProvisioner]) -> str:
    """The error for misspelt provisioner settings, with the closest valid names."""
    valid = sorted(cls.class_trait_names(config=True))
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, valid, n=1)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return (
        f"Unknown tfenv-docker-provisioner setting(s) {', '.join(hints)} in the kernelspec's "
        f"metadata.kernel_provisioner.config. Valid settings: {', '.join(valid)}."
    )
