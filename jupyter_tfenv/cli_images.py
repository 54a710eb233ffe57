"""``jupyter tfenv images | pull | prepare | doctor``: the image jobs of the server, in a terminal.

They read the same settings as the server extension (``c.TfenvImages...`` in
``jupyter_server_config.py`` or ``jupyter_tfenv_config.py``, or TFENV_* environment variables),
so mirrors and timeouts configured once apply to both. Progress goes to stderr: a bar redrawn
in place on a terminal, a line every few seconds otherwise (CI logs, pipes).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import sys
import time
from typing import Any, TextIO

import docker
import docker.errors
from jupyter_core.application import JupyterApp
from traitlets import Bool, Float, Int
from traitlets.config import Application

from . import engine
from .errors import TfenvError
from .images import (
    LocalImage,
    TfenvImages,
    engine_gpu_support,
    list_tensorflow_images,
    probe_images,
)
from .pull import PullProgress, pull_image

_IMAGE_ALIASES = {
    "mirror": "TfenvImages.registry_mirrors",
    "timeout": "TfenvImages.pull_stall_timeout",
    "repository": "TfenvImages.tensorflow_repository",
    "docker-host": "TfenvImages.docker_host",
}


def human_size(size: float) -> str:
    """1536 -> "1.5 KB" (decimal units, as Docker prints them)."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(size) < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


