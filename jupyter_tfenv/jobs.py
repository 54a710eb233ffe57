"""Long-running image jobs (pull, prepare, switch) that live on the server, not in a page.

A job runs as an asyncio task owned by :class:`JobManager`. Clients only watch it: a browser
that closes its page or loses its connection neither cancels the job nor loses its state, and
a client that comes back reads the same job by id. Work done in threads reports progress with
:meth:`Job.update_threadsafe`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from .errors import TfenvError

log = logging.getLogger("jupyter_tfenv")

JOB_KINDS = ("pull", "prepare", "switch")


def empty_progress() -> dict[str, Any]:
    return {"bytes_done": 0, "bytes_total": 0, "layers": {}}


class Job:
    """One job's state, as the REST API shows it, plus the means to wait for changes."""

    def __init__(self, kind: str, image: str, key: str) -> None:
        self.id = uuid.uuid4().hex[:16]
        self.kind = kind
        self.image = image
        # Jobs with equal keys must not run at once (one pull per image, one switch per kernel).
        self.key = key
        self.status = "running"
        self.progress: dict[str, Any] = empty_progress()
        self.message = ""
        self.error: str | None = None
        self.result: dict[str, Any] = {}
        self.created = time.time()
        self.updated = self.created
        self.version = 0
        self._changed = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self.task: asyncio.Task[None] | None = None
        # Read by worker threads between steps, so a server shutdown stops them too.
        self.cancel_requested = False

    @property
    def finished(self) -> bool:
        return self.status != "running"

    def to_dict(self) -> dict[str, Any]:
        """The Job object of the REST API (docs/rest-api.md)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "image": self.image,
            "status": self.status,
            "progress": {
                "bytes_done": self.progress.get("bytes_done", 0),
                "bytes_total": self.progress.get("bytes_total", 0),
                "layers": {k: dict(v) for k, v in self.progress.get("layers", {}).items()},
            },
            "message": self.message,
            "error": self.error,
            "result": dict(self.result),
            "created": self.created,
            "updated": self.updated,
        }

    def update(self, **fields: Any) -> None:
        """Change fields (event loop thread only) and wake every watcher."""
        for name, value in fields.items():
            setattr(self, name, value)
        self.updated = time.time()
        self.version += 1
        # A fresh event per change: every watcher waiting on the old one wakes exactly once.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def update_threadsafe(self, **fields: Any) -> None:
        """Like :meth:`update`, from a worker thread."""
        # RuntimeError: the loop closed (server shutdown); nobody is left to watch the job.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(lambda: self.update(**fields))

    async def wait_changed(self, seen_version: int, timeout: float) -> None:
        """Return once the job changed after ``seen_version``, or after ``timeout`` seconds."""
        if self.version != seen_version:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    async def wait(self) -> None:
        """Wait until the job has finished (done or error)."""
        while not self.finished:
            await self.wait_changed(self.version, 60.0)


Runner = Callable[[Job], Awaitable[dict[str, Any]]]


class JobBusyError(TfenvError):
    """A job with the same key runs already; ``job`` is that job."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"A {job.kind} of {job.image} is running already (job {job.id}).")
        self.job = job


class JobManager:
    """Starts jobs, keeps their state (the most recent ``keep`` finished ones too)."""

    def __init__(self, keep: int = 100) -> None:
        self._jobs: dict[str, Job] = {}
        self._keep = keep

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        return sorted(self._jobs.values(), key=lambda job: job.created)

    def running(self, key: str) -> Job | None:
        """The unfinished job holding ``key``, if any."""
        for job in self._jobs.values():
            if job.key == key and not job.finished:
                return job
        return None

    def start(self, kind: str, image: str, key: str, runner: Runner) -> Job:
        """Start ``runner`` as a job; raise :class:`JobBusyError` if ``key`` is taken."""
        busy = self.running(key)
        if busy is not None:
            raise JobBusyError(busy)
        job = Job(kind, image, key)
        self._jobs[job.id] = job
        job.task = asyncio.create_task(self._run(job, runner), name=f"tfenv-{kind}-{job.id}")
        self._forget_old()
        return job

    async def _run(self, job: Job, runner: Runner) -> None:
        try:
            result = await runner(job)
        except asyncio.CancelledError:
            job.update(status="error", error="The server stopped before the job finished.")
            raise
        except TfenvError as error:
            log.warning("%s job %s for %s failed: %s", job.kind, job.id, job.image, error)
            job.update(status="error", error=str(error), message=str(error))
        except Exception as error:
            log.exception("%s job %s for %s failed", job.kind, job.id, job.image)
            text = f"Unexpected error: {error}. See the server log for details."
            job.update(status="error", error=text, message=text)
        else:
            log.info("%s job %s for %s done", job.kind, job.id, job.image)
            job.update(status="done", result=result)

    def _forget_old(self) -> None:
        finished = [job for job in self.all() if job.finished]
        for job in finished[: max(0, len(finished) - self._keep)]:
            del self._jobs[job.id]

    async def watch(self, job: Job, interval: float = 0.2) -> AsyncIterator[dict[str, Any]]:
        """Yield the job's state now and after each change (at most every ``interval`` s)."""
        seen = -1
        while True:
            if job.version != seen:
                seen = job.version
                yield job.to_dict()
            if job.finished:
                return
            await job.wait_changed(seen, 15.0)
            if job.version == seen:
                # Nothing changed for a while: let the caller send a keep-alive.
                yield {}
                continue
            # Progress messages come in bursts; send the latest state, not every step.
            await asyncio.sleep(interval)

    async def stop(self) -> None:
        """Cancel the jobs that still run (server shutdown)."""
        tasks = []
        for job in self._jobs.values():
            if job.task is not None and not job.task.done():
                job.cancel_requested = True
                tasks.append(job.task)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
