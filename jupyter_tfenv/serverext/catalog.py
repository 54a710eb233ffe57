"""The server's view of local TensorFlow images, and the kernelspecs it offers for them.

The image list is refreshed off the event loop: when the engine reports an image event (pull,
tag, untag, delete, build), and otherwise when it is older than ``refresh_interval`` and someone
asks. Each refresh rewrites one kernelspec directory per image and device ("TensorFlow 2.21.0
(Docker CPU)", and a GPU one where the engine serves GPUs); the kernelspec manager lists that
directory after the installed kernelspecs, so `jupyter tfenv install` keeps working beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import docker.errors

from .. import engine
from ..errors import TfenvError
from ..images import (
    LocalImage,
    TfenvImages,
    engine_gpu_support,
    list_tensorflow_images,
    probe_images,
)
from ..kernelspecs import build_kernel_json, display_name_for, kernel_name_for

log = logging.getLogger("jupyter_tfenv")


def plan_kernelspecs(
    images: list[LocalImage],
    gpu_ok: bool,
    gpu_for_cpu_images: bool,
    taken: set[str],
    auto_prepare: bool = False,
) -> dict[str, dict[str, Any]]:
    """Kernel name -> kernel.json (without its resource dir) for the given images.

    An image with a prepared derivative runs as that derivative under its own kernel name, so
    notebooks keep their kernel after `prepare`; the derivative gets no second entry. Names an
    installed kernelspec uses (``taken``) are left to it.
    """
    present = {image.id for image in images}
    prepared_for = {
        image.prepared_from: image for image in images if image.prepared_from in present
    }
    offered: list[tuple[LocalImage, LocalImage, str]] = []
    for image in images:
        if image.prepared_from in present:
            continue
        run_as = prepared_for.get(image.id, image)
        devices = ["none"]
        if gpu_ok and (image.gpu or gpu_for_cpu_images):
            devices.append("all")
        offered.extend((image, run_as, gpus) for gpus in devices)

    # Launchers list kernels by display name: where two would read the same, add the image's
    # last name and tag, or its whole name where even that is shared.
    plain = [display_name_for(i.ref, i.tensorflow_version, gpus) for i, _, gpus in offered]
    short = [
        f"{text[:-1]}, {image.ref.rsplit('/', 1)[-1]})" if plain.count(text) > 1 else text
        for text, (image, _, _) in zip(plain, offered, strict=True)
    ]
    displays = [
        f"{text[:-1]}, {image.ref})" if short.count(s) > 1 else s
        for text, s, (image, _, _) in zip(plain, short, offered, strict=True)
    ]

    specs: dict[str, dict[str, Any]] = {}
    for (image, run_as, gpus), display in zip(offered, displays, strict=True):
        name = kernel_name_for(image.ref, gpus)
        if name in taken:
            # `jupyter tfenv install` gives the same name to the same image and device: the
            # user's own kernelspec stands for it.
            continue
        if name in specs:
            # Two repositories with the same last name and tag: tell them apart by a hash.
            digest = hashlib.sha1(image.ref.encode()).hexdigest()[:6]
            name = f"{name}-{digest}"
        extra: dict[str, Any] = {"auto_prepare": True} if auto_prepare else {}
        kernel_json = build_kernel_json(
            run_as.ref,
            display,
            gpus,
            "",
            extra_config=extra,
            tensorflow_version=image.tensorflow_version,
        )
        ready = True if run_as is not image else image.kernel_ready
        kernel_json["metadata"]["tfenv"].update(
            {"dynamic": True, "source_image": image.ref, "kernel_ready": ready}
        )
        specs[name] = kernel_json
    return specs


def list_kernel_names(directories: list[str]) -> set[str]:
    """Names of the kernelspecs in ``directories`` (subdirectories holding a kernel.json)."""
    names: set[str] = set()
    for directory in directories:
        try:
            entries = os.listdir(directory)
        except OSError:
            continue
        for entry in entries:
            if os.path.isfile(os.path.join(directory, entry, "kernel.json")):
                names.add(entry.lower())
    return names


def write_kernelspecs(directory: Path, specs: dict[str, dict[str, Any]]) -> None:
    """Make ``directory`` hold exactly ``specs``; each kernel.json is replaced atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, kernel_json in specs.items():
        spec_dir = directory / name
        spec_dir.mkdir(exist_ok=True)
        data = json.loads(json.dumps(kernel_json))
        argv = data["argv"]
        # The launcher (for clients that ignore provisioners) reads the spec from here.
        argv[argv.index("--kernelspec-dir") + 1] = str(spec_dir)
        path = spec_dir / "kernel.json"
        text = json.dumps(data, indent=2)
        try:
            if path.read_text() == text:
                continue
        except OSError:
            pass
        tmp = spec_dir / f".kernel.json.{os.getpid()}.tmp"
        tmp.write_text(text)
        tmp.replace(path)
    for entry in directory.iterdir():
        if entry.is_dir() and entry.name not in specs:
            shutil.rmtree(entry, ignore_errors=True)


