"""Fixtures for kernels in real containers: kernelspecs in a private prefix, managers, clients."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import pytest_asyncio
from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager

from jupyter_tfenv.engine import LABEL_KERNEL_ID, LABEL_OWNER, remove_container_id
from jupyter_tfenv.kernelspecs import install_kernelspec


@pytest.fixture
def owner_env(tfenv_run_label: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every container the product creates in this test carries this run's owner label."""
    monkeypatch.setenv("TFENV_OWNER_LABEL", tfenv_run_label)
    return tfenv_run_label


@pytest.fixture
def kernels_prefix(tmp_path: Path) -> Path:
    return tmp_path / "prefix"


@pytest.fixture
def kernelspec_manager(kernels_prefix: Path) -> KernelSpecManager:
    kernels = kernels_prefix / "share" / "jupyter" / "kernels"
    kernels.mkdir(parents=True, exist_ok=True)
    return KernelSpecManager(kernel_dirs=[str(kernels)])


@pytest.fixture
def make_spec(
    kernels_prefix: Path, kernelspec_manager: KernelSpecManager, owner_env: str
) -> Callable[..., str]:
    """Install a tfenv kernelspec for ``image`` with extra provisioner settings; return its name."""
    counter = iter(range(1000))

    def make(image: str, name: str = "", **config: Any) -> str:
        name = name or f"tfenv-test-{next(counter)}"
        install_kernelspec(
            image,
            name=name,
            user=False,
            prefix=str(kernels_prefix),
            gpus=config.pop("gpus", "none"),
            extra_config=config,
            manager=kernelspec_manager,
        )
        return name

    return make


@pytest.fixture
def notebook_dir(tmp_path: Path) -> Path:
    path = tmp_path / "notebooks"
    path.mkdir()
    return path


class RunningKernel:
    """A started kernel with its connected client, as a notebook front end would hold them."""

    def __init__(self, manager: AsyncKernelManager, client: AsyncKernelClient) -> None:
        self.manager = manager
        self.client = client

    @property
    def container_id(self) -> str:
        container_id = self.manager.provisioner.container_id  # type: ignore[union-attr]
        assert container_id
        return str(container_id)

    async def run(self, code: str, timeout: float = 60) -> dict[str, Any]:
        """Execute ``code``; return stdout text, the reply status and any error name."""
        stdout: list[str] = []
        results: list[str] = []

        def collect(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
                stdout.append(msg["content"]["text"])
            elif msg["msg_type"] == "execute_result":
                results.append(msg["content"]["data"].get("text/plain", ""))

        reply = await self.client.execute_interactive(
            code, timeout=timeout, output_hook=collect, allow_stdin=False
        )
        return {
            "status": reply["content"]["status"],
            "ename": reply["content"].get("ename"),
            "stdout": "".join(stdout),
            "result": "".join(results),
        }


@pytest_asyncio.fixture
async def start_kernel(
    kernelspec_manager: KernelSpecManager,
    notebook_dir: Path,
    docker_client: docker.DockerClient,
    owner_env: str,
) -> AsyncIterator[Callable[..., Any]]:
    """Start kernels from kernelspecs; shut them down and sweep this run's containers after."""
    started: list[RunningKernel] = []

    async def start(name: str, cwd: Path | None = None) -> RunningKernel:
        manager = AsyncKernelManager(kernel_name=name, kernel_spec_manager=kernelspec_manager)
        await manager.start_kernel(cwd=str(cwd or notebook_dir))
        client = manager.client()
        client.start_channels()
        kernel = RunningKernel(manager, client)
        started.append(kernel)
        await client.wait_for_ready(timeout=120)
        return kernel

    yield start

    for kernel in started:
        kernel.client.stop_channels()
        if kernel.manager.has_kernel:
            await kernel.manager.shutdown_kernel(now=True)
    sweep(docker_client, owner_env)


def sweep(client: docker.DockerClient, owner: str) -> None:
    for summary in client.api.containers(all=True, filters={"label": f"{LABEL_OWNER}={owner}"}):
        remove_container_id(client, summary["Id"])


def containers_of(client: docker.DockerClient, kernel_id: str) -> list[Any]:
    """All containers (running or not) labelled with this kernel id."""
    return client.containers.list(
        all=True, filters={"label": f"{LABEL_KERNEL_ID}={kernel_id}"}, ignore_removed=True
    )


def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@pytest.fixture
def clean_env() -> Iterator[None]:
    """A server environment that holds secrets, to prove none reach the container."""
    secrets = {"JUPYTER_TOKEN": "server-token-do-not-leak", "AWS_SECRET_ACCESS_KEY": "s3cr3t"}
    old = {name: os.environ.get(name) for name in secrets}
    os.environ.update(secrets)
    yield
    for name, value in old.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
