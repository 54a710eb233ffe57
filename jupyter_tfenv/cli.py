"""``jupyter tfenv``: kernelspecs and images from a terminal, for people and scripts.

Each subcommand is a small traitlets application, so ``--help-all`` documents every option and
settings can also come from Jupyter config files.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from jupyter_client.kernelspec import NoSuchKernel
from jupyter_core.application import JupyterApp
from traitlets import Bool, Unicode

from ._version import __version__
from .errors import TfenvError


class InstallApp(JupyterApp):  # type: ignore[misc]
    """``jupyter tfenv install --image IMAGE``: write a kernelspec that runs in that image."""

    name = "jupyter-tfenv-install"
    description = "Install a kernelspec whose kernels run in a TensorFlow Docker image."
    examples = """
    jupyter tfenv install --image tensorflow/tensorflow:2.21.0-jupyter
    jupyter tfenv install --image tensorflow/tensorflow:2.21.0-gpu-jupyter --gpus all
    """

    image = Unicode("", config=True, help="Image the kernel runs in (required).")
    gpus = Unicode("none", config=True, help='GPUs: "none", "all", a count, or "device=0,1".')
    kernel_name = Unicode("", config=True, help="Kernelspec name (default: from the image).")
    display_name = Unicode("", config=True, help="Name shown in the launcher (default: derived).")
    network = Unicode(
        "", config=True, help='Network mode: "ipc" (default), "loopback", "host" or "none".'
    )
    mem_limit = Unicode("", config=True, help='Memory limit such as "8g".')
    user = Bool(True, config=True, help="Install for the current user (default).")
    sys_prefix = Bool(False, config=True, help="Install into sys.prefix (e.g. the venv).")
    probe = Bool(True, config=True, help="Ask the engine for the image's TensorFlow version.")

    aliases = {
        "image": "InstallApp.image",
        "gpus": "InstallApp.gpus",
        "name": "InstallApp.kernel_name",
        "display-name": "InstallApp.display_name",
        "network": "InstallApp.network",
        "mem-limit": "InstallApp.mem_limit",
    }
    flags = {
        "sys-prefix": (
            {"InstallApp": {"sys_prefix": True, "user": False}},
            "Install in sys.prefix.",
        ),
        "no-probe": (
            {"InstallApp": {"probe": False}},
            "Do not start a container to read versions.",
        ),
    }

    def start(self) -> None:
        from .kernelspecs import install_kernelspec

        if not self.image:
            self.exit_with("--image is required, e.g. --image tensorflow/tensorflow:2.21.0-jupyter")
        extra: dict[str, Any] = {}
        if self.network:
            extra["network"] = self.network
        if self.mem_limit:
            extra["mem_limit"] = self.mem_limit
        try:
            version = self._probe_version() if self.probe else None
            destination = install_kernelspec(
                self.image,
                gpus=self.gpus,
                name=self.kernel_name or None,
                display_name=self.display_name or None,
                tensorflow_version=version,
                user=self.user,
                prefix=sys.prefix if self.sys_prefix else None,
                extra_config=extra,
            )
        except (TfenvError, ValueError) as error:
            self.exit_with(str(error))
        print(f"Installed kernelspec in {destination}")

    def _probe_version(self) -> str | None:
        from . import engine
        from .kernel_image import probe_image

        try:
            facts = probe_image(engine.get_client(), self.image)
        except TfenvError as error:
            self.log.warning("%s The kernelspec is written anyway.", error)
            return None
        if not facts.kernel_ready:
            self.log.warning(
                "%s has no ipykernel: kernels of this kernelspec will not start until you run "
                "`jupyter tfenv prepare %s` (or use the image's -jupyter tag).",
                self.image,
                self.image,
            )
        return facts.tensorflow

    def exit_with(self, message: str) -> None:
        print(f"jupyter-tfenv: {message}", file=sys.stderr)
        self.exit(2)


class ListApp(JupyterApp):  # type: ignore[misc]
    """``jupyter tfenv list``: the installed tfenv kernelspecs."""

    name = "jupyter-tfenv-list"
    description = "List the kernelspecs that run in Docker images."
    json_output = Bool(False, config=True, help="Print JSON instead of a table.")
    flags = {"json": ({"ListApp": {"json_output": True}}, "Print JSON.")}

    def start(self) -> None:
        from dataclasses import asdict

        from .kernelspecs import list_kernelspecs

        specs = list_kernelspecs()
        if self.json_output:
            print(json.dumps([asdict(spec) for spec in specs], indent=2))
            return
        if not specs:
            print("No tfenv kernelspecs. Add one: jupyter tfenv install --image IMAGE")
            return
        width = max(len(spec.name) for spec in specs)
        for spec in specs:
            print(f"{spec.name:<{width}}  {spec.display_name}  [{spec.image}, GPUs {spec.gpus}]")


class UninstallApp(JupyterApp):  # type: ignore[misc]
    """``jupyter tfenv uninstall NAME``: remove a tfenv kernelspec."""

    name = "jupyter-tfenv-uninstall"
    description = "Remove a tfenv kernelspec by name (see `jupyter tfenv list`)."

    def start(self) -> None:
        from .kernelspecs import uninstall_kernelspec

        if len(self.extra_args) != 1:
            print("Usage: jupyter tfenv uninstall NAME", file=sys.stderr)
            self.exit(2)
        try:
            removed = uninstall_kernelspec(self.extra_args[0])
        except NoSuchKernel as error:
            print(f"jupyter-tfenv: {error}", file=sys.stderr)
            self.exit(2)
        print(f"Removed {removed}")


class TfenvApp(JupyterApp):  # type: ignore[misc]
    """``jupyter tfenv``: the entry point that dispatches to subcommands."""

    name = "jupyter-tfenv"
    version = __version__
    description = "Run Jupyter kernels in TensorFlow Docker images."
    subcommands = {
        "install": (InstallApp, InstallApp.description),
        "list": (ListApp, ListApp.description),
        "uninstall": (UninstallApp, UninstallApp.description),
        "images": ("jupyter_tfenv.cli_images.ImagesApp", "List TensorFlow images, local, remote."),
        "pull": ("jupyter_tfenv.cli_images.PullApp", "Pull an image with a progress bar."),
        "prepare": ("jupyter_tfenv.cli_images.PrepareApp", "Make an image kernel-ready."),
        "doctor": ("jupyter_tfenv.cli_images.DoctorApp", "Check the setup and print fixes."),
    }

    def start(self) -> None:
        if self.subapp is None:
            print("Usage: jupyter tfenv {" + ",".join(self.subcommands) + "} [options]")
            print("Run `jupyter tfenv <command> --help` for a command's options.")
            self.exit(1)
            return
        self.subapp.start()


main = TfenvApp.launch_instance
