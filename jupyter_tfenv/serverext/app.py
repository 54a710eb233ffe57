"""The jupyter_server extension application of jupyter-tfenv.

Enabled by the config file the package installs (etc/jupyter/jupyter_server_config.d/
jupyter_tfenv.json). It offers every local TensorFlow image as a kernel through
:class:`~jupyter_tfenv.serverext.kernelspecs.TfenvKernelSpecManager`, and serves the REST API
under ``{base_url}tfenv/api/`` (docs/rest-api.md).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Float, TraitError, validate

from .._version import __version__
from ..images import TfenvImages
from ..provisioner import DockerProvisioner
from .catalog import ImageCatalog
from .handlers import handler_routes
from .kernelspecs import TfenvKernelSpecManager
from .service import TfenvService

_SPEC_DIR_PREFIX = "tfenv-kernelspecs-"


class TfenvExtensionApp(ExtensionApp):  # type: ignore[misc]
    """TensorFlow Docker images as Jupyter kernels, with pull, prepare and switch."""

    name = "jupyter_tfenv"
    version = __version__
    description = __doc__
    load_other_extensions = True
    # Listed so `--help-all` documents their settings too.
    classes = [TfenvImages, TfenvKernelSpecManager]

    refresh_interval = Float(
        30.0,
        config=True,
        help="""Seconds after which the list of local images is read again when kernelspecs or
        images are asked for. Image events of the engine (pull, tag, build, delete) refresh it at
        once anyway; this catches what events miss. Default 30.""",
    )

    auto_prepare = Bool(
        False,
        config=True,
        help="""Starting a kernel of an image without ipykernel builds the kernel-ready image
        first (as `jupyter tfenv prepare` does) instead of failing with the advice to prepare it.
        The first start then takes as long as a pip install of ipykernel. Default False.""",
    )

    @validate("refresh_interval")
    def _validate_refresh_interval(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if value < 1:
            raise TraitError(
                f"TfenvExtensionApp.refresh_interval {value!r} is too short: use 1 second or "
                "more (image events refresh the list at once anyway)."
            )
        return value

    def _link_jupyter_server_extension(self, serverapp: Any) -> None:
        """Install our kernelspec manager, unless the user configured another one.

        Linking happens before the server creates its kernelspec manager, and a
        jupyter_server_config.d file can only enable extensions, not set server options.
        """
        super()._link_jupyter_server_extension(serverapp)
        configured = "kernel_spec_manager_class" in serverapp.config.get("ServerApp", {})
        # A gateway server runs kernels elsewhere and brings its own kernelspec manager; its
        # settings are read later, so look at what configures it.
        gateway = serverapp.config.get("GatewayClient", {}).get("url") or os.environ.get(
            "JUPYTER_GATEWAY_URL"
        )
        if not configured and not gateway:
            serverapp.kernel_spec_manager_class = TfenvKernelSpecManager

    def initialize_settings(self) -> None:
        """Create the image catalog, hook it into the kernelspec manager, create the service."""
        serverapp = self.serverapp
        assert serverapp is not None, "initialize_settings runs after linking to the server"
        self.images = TfenvImages(parent=self)
        ksm = serverapp.kernel_spec_manager
        spec_dir: Path | None = None
        taken = _no_names
        if isinstance(ksm, TfenvKernelSpecManager) and ksm.dynamic_kernelspecs:
            spec_dir = _make_spec_dir(serverapp.runtime_dir)
            taken = ksm.installed_kernel_names
        elif not isinstance(ksm, TfenvKernelSpecManager):
            self.log.info(
                "jupyter_tfenv: no kernels for local TensorFlow images, because "
                "ServerApp.kernel_spec_manager_class is %s; set it to "
                "jupyter_tfenv.serverext.kernelspecs.TfenvKernelSpecManager to get them.",
                type(ksm).__name__,
            )
        auto_prepare = self.auto_prepare
        if auto_prepare and "auto_prepare" not in DockerProvisioner.class_trait_names():
            self.log.warning(
                "jupyter_tfenv: auto_prepare needs a DockerProvisioner with an auto_prepare "
                "setting; this version has none, so kernels of images without ipykernel will "
                "ask for `jupyter tfenv prepare` instead."
            )
            auto_prepare = False
        catalog = ImageCatalog(self.images, spec_dir, taken, self.refresh_interval, auto_prepare)
        if spec_dir is not None and isinstance(ksm, TfenvKernelSpecManager):
            ksm.attach_catalog(catalog, str(spec_dir))
        self.service = TfenvService(serverapp, self.images, catalog)
        self.settings["tfenv_service"] = self.service

    def initialize_handlers(self) -> None:
        self.handlers.extend(handler_routes())

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        """Once the event loop runs: watch image events and write the first kernelspecs."""
        self.service.ensure_started()
        # Containers of servers that were killed (and whose watchdog died too) go now. Only
        # this server's owner group: other groups on a shared engine sweep their own.
        self._sweep_task = asyncio.ensure_future(
            sweep_orphans_in_background(self.log, self.images.docker_host, self.images.owner_label)
        )

    async def stop_extension(self) -> None:
        """Cancel running jobs, stop watching the engine, remove the dynamic kernelspecs."""
        sweep = getattr(self, "_sweep_task", None)
        if sweep is not None and not sweep.done():
            sweep.cancel()
            await asyncio.gather(sweep, return_exceptions=True)
        service = getattr(self, "service", None)
        if service is not None:
            await service.stop()


async def sweep_orphans_in_background(log: Any, docker_host: str, owner: str) -> None:
    """Remove kernel containers whose owning server on this host is gone; never fail start."""
    from .. import engine

    try:
        client = await engine.get_client_async(docker_host)
        removed = await engine.run_blocking(engine.sweep_orphans, client, owner)
    except Exception as error:  # an engine that is down must not stop the server
        log.warning("jupyter_tfenv: could not sweep containers of stopped servers: %s", error)
        return
    if removed:
        log.warning("jupyter_tfenv: removed %d container(s) of stopped servers", len(removed))


def _no_names() -> set[str]:
    return set()


def _make_spec_dir(runtime_dir: str) -> Path:
    """A private directory for this server's dynamic kernelspecs (older dead ones removed)."""
    base = Path(runtime_dir)
    base.mkdir(parents=True, exist_ok=True)
    for entry in base.glob(f"{_SPEC_DIR_PREFIX}*"):
        match = re.match(rf"{_SPEC_DIR_PREFIX}(\d+)-", entry.name)
        if match and entry.is_dir() and _pid_gone(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{_SPEC_DIR_PREFIX}{os.getpid()}-", dir=base))


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        # Another user's live process.
        return False
    return False
