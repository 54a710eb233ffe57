"""The same kernelspec run by clients that ignore provisioners and execute its argv."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest
from jupyter_client.kernelspec import KernelSpecManager

from .conftest import wait_until

pytestmark = [pytest.mark.engine, pytest.mark.asyncio]


@pytest.fixture
def argv_only_spec(
    kernel_image: str,
    make_spec: Callable[..., str],
    kernelspec_manager: KernelSpecManager,
    tmp_path: Path,
) -> KernelSpecManager:
    """A kernelspec as a provisioner-less client sees it: only argv counts.

    The copy drops the provisioner metadata so jupyter_client falls back to running argv, which
    still points at the original kernelspec directory for the container settings.
    """
    name = make_spec(kernel_image)
    spec_dir = Path(kernelspec_manager.find_kernel_specs()[name])
    data = json.loads((spec_dir / "kernel.json").read_text())
    del data["metadata"]["kernel_provisioner"]
    plain = tmp_path / "plain-kernels" / "argv-kernel"
    plain.mkdir(parents=True)
    (plain / "kernel.json").write_text(json.dumps(data))
    return KernelSpecManager(kernel_dirs=[str(plain.parent)])


async def test_argv_kernel_executes_interrupts_and_cleans_up(
    argv_only_spec: KernelSpecManager,
    notebook_dir: Path,
    docker_client: docker.DockerClient,
    owner_env: str,
) -> None:
    from jupyter_client.manager import AsyncKernelManager

    from .conftest import RunningKernel, sweep

    manager = AsyncKernelManager(kernel_name="argv-kernel", kernel_spec_manager=argv_only_spec)
    try:
        await manager.start_kernel(cwd=str(notebook_dir))
        assert type(manager.provisioner).__name__ == "LocalProvisioner"
        client = manager.client()
        client.start_channels()
        await client.wait_for_ready(timeout=60)
        kernel = RunningKernel(manager, client)
        owned = {"label": f"org.jupyter-tfenv.owner={owner_env}"}
        [container] = docker_client.containers.list(filters=owned)

        out = await kernel.run("import os; x = 20; print(os.getcwd())")
        assert out["stdout"].strip() == str(notebook_dir)

        running = asyncio.ensure_future(kernel.run("while True: pass", timeout=30))
        await asyncio.sleep(1.0)
        interrupted_at = time.monotonic()
        await manager.interrupt_kernel()
        assert (await running)["ename"] == "KeyboardInterrupt"
        assert time.monotonic() - interrupted_at < 1.0
        assert (await kernel.run("x + 1"))["result"] == "21"
        assert docker_client.containers.list(filters=owned)[0].id == container.id

        client.stop_channels()
        await manager.shutdown_kernel()
        assert wait_until(lambda: not docker_client.containers.list(all=True, filters=owned))
    finally:
        if manager.has_kernel:
            await manager.shutdown_kernel(now=True)
        sweep(docker_client, owner_env)


async def test_container_is_removed_when_the_launcher_is_killed(
    argv_only_spec: KernelSpecManager,
    notebook_dir: Path,
    docker_client: docker.DockerClient,
    owner_env: str,
) -> None:
    from jupyter_client.manager import AsyncKernelManager

    from .conftest import sweep

    manager = AsyncKernelManager(kernel_name="argv-kernel", kernel_spec_manager=argv_only_spec)
    owned = {"label": f"org.jupyter-tfenv.owner={owner_env}"}
    try:
        await manager.start_kernel(cwd=str(notebook_dir))
        client = manager.client()
        client.start_channels()
        await client.wait_for_ready(timeout=60)
        client.stop_channels()
        assert len(docker_client.containers.list(filters=owned)) == 1

        # SIGKILL cannot be caught: the watchdog process notices and removes the container.
        launcher_pid: Any = manager.provisioner.pid  # type: ignore[union-attr]
        os.kill(launcher_pid, signal.SIGKILL)
        assert wait_until(lambda: not docker_client.containers.list(all=True, filters=owned))
    finally:
        if manager.has_kernel:
            await manager.shutdown_kernel(now=True)
        sweep(docker_client, owner_env)


CLIENT_SCRIPT = """
import asyncio, sys
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager

async def main():
    manager = AsyncKernelManager(
        kernel_name="argv-kernel", kernel_spec_manager=KernelSpecManager(kernel_dirs=[sys.argv[1]])
    )
    await manager.start_kernel(cwd=sys.argv[2])
    client = manager.client()
    client.start_channels()
    await client.wait_for_ready(timeout=60)
    print("ready", flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


async def test_container_is_removed_when_the_client_goes_away(
    argv_only_spec: KernelSpecManager,
    notebook_dir: Path,
    docker_client: docker.DockerClient,
    owner_env: str,
) -> None:
    """A console-like client killed without shutting its kernel down leaves no container."""
    import subprocess
    import sys

    from .conftest import sweep

    owned = {"label": f"org.jupyter-tfenv.owner={owner_env}"}
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT_SCRIPT, argv_only_spec.kernel_dirs[0], str(notebook_dir)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert client.stdout is not None
        assert client.stdout.readline().strip() == "ready"
        assert len(docker_client.containers.list(filters=owned)) == 1
        client.kill()
        client.wait(timeout=10)
        assert wait_until(
            lambda: not docker_client.containers.list(all=True, filters=owned), timeout=20
        )
    finally:
        if client.poll() is None:
            client.kill()
        sweep(docker_client, owner_env)
