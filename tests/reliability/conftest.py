"""Fixtures for fault, load, bad-input and least-privilege tests.

Kernel fixtures (``make_spec``, ``start_kernel`` and what they need) are the ones of
tests/kernels, imported so both suites start kernels the same way. Added here: the private
engine (tests/reliability/private_engine.py), small test images built from recipes under
tests/reliability/images, and real ``jupyter server`` processes with hand-written kernelspecs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import docker
import pytest

from jupyter_tfenv.engine import LABEL_OWNER, LABEL_ROLE
from jupyter_tfenv.kernelspecs import build_kernel_json
from jupyter_tfenv.testing import ServerProcess
from tests.integration.test_devenv_dockerd import mini_rootfs_tar
from tests.kernels import conftest as kernel_fixtures
from tests.kernels.conftest import sweep

from .private_engine import PrivateEngine, shared_private_engine

IMAGES_DIR = Path(__file__).resolve().parent / "images"

# The fixtures of tests/kernels, registered here under their names so pytest finds them.
kernels_prefix = kernel_fixtures.kernels_prefix
kernelspec_manager = kernel_fixtures.kernelspec_manager
make_spec = kernel_fixtures.make_spec
notebook_dir = kernel_fixtures.notebook_dir
owner_env = kernel_fixtures.owner_env
start_kernel = kernel_fixtures.start_kernel


@pytest.fixture(scope="session")
def private_engine(
    pytestconfig: pytest.Config, devenv: ModuleType, docker_client: Any, kernel_image: str
) -> PrivateEngine:
    """A second dockerd of this session, with the kernel image loaded (see private_engine.py)."""
    return shared_private_engine(pytestconfig, devenv, docker_client, kernel_image)


@pytest.fixture
def private_spec(
    private_engine: PrivateEngine, make_spec: Callable[..., str], kernel_image: str
) -> Callable[..., str]:
    """Install a kernelspec whose kernels run on the private engine; return its name.

    Network "none" (IPC), because the private engine's loopback is in its own namespace, and no
    home volume, so nothing but the container is created there.
    """

    def make(**config: Any) -> str:
        config.setdefault("network", "none")
        config.setdefault("home_volume", "")
        return make_spec(kernel_image, docker_host=private_engine.url, **config)

    return make


@pytest.fixture(scope="session")
def test_image(
    docker_client: Any, kernel_image: str, tfenv_run_label: str
) -> Iterator[Callable[[str], str]]:
    """Build a recipe of tests/reliability/images FROM the kernel image; return its name.

    Tagged per run and removed at the end by that tag (images carry no run label sweep).
    """
    built: list[str] = []
    run = hashlib.sha256(tfenv_run_label.encode()).hexdigest()[:10]

    def build(recipe: str) -> str:
        name = f"jupyter-tfenv-test/reliability-{recipe}:{run}"
        if name not in built:
            docker_client.images.build(
                path=str(IMAGES_DIR / recipe),
                tag=name,
                buildargs={"BASE": kernel_image},
                labels={"org.jupyter-tfenv.test-run": tfenv_run_label},
                network_mode="none",
                rm=True,
                forcerm=True,
            )
            built.append(name)
        return name

    yield build
    for name in built:
        with contextlib.suppress(docker.errors.APIError):
            docker_client.images.remove(name, noprune=False)


@pytest.fixture(scope="session")
def no_python_image(docker_client: Any, tfenv_run_label: str) -> Iterator[str]:
    """An image holding only /bin/sh and its libraries: no Python at all."""
    run = hashlib.sha256(tfenv_run_label.encode()).hexdigest()[:10]
    repository = "jupyter-tfenv-test/reliability-no-python"
    docker_client.api.import_image_from_data(
        mini_rootfs_tar(), repository=repository, tag=run, changes=["ENV PATH=/bin"]
    )
    yield f"{repository}:{run}"
    with contextlib.suppress(docker.errors.APIError):
        docker_client.images.remove(f"{repository}:{run}")


@pytest.fixture
def jupyter_server(
    tmp_path: Path, docker_client: docker.DockerClient, owner_env: str
) -> Iterator[Callable[..., ServerProcess]]:
    """Start real ``jupyter server`` processes with the given kernelspecs; stop them after.

    ``start({"name": kernel_json, ...}, extra_env={...}, root=dir)``; build kernel_json with
    :func:`kernel_json` (a tfenv kernelspec with any provisioner config, even a bad one).
    """
    servers: list[ServerProcess] = []

    def start(
        kernelspecs: dict[str, dict[str, Any]],
        extra_env: dict[str, str] | None = None,
        root: Path | None = None,
    ) -> ServerProcess:
        index = len(servers)
        if root is None:
            root = tmp_path / f"work-{index}"
            root.mkdir()
        server = ServerProcess(root, tmp_path / f"jupyter-{index}", extra_env=extra_env)
        for name, spec in kernelspecs.items():
            directory = server.data_dir / "kernels" / name
            directory.mkdir(parents=True)
            (directory / "kernel.json").write_text(json.dumps(spec))
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()
    sweep(docker_client, owner_env)


def kernel_json(image: str, **config: Any) -> dict[str, Any]:
    """A tfenv kernel.json for ``image`` with provisioner ``config`` written as given."""
    gpus = config.pop("gpus", "none")
    spec = build_kernel_json(image, f"Test {image}", extra_config=config)
    # Written raw, so invalid values reach the server as a user's hand-edited file would.
    spec["metadata"]["kernel_provisioner"]["config"]["gpus"] = gpus
    return spec


def owned_containers(
    client: docker.DockerClient, owner: str, role: str | None = "kernel"
) -> list[dict[str, Any]]:
    """Summaries of the containers (running or not) with this owner label value.

    Only kernel containers by default: a server also runs short image probes. ``role=None``
    lists every container of the owner, for checks that nothing at all was left.
    """
    labels = [f"{LABEL_OWNER}={owner}"]
    if role is not None:
        labels.append(f"{LABEL_ROLE}={role}")
    found: list[dict[str, Any]] = client.api.containers(all=True, filters={"label": labels})
    return found


def owned_volumes(client: docker.DockerClient, owner: str) -> list[str]:
    """Names of the volumes with this owner label value."""
    answer = client.api.volumes(filters={"label": f"{LABEL_OWNER}={owner}"}) or {}
    return sorted(volume["Name"] for volume in answer.get("Volumes") or [])
