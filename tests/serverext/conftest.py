"""Fixtures of the server extension tests: a loopback registry, test images, a real server.

Every image these tests create is named under this run's namespace (``tfenv-test-<hash>/...``,
or ``127.0.0.1:<port>/tfenv-test-<hash>/...``) or carries this run's owner label, and is removed
at the end of the session; nothing else on the shared engine is touched. The server under test
is pytest-jupyter's ``jp_serverapp`` with the extension enabled and every registry setting
pointing at loopback.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import tarfile
import time
from collections.abc import Iterator
from typing import Any

import docker
import docker.errors
import pytest

# pytest-jupyter's fixtures (jp_serverapp, jp_fetch, ...) and its hooks that run these async
# tests on the server's event loop, for this directory only: other test folders use
# pytest-asyncio's strict mode unchanged.
from pytest_jupyter.jupyter_server import *  # noqa: F403
from traitlets.config import Config

from .registry_helpers import LocalRegistry, RegistryFront

OWNER_LABEL = "org.jupyter-tfenv.owner"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "tfenv(**settings): TfenvImages settings for the server under test"
    )
    config.addinivalue_line(
        "markers", "tfenv_app(**settings): TfenvExtensionApp settings for the server under test"
    )


@pytest.fixture(scope="session")
def ns(tfenv_run_label: str) -> str:
    """This run's image namespace, e.g. "tfenv-test-1a2b3c4d"."""
    return "tfenv-test-" + hashlib.sha1(tfenv_run_label.encode()).hexdigest()[:8]


@pytest.fixture(scope="session")
def registry() -> Iterator[LocalRegistry]:
    """A real docker-registry on a free loopback port, for the whole session."""
    server = LocalRegistry()
    yield server
    server.stop()


class ImageKit:
    """Creates this run's test images and removes exactly those at the end."""

    def __init__(self, client: docker.DockerClient, run_label: str) -> None:
        self.client = client
        self.run_label = run_label
        self.refs: list[str] = []

    def remember(self, ref: str) -> str:
        if ref not in self.refs:
            self.refs.append(ref)
        return ref

    def tag(self, source: str, ref: str) -> str:
        repository, tag = ref.rsplit(":", 1)
        self.client.api.tag(source, repository, tag)
        return self.remember(ref)

    def tiny(self, ref: str, megabytes: int = 4, labels: dict[str, str] | None = None) -> str:
        """An image of one layer of random bytes (no Python), built by import."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            data = os.urandom(megabytes * 1_000_000)
            info = tarfile.TarInfo("blob.bin")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        all_labels = {OWNER_LABEL: self.run_label, **(labels or {})}
        changes = [f"LABEL {key}={value}" for key, value in all_labels.items()]
        repository, tag = ref.rsplit(":", 1)
        self.client.api.import_image_from_data(
            buffer.getvalue(), repository=repository, tag=tag, changes=changes
        )
        return self.remember(ref)

    def derive(self, source: str, ref: str, labels: dict[str, str]) -> str:
        """``source`` with extra labels (a build without RUN: no network, well under a second)."""
        all_labels = {OWNER_LABEL: self.run_label, **labels}
        dockerfile = f"FROM {source}\n" + "".join(
            f"LABEL {key}={json.dumps(value)}\n" for key, value in all_labels.items()
        )
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            data = dockerfile.encode()
            info = tarfile.TarInfo("Dockerfile")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        buffer.seek(0)
        self.client.images.build(fileobj=buffer, custom_context=True, tag=ref, rm=True)
        return self.remember(ref)

    def push(self, ref: str) -> None:
        for event in self.client.api.push(ref, stream=True, decode=True):
            if event.get("error"):
                raise RuntimeError(f"push of {ref} failed: {event['error']}")

    def remove(self, ref: str) -> None:
        # A probe container of a server that is shutting down may hold the image a moment.
        for attempt in range(20):
            try:
                self.client.api.remove_image(ref, noprune=False)
                return
            except docker.errors.ImageNotFound:
                return
            except docker.errors.APIError as error:
                if error.status_code == 404:
                    return
                if error.status_code != 409 or attempt == 19:
                    raise
                time.sleep(0.5)

    def exists(self, ref: str) -> bool:
        try:
            self.client.api.inspect_image(ref)
        except docker.errors.ImageNotFound:
            return False
        return True

    def cleanup(self) -> None:
        failures: list[str] = []
        refs = list(reversed(self.refs))
        # Prepared images the product built for this run (owner label), under any name.
        owned = self.client.images.list(filters={"label": f"{OWNER_LABEL}={self.run_label}"})
        for image in owned:
            refs.extend(image.tags)
            refs.append(image.id)
        for ref in refs:
            try:
                self.remove(ref)
            except docker.errors.APIError as error:
                failures.append(f"{ref}: {error}")
        assert not failures, f"could not remove test images: {failures}"


@pytest.fixture(scope="session")
def made_images(docker_client: docker.DockerClient, tfenv_run_label: str) -> Iterator[ImageKit]:
    """Test images of this run; all removed at the end of the session."""
    images = ImageKit(docker_client, tfenv_run_label)
    yield images
    images.cleanup()


@pytest.fixture(scope="session")
def remote_tf(made_images: ImageKit, registry: LocalRegistry, ns: str) -> str:
    """Repository in the loopback registry with tags 2.99.0 and 2.99.1 of a 4 MB image.

    The local copies are removed, so a pull really transfers the layer.
    """
    repository = f"{registry.host}/{ns}/tensorflow"
    for tag in ("2.99.0", "2.99.1"):
        ref = made_images.tiny(f"{repository}:{tag}", labels={"org.tensorflow.version": tag})
        made_images.push(ref)
        made_images.remove(ref)
    return repository


@pytest.fixture
def fresh_remote(made_images: ImageKit, registry: LocalRegistry, ns: str) -> str:
    """Path and tag of a new 4 MB image in the loopback registry (layers unknown locally).

    A repository of its own, so the tag list of ``remote_tf`` stays as it is.
    """
    fresh_remote.count += 1  # type: ignore[attr-defined]
    tag = f"2.98.{fresh_remote.count}"  # type: ignore[attr-defined]
    ref = made_images.tiny(
        f"{registry.host}/{ns}/fresh/tensorflow:{tag}", labels={"org.tensorflow.version": tag}
    )
    made_images.push(ref)
    made_images.remove(ref)
    return f"{ns}/fresh/tensorflow:{tag}"


fresh_remote.count = 0  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def no_ipykernel_image(made_images: ImageKit, image_builder: Any, ns: str) -> str:
    """A small TensorFlow-named image with Python 3 and pip but no ipykernel (Debian based)."""
    source = str(image_builder.ensure("base"))
    return made_images.derive(
        source, f"{ns}/tensorflow:2.99.9", {"org.tensorflow.version": "2.99.9"}
    )


@pytest.fixture
def stall_front(registry: LocalRegistry) -> Iterator[RegistryFront]:
    front = RegistryFront(registry.url, "stall")
    yield front
    front.stop()


@pytest.fixture
def slow_front(registry: LocalRegistry) -> Iterator[RegistryFront]:
    front = RegistryFront(registry.url, "slow")
    yield front
    front.stop()


@pytest.fixture
def token_front(registry: LocalRegistry) -> Iterator[RegistryFront]:
    front = RegistryFront(registry.url, "token")
    yield front
    front.stop()


@pytest.fixture
def tfenv_settings(
    request: pytest.FixtureRequest, registry: LocalRegistry, ns: str, tfenv_run_label: str
) -> dict[str, Any]:
    """TfenvImages settings of the server: loopback only, this run's owner label."""
    settings: dict[str, Any] = {
        "tensorflow_repository": f"{registry.host}/{ns}/tensorflow",
        "registry_mirrors": [],
        "mirror_fallback": False,
        "owner_label": tfenv_run_label,
        "pull_stall_timeout": 30.0,
        "registry_timeout": 5.0,
        "gpu_support": "no",
    }
    marker = request.node.get_closest_marker("tfenv")
    if marker is not None:
        settings.update(marker.kwargs)
    return settings


