"""REST handlers under ``{base_url}tfenv/api/`` (the contract is docs/rest-api.md).

Every verb is ``@web.authenticated`` and ``@authorized`` with the resource "tfenv", and
unsafe verbs pass jupyter_server's XSRF check. Request bodies are validated here: a bad one
gets a 400 whose JSON names the field, never a 500.
"""

from __future__ import annotations

import json
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.iostream import StreamClosedError

from .._version import __version__
from ..errors import TfenvError
from ..gpus import parse_gpus
from ..imagename import check_image_reference
from ..jobs import JobBusyError
from .service import NotTfenvKernelError, TfenvService

EXTENSION_NAME = "jupyter_tfenv"
_KERNEL_ID = r"(?P<kernel_id>[\w-]+)"
_JOB_ID = r"(?P<job_id>[0-9a-f]+)"


class FieldError(web.HTTPError):
    """A 400 that names the request field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(400, message)
        self.field = field
        self.message = message


class TfenvHandler(ExtensionHandlerMixin, APIHandler):  # type: ignore[misc]
    """Base of every tfenv handler: authorization resource, service access, JSON errors."""

    auth_resource = "tfenv"

    @property
    def service(self) -> TfenvService:
        service: TfenvService = self.settings["tfenv_service"]
        service.ensure_started()
        return service

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """JSON errors as jupyter_server writes them, plus "field" for a bad request field."""
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, FieldError):
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"message": error.message, "field": error.field}))
            return
        super().write_error(status_code, **kwargs)

    def body_object(self) -> dict[str, Any]:
        """The request body as a JSON object, or a 400 saying what is wrong with it."""
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError as error:
            raise FieldError("body", f"The request body is not valid JSON: {error}.") from error
        except RecursionError as error:
            raise FieldError("body", "The request body nests too deeply to be read.") from error
        if not isinstance(body, dict):
            raise FieldError("body", "The request body must be a JSON object.")
        return body

    def image_field(self, body: dict[str, Any], required: bool = True) -> str | None:
        value = body.get("image")
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value.strip():
            raise FieldError(
                "image",
                "Field 'image' must be an image name such as 'tensorflow/tensorflow:2.21.0'.",
            )
        try:
            check_image_reference(value.strip())
        except ValueError as error:
            raise FieldError("image", str(error)) from error
        return value.strip()

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    def kernel_or_404(self, kernel_id: str) -> None:
        try:
            self.service.tfenv_kernel(kernel_id)
        except KeyError as error:
            raise web.HTTPError(404, f"No kernel with id {kernel_id}.") from error
        except NotTfenvKernelError as error:
            raise web.HTTPError(404, str(error)) from error


class VersionHandler(TfenvHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        """The server extension's version, for the front end's mismatch check."""
        self.write_json({"version": __version__})


class ImagesHandler(TfenvHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        """Local TensorFlow images, and the tags the registry offers (unless ?registry=0)."""
        flag = self.get_query_argument("registry", "1").strip().lower()
        if flag not in ("0", "1", "false", "true", "no", "yes"):
            raise FieldError("registry", f"Query 'registry' must be 0 or 1, not {flag!r}.")
        self.write_json(await self.service.images_model(flag in ("1", "true", "yes")))


class PullsHandler(TfenvHandler):
    @web.authenticated
    @authorized
    async def post(self) -> None:
        """Start pulling an image: 202 with the job; 409 with the running job if busy."""
        image = self.image_field(self.body_object())
        assert image is not None
        try:
            job = self.service.start_pull(image)
        except JobBusyError as busy:
            self.write_json(busy.job.to_dict(), 409)
            return
        self.write_json(job.to_dict(), 202)


class PreparesHandler(TfenvHandler):
    @web.authenticated
    @authorized
    async def post(self) -> None:
        """Start building a kernel-ready image; a prepare of the same image is joined."""
        image = self.image_field(self.body_object())
        assert image is not None
        self.write_json(self.service.start_prepare(image).to_dict(), 202)


class JobsHandler(TfenvHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        """Every job this server knows, oldest first."""
        self.write_json([job.to_dict() for job in self.service.jobs.all()])


class JobHandler(TfenvHandler):
    @web.authenticated
    @authorized
    async def get(self, job_id: str) -> None:
        """One job."""
        job = self.service.jobs.get(job_id)
        if job is None:
            raise web.HTTPError(404, f"No job with id {job_id}.")
        self.write_json(job.to_dict())


class JobEventsHandler(TfenvHandler):
    @web.authenticated
    @authorized
    async def get(self, job_id: str) -> None:
        """Server-Sent Events: the job now and after each change; ends with the job.

        A client that goes away stops only this stream: the job runs on.
        """
        job = self.service.jobs.get(job_id)
        if job is None:
            raise web.HTTPError(404, f"No job with id {job_id}.")
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        # Proxies such as nginx would otherwise buffer the stream.
        self.set_header("X-Accel-Buffering", "no")
        try:
            async for state in self.service.jobs.watch(job):
                if state:
                    self.write(f"data: {json.dumps(state)}\n\n")
                else:
                    self.write(": keep-alive\n\n")
                await self.flush()
        except StreamClosedError:
            self.log.debug("Client stopped watching job %s; the job goes on", job_id)
            return
        self.finish()


class KernelsHandler(TfenvHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        """Every running kernel that runs in a tfenv container."""
        self.write_json(await self.service.kernel_models())


class KernelHandler(TfenvHandler):
    @web.authenticated
    @authorized
    async def get(self, kernel_id: str) -> None:
        """One tfenv kernel."""
        self.kernel_or_404(kernel_id)
        self.write_json(await self.service.kernel_model(kernel_id))


class SwitchHandler(TfenvHandler):
    @web.authenticated
    @authorized
    async def post(self, kernel_id: str) -> None:
        """Move a kernel to another image and/or GPU setting: 202 with the switch job."""
        self.kernel_or_404(kernel_id)
        body = self.body_object()
        unknown = sorted(set(body) - {"image", "gpus"})
        if unknown:
            raise FieldError(
                unknown[0], f"Unknown field {unknown[0]!r}: a switch takes 'image' and 'gpus'."
            )
        image = self.image_field(body, required=False)
        gpus = body.get("gpus")
        if gpus is not None:
            if isinstance(gpus, bool) or not isinstance(gpus, (str, int)):
                raise FieldError(
                    "gpus", 'Field \'gpus\' must be a string such as "all" or "none", or a count.'
                )
            try:
                parse_gpus(gpus)
            except ValueError as error:
                raise FieldError("gpus", str(error)) from error
        if image is None and gpus is None:
            raise FieldError("image", "Give 'image', 'gpus' or both: nothing to switch to.")
        try:
            job = self.service.start_switch(kernel_id, image, gpus)
        except JobBusyError as busy:
            self.write_json(busy.job.to_dict(), 409)
            return
        except TfenvError as error:
            raise web.HTTPError(400, str(error)) from error
        self.write_json(job.to_dict(), 202)


def handler_routes() -> list[tuple[str, type[TfenvHandler]]]:
    """The extension's routes below the server's base URL, in one place for the tests."""
    api = url_path_join("tfenv", "api")
    return [
        (url_path_join(api, "version"), VersionHandler),
        (url_path_join(api, "images"), ImagesHandler),
        (url_path_join(api, "pulls"), PullsHandler),
        (url_path_join(api, "prepares"), PreparesHandler),
        (url_path_join(api, "jobs"), JobsHandler),
        (url_path_join(api, "jobs", _JOB_ID), JobHandler),
        (url_path_join(api, "jobs", _JOB_ID, "events"), JobEventsHandler),
        (url_path_join(api, "kernels"), KernelsHandler),
        (url_path_join(api, "kernels", _KERNEL_ID), KernelHandler),
        (url_path_join(api, "kernels", _KERNEL_ID, "switch"), SwitchHandler),
    ]