class ProgressPrinter:
    """Pull progress on ``stream``: a bar on a terminal, periodic lines elsewhere."""

    def __init__(self, stream: TextIO, interval: float | None = None) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.interval = interval if interval is not None else (0.1 if self.tty else 5.0)
        self._last = float("-inf")
        self._drawn = False
        self._last_text = ""

    def line(self, text: str) -> None:
        """Print a line of its own (the bar is redrawn below it)."""
        self._clear()
        print(text, file=self.stream, flush=True)

    def update(self, progress: PullProgress, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        text = self.render(progress, width=30 if self.tty else 20)
        if self.tty:
            columns = shutil.get_terminal_size((100, 20)).columns
            self.stream.write(
                "\r" + text[: columns - 1].ljust(min(len(self._last_text), columns - 1))
            )
            self.stream.flush()
            self._drawn = True
        elif text != self._last_text:
            print(text, file=self.stream, flush=True)
        self._last_text = text

    @staticmethod
    def render(progress: PullProgress, width: int) -> str:
        done, total = progress.bytes_done, progress.bytes_total
        layers = progress.layers
        complete = sum(
            1 for entry in layers.values() if entry["status"] in ("Pull complete", "Already exists")
        )
        fraction = done / total if total else 0.0
        filled = round(fraction * width)
        bar = "#" * filled + "-" * (width - filled)
        sizes = f"{human_size(done)}/{human_size(total)}" if total else "waiting for sizes"
        return f"[{bar}] {fraction * 100:5.1f}%  {sizes}  {complete}/{len(layers)} layers"

    def _clear(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\r" + " " * len(self._last_text) + "\r")
            self.stream.flush()
            self._drawn = False

    def finish(self) -> None:
        self._clear()


class ImagesCommand(JupyterApp):  # type: ignore[misc]
    """Shared parts: the settings object, config loading, and clean error exits."""

    config_file_name = "jupyter_tfenv_config"
    classes = [TfenvImages]

    def load_config_file(self, suppress_errors: bool = True) -> None:  # type: ignore[override]
        """Read c.TfenvImages from the server's config too; jupyter_tfenv_config wins."""
        try:
            Application.load_config_file(self, "jupyter_server_config", path=self.config_file_paths)
        except Exception as error:
            if not suppress_errors:
                raise
            self.log.warning("Could not read jupyter_server_config: %s", error)
        super().load_config_file(suppress_errors)

    def settings(self) -> TfenvImages:
        if not hasattr(self, "_settings"):
            self._settings = TfenvImages(parent=self)
        return self._settings

    def client(self) -> docker.DockerClient:
        return engine.get_client(self.settings().docker_host)

    def fail(self, message: str, code: int = 1) -> None:
        print(f"jupyter-tfenv: {message}", file=sys.stderr, flush=True)
        self.exit(code)

    def one_image_argument(self, usage: str) -> str:
        if len(self.extra_args) != 1:
            self.fail(f"Usage: {usage}", 2)
        from .imagename import check_image_reference

        image = str(self.extra_args[0])
        try:
            check_image_reference(image)
        except ValueError as error:
            self.fail(str(error), 2)
        return image

    def pull(self, image: str, printer: ProgressPrinter) -> str:
        """Pull with a progress display; return the local name. Exits on failure."""
        settings = self.settings()
        state = {"progress": PullProgress()}

        def report(event: dict[str, Any]) -> None:
            status = str(event.get("status") or "")
            if status.startswith("Pulling ") and not event.get("id"):
                state["progress"] = PullProgress()
                printer.line(status)
                return
            state["progress"].apply(event)
            if event.get("id"):
                printer.update(state["progress"])
            elif status:
                printer.line(status)

        started = time.monotonic()
        try:
            result = pull_image(
                self.client(),
                image,
                mirrors=list(settings.registry_mirrors),
                fallback=settings.mirror_fallback,
                stall_timeout=settings.pull_stall_timeout,
                report=report,
            )
        except (TfenvError, docker.errors.DockerException) as error:
            printer.finish()
            self.fail(str(error))
        printer.update(state["progress"], force=True)
        printer.finish()
        size = self.client().api.inspect_image(result.image).get("Size") or 0
        via = f" via {result.source}" if result.source != result.image else ""
        printer.line(
            f"Pulled {result.image}{via} ({result.id[7:19]}, {human_size(size)}) in "
            f"{time.monotonic() - started:.1f} s"
        )
        return result.image


class ImagesApp(ImagesCommand):
    """``jupyter tfenv images``: local TensorFlow images, and the tags the registry offers."""

    name = "jupyter-tfenv-images"
    description = "List local TensorFlow images and the tags the registry offers."
    examples = """
    jupyter tfenv images
    jupyter tfenv images --no-registry
    jupyter tfenv images --json
    jupyter tfenv images --repository 127.0.0.1:5000/team/tensorflow
    """
    json_output = Bool(False, config=True, help="Print JSON (as the REST API's images answer).")
    registry = Bool(True, config=True, help="Also list the registry's tags (network access).")
    max_tags = Int(30, config=True, help="How many registry tags to print (newest first).")
    aliases = {**_IMAGE_ALIASES, "max-tags": "ImagesApp.max_tags"}
    flags = {
        "json": ({"ImagesApp": {"json_output": True}}, "Print JSON."),
        "no-registry": ({"ImagesApp": {"registry": False}}, "Skip the registry's tags."),
    }

    def start(self) -> None:
        settings = self.settings()
        try:
            client = self.client()
            images = list_tensorflow_images(client, settings)
            probe_images(client, images, settings)
        except (TfenvError, docker.errors.DockerException) as error:
            self.fail(str(error))
        tags: list[str] = []
        registry_error: str | None = None
        if self.registry:
            tags, registry_error = asyncio.run(self._tags())
        if self.json_output:
            print(
                json.dumps(
                    {
                        "local": [image.to_api([]) for image in images],
                        "registry": {
                            "repository": settings.tensorflow_repository,
                            "tags": tags,
                            "error": registry_error,
                        },
                    },
                    indent=2,
                )
            )
            return
        self._print_local(images)
        if self.registry:
            print()
            if registry_error:
                print(f"Tags of {settings.tensorflow_repository}: not available. {registry_error}")
            else:
                shown = tags[: self.max_tags]
                more = f" (newest {len(shown)} of {len(tags)})" if len(tags) > len(shown) else ""
                print(f"Tags of {settings.tensorflow_repository}{more}:")
                for start in range(0, len(shown), 4):
                    print("  " + "  ".join(f"{tag:<24}" for tag in shown[start : start + 4]))
                print(f"Pull one: jupyter tfenv pull {settings.tensorflow_repository}:TAG")

    async def _tags(self) -> tuple[list[str], str | None]:
        from .registry import RegistryClient, RegistryError, registry_target

        settings = self.settings()
        client = RegistryClient(
            settings.registry_username, settings.registry_password, settings.registry_timeout
        )
        try:
            target = registry_target(settings.tensorflow_repository, settings.registry_api_url)
            return await client.list_tags(target), None
        except RegistryError as error:
            return [], str(error)

    @staticmethod
    def _print_local(images: list[LocalImage]) -> None:
        if not images:
            print(
                "No local TensorFlow images. Pull one: "
                "jupyter tfenv pull tensorflow/tensorflow:latest-jupyter"
            )
            return
        rows = [("IMAGE", "TENSORFLOW", "PYTHON", "GPU", "KERNEL", "SIZE")]
        for image in images:
            ready = "ready" if image.kernel_ready else ("?" if image.kernel_ready is None else "no")
            if image.probe_error:
                ready = "broken"
            rows.append(
                (
                    image.ref,
                    image.tensorflow_version or "-",
                    image.python_version or "-",
                    "gpu" if image.gpu else "cpu",
                    ready,
                    human_size(image.size),
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            print("  ".join(cells).rstrip())
        not_ready = [image.ref for image in images if image.kernel_ready is False]
        if not_ready:
            print(
                f"\nNo ipykernel in: {', '.join(not_ready)}. Make one kernel-ready with: "
                f"jupyter tfenv prepare {not_ready[0]}"
            )


class PullApp(ImagesCommand):
    """``jupyter tfenv pull IMAGE``: pull through the configured mirrors, with progress."""

    name = "jupyter-tfenv-pull"
    description = "Pull an image (through TfenvImages.registry_mirrors for Docker Hub images)."
    examples = """
    jupyter tfenv pull tensorflow/tensorflow:2.21.0-jupyter
    jupyter tfenv pull tensorflow/tensorflow:2.15.0-gpu-jupyter --mirror docker.m.daocloud.io
    jupyter tfenv pull tensorflow/tensorflow:latest --timeout 300
    """
    progress_interval = Float(
        -1.0,
        config=True,
        help="""Seconds between progress lines when stderr is not a terminal (default 5; a
        terminal gets a bar redrawn ten times a second). 0: a line for every change.""",
    )
    aliases = {**_IMAGE_ALIASES, "progress-interval": "PullApp.progress_interval"}
    flags = {
        "no-fallback": (
            {"TfenvImages": {"mirror_fallback": False}},
            "Do not pull from Docker Hub itself when every mirror failed.",
        ),
    }

    def start(self) -> None:
        image = self.one_image_argument("jupyter tfenv pull IMAGE")
        interval = self.progress_interval if self.progress_interval >= 0 else None
        self.pull(image, ProgressPrinter(sys.stderr, interval))


class PrepareApp(ImagesCommand):
    """``jupyter tfenv prepare IMAGE``: IMAGE plus ipykernel (pulled first when missing)."""

    name = "jupyter-tfenv-prepare"
    description = "Make an image kernel-ready: build a thin image with ipykernel added."
    examples = """
    jupyter tfenv prepare tensorflow/tensorflow:2.21.0
    jupyter tfenv prepare tensorflow/tensorflow:2.21.0-gpu --quiet
    """
    quiet = Bool(False, config=True, help="Do not print the build's output.")
    aliases = _IMAGE_ALIASES
    flags = {
        "quiet": ({"PrepareApp": {"quiet": True}}, "Do not print the build's output."),
    }

    def start(self) -> None:
        from .serverext.service import image_exists

        image = self.one_image_argument("jupyter tfenv prepare IMAGE")
        settings = self.settings()
        printer = ProgressPrinter(sys.stderr)
        try:
            client = self.client()
            if not image_exists(client, image):
                image = self.pull(image, printer)

            def report(event: dict[str, Any]) -> None:
                if not self.quiet:
                    printer.line(f"  | {event.get('status', '')}")

            started = time.monotonic()
            result = settings.prepare(client, image, report=report)
        except (TfenvError, docker.errors.DockerException) as error:
            self.fail(str(error))
        if result.outcome == "ready":
            print(f"{result.image} has ipykernel already: nothing to do.")
        elif result.outcome == "reused":
            print(f"{result.image} was prepared from {result.source} earlier: reusing it.")
        else:
            print(
                f"Built {result.image} from {result.source} in {time.monotonic() - started:.1f} s."
            )
        print(
            "Jupyter servers with jupyter-tfenv offer it as a kernel now; for other clients: "
            f"jupyter tfenv install --image {result.image}"
        )


class DoctorApp(ImagesCommand):
    """``jupyter tfenv doctor``: check engine, socket, GPUs, images and kernelspecs."""

    name = "jupyter-tfenv-doctor"
    description = "Check the Docker engine, GPU support, images and kernelspecs; print fixes."
    examples = """
    jupyter tfenv doctor
    jupyter tfenv doctor --registry
    """
    check_registry = Bool(
        False, config=True, help="Also check that the registry lists tags (network access)."
    )
    aliases = _IMAGE_ALIASES
    flags = {
        "registry": ({"DoctorApp": {"check_registry": True}}, "Also check the registry."),
    }

    def start(self) -> None:
        self.problems = 0
        client = self._check_engine()
        if client is not None:
            gpu_ok = self._check_gpus(client)
            images = self._check_images(client)
            self._check_kernelspecs(client, gpu_ok, images)
        self._check_extension()
        if self.check_registry:
            self._check_registry()
        print()
        if self.problems:
            print(f"{self.problems} problem(s) found; each has its fix above.")
            self.exit(1)
        print("No problems found.")

    def ok(self, text: str) -> None:
        print(f"[ ok ] {text}")

    def note(self, text: str, fix: str = "") -> None:
        print(f"[note] {text}")
        if fix:
            print(f"       fix: {fix}")

    def problem(self, text: str, fix: str) -> None:
        self.problems += 1
        print(f"[FAIL] {text}")
        print(f"       fix: {fix}")

    def _check_socket(self) -> None:
        host = self.settings().docker_host or os.environ.get("DOCKER_HOST", "")
        if host and not host.startswith("unix://"):
            return
        path = host[len("unix://") :] if host else "/var/run/docker.sock"
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            self.problem(
                f"No Docker socket at {path}.",
                "install and start Docker (`sudo apt-get install docker.io && sudo systemctl "
                "start docker`), or point DOCKER_HOST at a running engine",
            )
            return
        if not stat.S_ISSOCK(mode):
            self.problem(f"{path} is not a socket.", "point DOCKER_HOST at the engine's socket")
        elif not os.access(path, os.R_OK | os.W_OK):
            self.problem(
                f"This user may not use the Docker socket {path}.",
                "`sudo usermod -aG docker $USER`, then log out and in again",
            )
        else:
            self.ok(f"Docker socket {path} is usable by this user")

    def _check_engine(self) -> docker.DockerClient | None:
        self._check_socket()
        try:
            client = self.client()
            version = client.version()
        except (TfenvError, docker.errors.DockerException) as error:
            self.problem(f"The Docker engine does not answer: {error}", "see the message")
            return None
        api = str(version.get("ApiVersion", "0"))
        self.ok(f"Docker engine {version.get('Version')} (API {api}) answers")
        if tuple(int(part) for part in api.split(".")[:2]) < (1, 41):
            self.problem(
                f"The engine's API {api} is older than 1.41 (Docker 20.10), which GPU requests "
                "and progress need.",
                "upgrade Docker to 20.10 or newer",
            )
        return client

    def _check_gpus(self, client: docker.DockerClient) -> bool:
        setting = self.settings().gpu_support
        gpu_ok = engine_gpu_support(client, setting)
        if gpu_ok:
            how = "an NVIDIA runtime is registered" if setting == "auto" else "gpu_support='yes'"
            self.ok(f"GPU kernels available ({how})")
        elif setting == "no":
            self.note("GPU kernels are off (TfenvImages.gpu_support = 'no')")
        else:
            self.note(
                "No NVIDIA runtime on this engine: only CPU kernels are offered.",
                "for GPUs install the NVIDIA container toolkit "
                "(https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/) and "
                "restart dockerd",
            )
        return gpu_ok

    def _check_images(self, client: docker.DockerClient) -> list[LocalImage]:
        settings = self.settings()
        images = list_tensorflow_images(client, settings)
        if not images:
            self.note(
                "No local TensorFlow image yet.",
                "jupyter tfenv pull tensorflow/tensorflow:latest-jupyter",
            )
            return images
        probe_images(client, images, settings)
        for image in images:
            if image.probe_error:
                self.problem(
                    f"Image {image.ref} cannot run a kernel: {image.probe_error}",
                    f"remove it (`docker rmi {image.ref}`) or pick another image",
                )
            elif not image.kernel_ready:
                self.note(
                    f"Image {image.ref} (TensorFlow {image.tensorflow_version}) has no ipykernel.",
                    f"jupyter tfenv prepare {image.ref}",
                )
            else:
                self.ok(
                    f"Image {image.ref}: TensorFlow {image.tensorflow_version}, Python "
                    f"{image.python_version}, kernel-ready"
                )
        return images

    def _check_kernelspecs(
        self, client: docker.DockerClient, gpu_ok: bool, images: list[LocalImage]
    ) -> None:
        from .gpus import parse_gpus
        from .kernel_image import probe_image
        from .kernelspecs import list_kernelspecs
        from .serverext.service import image_exists

        for spec in list_kernelspecs():
            where = f"Kernelspec {spec.name!r} ({spec.image}, GPUs {spec.gpus})"
            if not spec.image:
                self.problem(f"{where} names no image.", f"jupyter tfenv uninstall {spec.name}")
                continue
            if not image_exists(client, spec.image):
                self.problem(
                    f"{where}: the image is not on the engine.", f"jupyter tfenv pull {spec.image}"
                )
                continue
            try:
                facts = probe_image(client, spec.image, owner=self.settings().owner_label)
            except TfenvError as error:
                self.problem(f"{where}: {error}", f"jupyter tfenv uninstall {spec.name}")
                continue
            if not facts.kernel_ready:
                self.problem(
                    f"{where}: the image has no ipykernel.",
                    f"jupyter tfenv prepare {spec.image}, then reinstall the kernelspec "
                    "with the prepared image",
                )
            elif parse_gpus(spec.gpus).wants_gpu and not gpu_ok:
                self.problem(
                    f"{where} asks for GPUs, which this engine cannot serve.",
                    "install the NVIDIA container toolkit, or use the CPU kernelspec",
                )
            else:
                self.ok(f"{where} can start")

    def _check_extension(self) -> None:
        from jupyter_server.extension.config import ExtensionConfigManager

        manager = ExtensionConfigManager(read_config_path=self.config_file_paths)
        get_extensions = manager.get_jpserver_extensions
        extensions: dict[str, bool] = get_extensions()  # type: ignore[no-untyped-call]
        enabled = extensions.get("jupyter_tfenv")
        if enabled:
            self.ok("The jupyter_tfenv server extension is enabled")
        else:
            self.problem(
                "The jupyter_tfenv server extension is not enabled: Jupyter shows no kernels "
                "for local images and no image panel.",
                "jupyter server extension enable jupyter_tfenv",
            )

    def _check_registry(self) -> None:
        from .registry import RegistryClient, RegistryError, registry_target

        settings = self.settings()

        async def tags() -> list[str]:
            client = RegistryClient(
                settings.registry_username, settings.registry_password, settings.registry_timeout
            )
            return await client.list_tags(
                registry_target(settings.tensorflow_repository, settings.registry_api_url)
            )

        try:
            found = asyncio.run(tags())
        except RegistryError as error:
            self.problem(f"Registry: {error}", "check the network, the repository and mirrors")
            return
        self.ok(f"Registry lists {len(found)} tags of {settings.tensorflow_repository}")
