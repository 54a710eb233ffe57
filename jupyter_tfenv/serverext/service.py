"""What the REST API does: image lists, pull/prepare/switch jobs, and kernel facts.

Handlers validate input and turn this module's answers into HTTP; everything here is async
and reaches the engine only through ``engine.run_blocking``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import docker
import docker.errors

from .. import engine
from ..errors import GpuUnavailableError, ImageNotFoundError, TfenvError
from ..gpus import parse_gpus
from ..images import TfenvImages, engine_gpu_support
from ..jobs import Job, JobBusyError, JobManager
from ..kernel_image import probe_image
from ..mirrors import canonical_name
from ..provisioner import DockerProvisioner
from ..pull import PullProgress, pull_image
from ..registry import RegistryClient, TagCache, registry_target
from .catalog import ImageCatalog

log = logging.getLogger("jupyter_tfenv")

LOG_TAIL_LINES = 20
RESTART_TIMEOUT = 120.0


class NotTfenvKernelError(TfenvError):
    """The kernel exists but does not run in a tfenv container."""


def image_exists(client: docker.DockerClient, image: str) -> bool:
    """Blocking: whether ``image`` is on the engine."""
    try:
        client.api.inspect_image(image)
    except docker.errors.ImageNotFound:
        return False
    except docker.errors.APIError as error:
        if error.status_code == 404:
            return False
        raise
    return True


def _memory_bytes(stats: dict[str, Any]) -> int | None:
    memory = stats.get("memory_stats") or {}
    usage = memory.get("usage")
    if usage is None:
        return None
    detail = memory.get("stats") or {}
    # As `docker stats` does: page cache the kernel can drop at once is not counted.
    cache = detail.get("inactive_file", detail.get("total_inactive_file", 0))
    return max(int(usage) - int(cache or 0), 0)


def container_facts(
    client: docker.DockerClient, container_id: str | None, image: str, owner: str
) -> dict[str, Any]:
    """Blocking: status, memory use, image id, TensorFlow version and log tail of a kernel."""
    facts: dict[str, Any] = {
        "status": None,
        "memory_bytes": None,
        "image_id": None,
        "log_tail": [],
        "tensorflow_version": None,
    }
    if container_id:
        try:
            attrs = client.api.inspect_container(container_id)
        except docker.errors.NotFound:
            attrs = None
        if attrs is not None:
            state = attrs.get("State") or {}
            status = str(state.get("Status") or "")
            facts["status"] = {
                "running": "running",
                "created": "starting",
                "restarting": "starting",
            }.get(status, "exited")
            facts["image_id"] = attrs.get("Image")
            if status == "running":
                try:
                    stats = client.api.stats(container_id, stream=False, one_shot=True)
                    facts["memory_bytes"] = _memory_bytes(stats)
                except docker.errors.APIError as error:
                    log.debug("No stats for container %s: %s", container_id[:12], error)
            try:
                raw = client.api.logs(container_id, stdout=True, stderr=True, tail=LOG_TAIL_LINES)
                facts["log_tail"] = raw.decode(errors="replace").splitlines()[-LOG_TAIL_LINES:]
            except docker.errors.APIError as error:
                log.debug("No logs for container %s: %s", container_id[:12], error)
    if image:
        try:
            facts["tensorflow_version"] = probe_image(client, image, owner=owner).tensorflow
        except (TfenvError, docker.errors.DockerException) as error:
            log.debug("No TensorFlow version for %s: %s", image, error)
    return facts


class TfenvService:
    """The extension's state and operations, shared by all handlers of one server."""

    def __init__(self, serverapp: Any, settings: TfenvImages, catalog: ImageCatalog) -> None:
        self.serverapp = serverapp
        self.settings = settings
        self.catalog = catalog
        self.jobs = JobManager()
        self.tags = TagCache()
        self._registry = RegistryClient(
            settings.registry_username, settings.registry_password, settings.registry_timeout
        )
        self._started = False

    def ensure_started(self) -> None:
        """Start the catalog on first use (the server also starts it right after launch)."""
        if not self._started:
            self._started = True
            self.catalog.start()

    async def stop(self) -> None:
        await self.jobs.stop()
        await self.catalog.stop()

    async def client(self) -> docker.DockerClient:
        return await engine.get_client_async(self.settings.docker_host)

    # -- kernels -----------------------------------------------------------------------------

    @property
    def kernel_manager(self) -> Any:
        return self.serverapp.kernel_manager

    def tfenv_kernel(self, kernel_id: str) -> Any:
        """The kernel manager of a tfenv kernel; KeyError / NotTfenvKernelError otherwise."""
        if kernel_id not in self.kernel_manager.list_kernel_ids():
            raise KeyError(kernel_id)
        km = self.kernel_manager.get_kernel(kernel_id)
        if not isinstance(getattr(km, "provisioner", None), DockerProvisioner):
            raise NotTfenvKernelError(
                f"Kernel {kernel_id} does not run in a tfenv container (kernelspec "
                f"{getattr(km, 'kernel_name', '?')!r})."
            )
        return km

    def tfenv_kernel_ids(self) -> list[str]:
        ids = []
        for kernel_id in list(self.kernel_manager.list_kernel_ids()):
            try:
                self.tfenv_kernel(kernel_id)
            except (KeyError, NotTfenvKernelError):
                continue
            ids.append(kernel_id)
        return ids

    async def kernel_model(self, kernel_id: str) -> dict[str, Any]:
        """The Kernel object of the REST API (docs/rest-api.md)."""
        km = self.tfenv_kernel(kernel_id)
        provisioner: DockerProvisioner = km.provisioner
        client = await engine.get_client_async(provisioner.docker_host)
        container_id = provisioner.container_id
        facts = await engine.run_blocking(
            container_facts, client, container_id, provisioner.image, provisioner.owner_label
        )
        status = facts["status"]
        if status is None:
            # No container: being (re)started, or gone for good.
            starting = getattr(km, "execution_state", "") in ("starting", "restarting")
            status = "starting" if starting or provisioner.last_exit is None else "exited"
        last_exit = provisioner.last_exit
        log_tail = facts["log_tail"] or (list(last_exit.get("log_tail", [])) if last_exit else [])
        return {
            "kernel_id": kernel_id,
            "kernel_name": getattr(km, "kernel_name", ""),
            "container_id": container_id,
            "image": provisioner.image,
            "image_id": facts["image_id"],
            "tensorflow_version": facts["tensorflow_version"],
            "gpus": provisioner.gpu_request.describe(),
            "memory_bytes": facts["memory_bytes"],
            "status": status,
            "log_tail": log_tail,
            "last_exit": last_exit,
            "execution_state": str(getattr(km, "execution_state", "unknown")),
        }

    async def kernel_models(self) -> list[dict[str, Any]]:
        ids = self.tfenv_kernel_ids()
        models = await asyncio.gather(
            *(self.kernel_model(kernel_id) for kernel_id in ids), return_exceptions=True
        )
        result = []
        for kernel_id, model in zip(ids, models, strict=True):
            if isinstance(model, BaseException):
                # A kernel shut down while we looked at it is simply not listed.
                log.debug("Kernel %s left the list: %s", kernel_id, model)
                continue
            result.append(model)
        return result

    # -- images ------------------------------------------------------------------------------

    async def kernel_images(self) -> list[tuple[str, str, str | None]]:
        """(kernel id, image name, image id) of every tfenv kernel; one inspect per kernel."""
        found = []
        for kernel_id in self.tfenv_kernel_ids():
            try:
                provisioner: DockerProvisioner = self.tfenv_kernel(kernel_id).provisioner
            except (KeyError, NotTfenvKernelError):
                # Shut down since it was listed.
                continue
            image_id = None
            if provisioner.container_id:
                client = await engine.get_client_async(provisioner.docker_host)
                try:
                    attrs = await engine.run_blocking(
                        client.api.inspect_container, provisioner.container_id
                    )
                    image_id = attrs.get("Image")
                except docker.errors.DockerException as error:
                    log.debug("Kernel %s: no container to inspect: %s", kernel_id, error)
            found.append((kernel_id, provisioner.image, image_id))
        return found

    async def images_model(self, with_registry: bool) -> dict[str, Any]:
        """The answer of GET images."""
        images = await self.catalog.current()
        kernels = await self.kernel_images()
        local = []
        for image in images:
            users = [
                kernel_id
                for kernel_id, name, image_id in kernels
                if image_id == image.id or image.ref in (name, _canonical_or_same(name))
            ]
            local.append(image.to_api(users))
        registry: dict[str, Any] = {
            "repository": self.settings.tensorflow_repository,
            "tags": [],
            "error": None,
        }
        if with_registry:
            target = registry_target(
                self.settings.tensorflow_repository, self.settings.registry_api_url
            )
            tags, error = await self.tags.get(
                self._registry, target, self.settings.tags_cache_seconds
            )
            registry.update(tags=tags, error=error)
        return {"local": local, "registry": registry, "engine_error": self.catalog.error}

    # -- jobs --------------------------------------------------------------------------------

    def start_pull(self, image: str) -> Job:
        """Start pulling ``image`` (JobBusyError when it is being pulled)."""
        wanted = canonical_name(image)
        return self.jobs.start("pull", wanted, f"pull:{wanted}", lambda job: self._pull(job))

    async def _pull(self, job: Job) -> dict[str, Any]:
        settings = self.settings
        client = await self.client()
        state = {"progress": PullProgress()}

        def report(event: dict[str, Any]) -> None:
            # Runs in the pull thread: fold the event here, hand a snapshot to the loop.
            status = str(event.get("status") or "")
            if status.startswith("Pulling ") and not event.get("id"):
                state["progress"] = PullProgress()
            progress = state["progress"]
            progress.apply(event)
            job.update_threadsafe(progress=progress.to_dict(), message=_pull_message(event))

        result = await engine.run_blocking(
            pull_image,
            client,
            job.image,
            mirrors=list(settings.registry_mirrors),
            fallback=settings.mirror_fallback,
            stall_timeout=settings.pull_stall_timeout,
            report=report,
            cancelled=lambda: job.cancel_requested,
        )
        # Let the queued progress updates land before the job is marked done.
        await asyncio.sleep(0)
        self.catalog.mark_dirty()
        job.update(message=f"Pulled {result.image}")
        return result.to_dict()

    def start_prepare(self, image: str) -> Job:
        """Start making ``image`` kernel-ready; joins a prepare of the same image that runs."""
        wanted = canonical_name(image)
        key = f"prepare:{wanted}"
        busy = self.jobs.running(key)
        if busy is not None:
            return busy
        return self.jobs.start("prepare", wanted, key, lambda job: self._prepare(job))

    async def _prepare(self, job: Job) -> dict[str, Any]:
        source = await self._ensure_local(job, job.image)
        return await self._prepare_local(job, source)

    async def _prepare_local(self, job: Job, source: str) -> dict[str, Any]:
        settings = self.settings
        client = await self.client()

        def report(event: dict[str, Any]) -> None:
            job.update_threadsafe(message=str(event.get("status") or ""))

        result = await engine.run_blocking(
            settings.prepare, client, source, report, lambda: job.cancel_requested
        )
        await asyncio.sleep(0)
        self.catalog.mark_dirty()
        done = {
            "built": f"Built {result.image}",
            "reused": f"Reusing {result.image}, prepared earlier",
            "ready": f"{result.image} is kernel-ready already",
        }[result.outcome]
        job.update(message=done)
        return result.to_dict()

    async def _ensure_local(self, job: Job, image: str) -> str:
        """The local name of ``image``, pulled first (as its own pull job) when missing."""
        client = await self.client()
        if await engine.run_blocking(image_exists, client, image):
            return image
        try:
            pull = self.start_pull(image)
        except JobBusyError as busy:
            pull = busy.job
        job.update(message=f"Pulling {pull.image} (job {pull.id})")
        seen = -1
        while not pull.finished:
            await pull.wait_changed(seen, 15.0)
            seen = pull.version
            job.update(progress=pull.progress, message=pull.message)
        if pull.status != "done":
            raise TfenvError(pull.error or f"Pulling {image} failed.")
        job.update(progress=pull.progress)
        return str(pull.result.get("image") or image)

    def start_switch(self, kernel_id: str, image: str | None, gpus: Any) -> Job:
        """Start moving a running kernel to another image and/or GPU setting."""
        km = self.tfenv_kernel(kernel_id)
        shown = canonical_name(image) if image else km.provisioner.image
        return self.jobs.start(
            "switch",
            shown,
            f"switch:{kernel_id}",
            lambda job: self._switch(job, kernel_id, image, gpus),
        )

    async def _switch(
        self, job: Job, kernel_id: str, image: str | None, gpus: Any
    ) -> dict[str, Any]:
        km = self.tfenv_kernel(kernel_id)
        provisioner: DockerProvisioner = km.provisioner
        old_image, old_gpus = provisioner.image, provisioner.gpus
        target_gpus = old_gpus if gpus is None else gpus
        request = parse_gpus(target_gpus)
        client = await engine.get_client_async(provisioner.docker_host)

        if request.wants_gpu:
            serves = await engine.run_blocking(
                engine_gpu_support, client, self.settings.gpu_support
            )
            if not serves:
                raise GpuUnavailableError(
                    f"GPUs {request.describe()!r} were asked for, but this Docker engine lists no "
                    "NVIDIA runtime. Install the NVIDIA container toolkit and restart dockerd, "
                    "or set TfenvImages.gpu_support = 'yes' if the engine serves GPUs anyway. "
                    f"The kernel keeps running in {old_image} "
                    f"(GPUs {parse_gpus(old_gpus).describe()})."
                )

        target_image = old_image
        if image is not None:
            target_image = await self._ensure_local(job, image)
            job.update(message=f"Checking {target_image}")
            facts = await engine.run_blocking(
                probe_image, client, target_image, owner=provisioner.owner_label
            )
            if not facts.kernel_ready:
                job.update(message=f"{target_image} has no ipykernel: preparing it")
                prepared = await self._prepare_local(job, target_image)
                target_image = str(prepared["image"])

        job.update(message=f"Restarting kernel {kernel_id} in {target_image}")
        provisioner.switch_to(image=target_image, gpus=target_gpus)
        log.info(
            "Kernel %s: switching from %s (GPUs %s) to %s (GPUs %s)",
            kernel_id,
            old_image,
            parse_gpus(old_gpus).describe(),
            target_image,
            request.describe(),
        )
        try:
            await self._restart(kernel_id)
        except Exception as error:
            self._check_still_running(kernel_id)
            cause = str(error) or type(error).__name__
            provisioner.switch_to(image=old_image, gpus=old_gpus)
            try:
                await self._restart(kernel_id)
                back = f"The kernel runs in {old_image} again."
            except Exception as again:
                log.warning("Kernel %s: could not go back to %s: %s", kernel_id, old_image, again)
                back = f"Going back to {old_image} failed too ({again}); restart the kernel."
            raise TfenvError(
                f"Kernel {kernel_id} did not start in {target_image} (GPUs "
                f"{request.describe()}): {cause} {back}"
            ) from error
        self._check_still_running(kernel_id)
        job.update(message=f"Kernel {kernel_id} runs in {target_image}")
        return {
            "kernel_id": kernel_id,
            "image": target_image,
            "gpus": request.describe(),
            "container_id": provisioner.container_id,
            "previous_image": old_image,
            "previous_gpus": parse_gpus(old_gpus).describe(),
        }

    def _check_still_running(self, kernel_id: str) -> None:
        """A kernel shut down while its switch ran: say so instead of reporting a switch."""
        if kernel_id not in self.kernel_manager:
            raise TfenvError(
                f"Kernel {kernel_id} was shut down while it was being switched; there is "
                "nothing left to switch. Start a new kernel from the launcher."
            )

    async def _restart(self, kernel_id: str) -> None:
        waiter = await self.kernel_manager.restart_kernel(kernel_id, now=False)
        if asyncio.isfuture(waiter):
            # jupyter_server answers once the new kernel replied to kernel_info.
            await asyncio.wait_for(waiter, RESTART_TIMEOUT)


def _canonical_or_same(image: str) -> str:
    try:
        return canonical_name(image)
    except ValueError:
        return image


def _pull_message(event: dict[str, Any]) -> str:
    status = str(event.get("status") or "")
    layer = event.get("id")
    return f"{layer}: {status}" if layer and status else status


__all__ = ["ImageNotFoundError", "NotTfenvKernelError", "TfenvService"]