@pytest.fixture
def jp_server_config(
    request: pytest.FixtureRequest, tfenv_settings: dict[str, Any], tfenv_run_label: str
) -> Config:
    app_settings: dict[str, Any] = {"refresh_interval": 5.0}
    marker = request.node.get_closest_marker("tfenv_app")
    if marker is not None:
        app_settings.update(marker.kwargs)
    return Config(
        {
            "ServerApp": {"jpserver_extensions": {"jupyter_tfenv": True}},
            "TfenvImages": tfenv_settings,
            "TfenvExtensionApp": app_settings,
            # No named home volumes: they are shared by kernelspec name across runs.
            "DockerProvisioner": {"owner_label": tfenv_run_label, "home_volume": ""},
        }
    )


@pytest.fixture
def tfenv_app(jp_serverapp: Any, jp_asyncio_loop: asyncio.AbstractEventLoop) -> Any:
    """The extension app, started as a real server starts it once its event loop runs."""
    point = jp_serverapp.extension_manager.extension_points["jupyter_tfenv"]
    app = point.app
    jp_asyncio_loop.run_until_complete(app._start_jupyter_server_extension(jp_serverapp))
    return app


async def fetch_json(jp_fetch: Any, *parts: str, **kwargs: Any) -> Any:
    response = await jp_fetch(*parts, **kwargs)
    return json.loads(response.body)


async def post_json(jp_fetch: Any, *parts: str, body: Any, **kwargs: Any) -> Any:
    """POST and return (status, JSON), whatever the status."""
    from tornado.httpclient import HTTPClientError

    try:
        response = await jp_fetch(*parts, method="POST", body=json.dumps(body), **kwargs)
    except HTTPClientError as error:
        assert error.response is not None
        return error.code, json.loads(error.response.body)
    return response.code, json.loads(response.body)


async def wait_job(jp_fetch: Any, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
    """Poll a job until it has finished; return its final state."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = await fetch_json(jp_fetch, "tfenv", "api", "jobs", job_id)
        if job["status"] != "running":
            return job
        await asyncio.sleep(0.2)
    raise AssertionError(f"job {job_id} still running after {timeout} s: {job}")


async def wait_for(condition: Any, timeout: float = 20.0, interval: float = 0.2) -> Any:
    """Await ``condition()`` (async) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = await condition()
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s (last value {value!r})")