class ImageCatalog:
    """Local TensorFlow images, refreshed on engine events or age, and their kernelspecs."""

    def __init__(
        self,
        settings: TfenvImages,
        spec_dir: Path | None,
        taken_names: Callable[[], set[str]],
        refresh_interval: float = 30.0,
        auto_prepare: bool = False,
    ) -> None:
        self.settings = settings
        self.spec_dir = spec_dir
        self._taken_names = taken_names
        self.refresh_interval = refresh_interval
        self.auto_prepare = auto_prepare
        self.images: list[LocalImage] = []
        self.gpu_ok = False
        self.error: str | None = None
        self.refreshed_at = 0.0
        self.generation = 0
        self._dirty = True
        self._refresh_task: asyncio.Task[None] | None = None
        self._debounce: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self._events: Any = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start watching the engine's image events and schedule the first refresh."""
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._watcher = threading.Thread(
            target=self._watch_events, name="tfenv-image-events", daemon=True
        )
        self._watcher.start()
        self.schedule_refresh(0.0)

    async def stop(self) -> None:
        """Stop the event watcher and any refresh; remove the kernelspec directory."""
        self._stopping.set()
        events = self._events
        if events is not None:
            try:
                events.close()
            except Exception as error:  # the stream may be half-closed already
                log.debug("Closing the image event stream: %s", error)
        if self._debounce is not None:
            self._debounce.cancel()
        task = self._refresh_task
        if task is not None and not task.done():
            # Let the engine work in flight end (one probe at most), so no probe container
            # outlives the server; cancel only a refresh that hangs.
            await asyncio.wait([task], timeout=15)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._watcher is not None:
            await asyncio.to_thread(self._watcher.join, 5.0)
        if self.spec_dir is not None:
            shutil.rmtree(self.spec_dir, ignore_errors=True)

    # -- refreshing --------------------------------------------------------------------------

    def mark_dirty(self) -> None:
        self._dirty = True

    @property
    def stale(self) -> bool:
        return self._dirty or time.monotonic() - self.refreshed_at > self.refresh_interval

    def schedule_refresh(self, delay: float = 0.5) -> None:
        """Refresh soon (once for a burst of calls), without waiting for it."""
        loop = self._loop
        if loop is None or self._stopping.is_set():
            return
        if self._debounce is not None:
            self._debounce.cancel()
        self._debounce = loop.call_later(delay, self._start_refresh)

    def touch(self) -> None:
        """Called when kernelspecs are listed (from any thread): refresh soon if stale."""
        loop = self._loop
        if loop is None or loop.is_closed() or not self.stale:
            return
        # RuntimeError: the loop closed meanwhile (server shutdown); nothing to refresh for.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._touch)

    def _touch(self) -> None:
        if self.stale and (self._refresh_task is None or self._refresh_task.done()):
            self.schedule_refresh(0.0)

    def _start_refresh(self) -> None:
        self._debounce = None
        if self._refresh_task is None or self._refresh_task.done():
            self._refresh_task = asyncio.ensure_future(self._refresh())
        else:
            # A refresh is running: run another one after it, to see what changed meanwhile.
            self._dirty = True
            self._refresh_task.add_done_callback(lambda _: self.schedule_refresh(0.1))

    async def refresh(self) -> list[LocalImage]:
        """Refresh now (or join the refresh that runs) and return the images."""
        if self._refresh_task is not None and not self._refresh_task.done():
            await asyncio.shield(self._refresh_task)
            if not self._dirty:
                return self.images
        self._refresh_task = asyncio.ensure_future(self._refresh())
        await asyncio.shield(self._refresh_task)
        return self.images

    async def current(self) -> list[LocalImage]:
        """The images, refreshed first when stale."""
        if self.stale:
            return await self.refresh()
        return self.images

    async def _refresh(self) -> None:
        self._dirty = False
        settings = self.settings
        try:
            client = await engine.get_client_async(settings.docker_host)
            images = await engine.run_blocking(list_tensorflow_images, client, settings)
            gpu_ok = await engine.run_blocking(engine_gpu_support, client, settings.gpu_support)
            # Keep what earlier probes found, so kernelspecs do not flicker while re-probing.
            known = {(image.ref, image.id): image for image in self.images}
            for image in images:
                old = known.get((image.ref, image.id))
                if old is not None and old.kernel_ready is not None:
                    image.kernel_ready = old.kernel_ready
                    image.tensorflow_version = old.tensorflow_version
                    image.python_version = old.python_version
                    image.probe_error = old.probe_error
            self._publish(images, gpu_ok)
            if any(image.kernel_ready is None for image in images):
                await engine.run_blocking(
                    probe_images, client, images, settings, self._stopping.is_set
                )
                self._publish(images, gpu_ok)
            self.error = None
        except (TfenvError, docker.errors.DockerException, OSError) as error:
            self.error = str(error)
            log.warning("Could not list the local TensorFlow images: %s", error)
        self.refreshed_at = time.monotonic()

    def _publish(self, images: list[LocalImage], gpu_ok: bool) -> None:
        if self._stopping.is_set():
            return
        self.images = images
        self.gpu_ok = gpu_ok
        self.generation += 1
        if self.spec_dir is None:
            return
        specs = plan_kernelspecs(
            images,
            gpu_ok,
            self.settings.gpu_kernels_for_cpu_images,
            self._taken_names(),
            self.auto_prepare,
        )
        try:
            write_kernelspecs(self.spec_dir, specs)
        except OSError as error:
            log.warning("Could not write kernelspecs to %s: %s", self.spec_dir, error)

    # -- engine events -----------------------------------------------------------------------

    def _watch_events(self) -> None:
        """Thread: follow the engine's image events; reconnect with a growing pause."""
        pause = 1.0
        while not self._stopping.is_set():
            try:
                client = engine.get_client(self.settings.docker_host)
                stream = client.events(decode=True, filters={"type": "image"})
                self._events = stream
                if self._stopping.is_set():
                    # stop() ran while the stream was being opened and could not close it.
                    stream.close()
                    return
                pause = 1.0
                for event in stream:
                    if self._stopping.is_set():
                        return
                    log.debug("Image event %s %s", event.get("Action"), event.get("id"))
                    self._on_event_threadsafe()
            except Exception as error:  # engine gone or restarting: try again later
                if self._stopping.is_set():
                    return
                log.debug("Image event stream ended: %s", error)
            self._on_event_threadsafe()
            self._stopping.wait(pause)
            pause = min(pause * 2, 60.0)

    def _on_event_threadsafe(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        # RuntimeError: the loop closed between the check and the call (server shutdown).
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._on_event)

    def _on_event(self) -> None:
        self._dirty = True
        self.schedule_refresh(0.5)
