"""Load (issue 6): many kernels at once, hundreds of start/stop cycles, a thousand executions.

All on the small kernel image and the shared engine, with jupyter_client's own
AsyncMultiKernelManager (what jupyter_server uses), so one kernel-manager factory makes every
kernel. Each test bounds its time and ends with nothing of this run left on the engine.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import docker
import pytest
import pytest_asyncio
from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.multikernelmanager import AsyncMultiKernelManager

from jupyter_tfenv.container import PORT_NAMES

from .conftest import owned_containers, owned_volumes

pytestmark = [pytest.mark.engine, pytest.mark.asyncio]


@pytest.fixture
def runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private Jupyter runtime dir, so leftovers (run dirs, connection files) are countable."""
    path = tmp_path / "runtime"
    path.mkdir()
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(path))
    return path


@pytest_asyncio.fixture
async def kernels(
    kernelspec_manager: KernelSpecManager, runtime_dir: Path
) -> AsyncIterator[AsyncMultiKernelManager]:
    """One kernel-manager factory for every kernel of a test, as in jupyter_server."""
    manager = AsyncMultiKernelManager(kernel_spec_manager=kernelspec_manager)
    yield manager
    # What a failed test left running goes; after a passing test there is nothing left.
    await manager.shutdown_all(now=True)


def host_ports(manager: AsyncMultiKernelManager, kernel_id: str) -> list[int]:
    km = manager.get_kernel(kernel_id)
    return [int(getattr(km, name)) for name in PORT_NAMES]


def leftovers(runtime_dir: Path) -> list[str]:
    """Run dirs and connection files left in the runtime dir (the image facts cache stays)."""
    return sorted(p.name for p in runtime_dir.iterdir() if p.name != "tfenv-image-facts.json")


async def ready_client(manager: AsyncMultiKernelManager, kernel_id: str) -> AsyncKernelClient:
    # An AsyncKernelManager's client is async; get_kernel is typed for any manager.
    client = cast(AsyncKernelClient, manager.get_kernel(kernel_id).client())
    client.start_channels()
    await client.wait_for_ready(timeout=120)
    return client


async def test_20_kernels_started_at_once_are_ready_on_distinct_loopback_ports(
    kernel_image: str,
    make_spec: Callable[..., str],
    kernels: AsyncMultiKernelManager,
    notebook_dir: Path,
    runtime_dir: Path,
    docker_client: docker.DockerClient,
    owner_env: str,
) -> None:
    name = make_spec(kernel_image, network="loopback")
    volumes_before = set(owned_volumes(docker_client, owner_env))
    started = time.monotonic()
    ids = await asyncio.gather(
        *(kernels.start_kernel(kernel_name=name, cwd=str(notebook_dir)) for _ in range(20))
    )
    clients = await asyncio.gather(*(ready_client(kernels, kernel_id) for kernel_id in ids))
    assert time.monotonic() - started < 120

    ports = [port for kernel_id in ids for port in host_ports(kernels, kernel_id)]
    assert len(set(ports)) == 20 * len(PORT_NAMES)
    containers = owned_containers(docker_client, owner_env)
    assert len(containers) == 20
    for summary in containers:
        assert {p["IP"] for p in summary["Ports"]} == {"127.0.0.1"}
    replies = await asyncio.gather(*(client.kernel_info(reply=True) for client in clients))
    assert {reply["content"]["status"] for reply in replies} == {"ok"}

    for client in clients:
        client.stop_channels()
    await kernels.shutdown_all()
    assert owned_containers(docker_client, owner_env, role=None) == []
    # The 20 kernels of one kernelspec share its HOME volume: one, created once (or reused).
    new_volumes = set(owned_volumes(docker_client, owner_env)) - volumes_before
    assert new_volumes <= {f"tfenv-home-{name}"}
    assert leftovers(runtime_dir) == []


@pytest.mark.slow
async def test_200_start_stop_cycles_leak_nothing_and_ports_never_collide(
    kernel_image: str,
    make_spec: Callable[..., str],
    kernels: AsyncMultiKernelManager,
    notebook_dir: Path,
    runtime_dir: Path,
    docker_client: docker.DockerClient,
    owner_env: str,
) -> None:
    # Four users opening and closing notebooks side by side; every tenth kernel is used and
    # shut down politely, the rest are shut down at once (closing a tab right after opening).
    name = make_spec(kernel_image, network="loopback", home_volume="")
    cycle = itertools.count()
    ports_in_order: list[list[int]] = []
    live: dict[str, list[int]] = {}
    fds_before = len(os.listdir("/proc/self/fd"))
    volumes_before = owned_volumes(docker_client, owner_env)

    async def user() -> None:
        for _ in range(50):
            number = next(cycle)
            kernel_id = await kernels.start_kernel(kernel_name=name, cwd=str(notebook_dir))
            ports = host_ports(kernels, kernel_id)
            for other in live.values():
                assert not set(ports) & set(other), "ports of two live kernels collide"
            live[kernel_id] = ports
            ports_in_order.append(ports)
            if number % 10 == 0:
                client = await ready_client(kernels, kernel_id)
                client.stop_channels()
                await kernels.shutdown_kernel(kernel_id, now=False)
            else:
                await kernels.shutdown_kernel(kernel_id, now=True)
            del live[kernel_id]

    started = time.monotonic()
    await asyncio.gather(*(user() for _ in range(4)))
    took = time.monotonic() - started

    assert len(ports_in_order) == 200
    assert all(len(set(ports)) == len(PORT_NAMES) for ports in ports_in_order)
    # Case B08: the engine picks host ports, so 50 consecutive kernels never reuse one.
    first_50 = [port for ports in ports_in_order[:50] for port in ports]
    assert len(set(first_50)) == len(first_50)
    assert owned_containers(docker_client, owner_env, role=None) == []
    assert owned_volumes(docker_client, owner_env) == volumes_before
    assert leftovers(runtime_dir) == []
    # Sockets of stopped kernels are closed (a little slack for the engine client's pool).
    assert len(os.listdir("/proc/self/fd")) <= fds_before + 40
    assert took < 300, f"200 cycles took {took:.0f} s"


async def test_1000_executions_over_10_kernels_lose_and_cross_no_message(
    kernel_image: str,
    make_spec: Callable[..., str],
    kernels: AsyncMultiKernelManager,
    notebook_dir: Path,
    docker_client: docker.DockerClient,
    owner_env: str,
) -> None:
    name = make_spec(kernel_image, home_volume="")
    ids = await asyncio.gather(
        *(kernels.start_kernel(kernel_name=name, cwd=str(notebook_dir)) for _ in range(10))
    )
    clients = await asyncio.gather(*(ready_client(kernels, kernel_id) for kernel_id in ids))

    async def hammer(index: int, client: AsyncKernelClient) -> dict[str, Any]:
        # All 100 requests are queued before any reply is read: replies and outputs must be
        # told apart by their parent message id alone.
        expected: dict[str, str] = {}
        for number in range(100):
            token = f"k{index}-{number}-{secrets.token_hex(6)}"
            expected[client.execute(f"print({token!r})\n{token!r}")] = token
        statuses: dict[str, str] = {}
        while len(statuses) < len(expected):
            reply = await client.get_shell_msg(timeout=60)
            parent = reply["parent_header"]["msg_id"]
            if parent in expected:
                statuses[parent] = reply["content"]["status"]
            else:
                # Answers to wait_for_ready's own requests; nothing else may come.
                assert reply["msg_type"] == "kernel_info_reply", reply
        printed: dict[str, list[str]] = defaultdict(list)
        results: dict[str, list[str]] = defaultdict(list)
        idle: set[str] = set()
        strangers: list[str] = []
        while len(idle) < len(expected):
            msg = await client.get_iopub_msg(timeout=60)
            parent = msg["parent_header"].get("msg_id", "")
            kind = msg["msg_type"]
            if parent not in expected:
                if kind in ("stream", "execute_result", "error"):
                    strangers.append(str(msg["content"]))
                continue
            if kind == "stream":
                printed[parent].append(msg["content"]["text"])
            elif kind == "execute_result":
                results[parent].append(msg["content"]["data"]["text/plain"])
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                idle.add(parent)
        return {
            "expected": expected,
            "statuses": statuses,
            "printed": {key: "".join(value) for key, value in printed.items()},
            "results": dict(results),
            "strangers": strangers,
        }

    started = time.monotonic()
    outcomes = await asyncio.gather(*(hammer(i, c) for i, c in enumerate(clients)))
    assert time.monotonic() - started < 120

    all_tokens: list[str] = []
    for outcome in outcomes:
        expected = outcome["expected"]
        assert outcome["statuses"] == dict.fromkeys(expected, "ok")
        assert outcome["printed"] == {msg_id: f"{token}\n" for msg_id, token in expected.items()}
        assert outcome["results"] == {msg_id: [repr(token)] for msg_id, token in expected.items()}
        # No output of any request but this client's own arrived here.
        assert outcome["strangers"] == []
        all_tokens.extend(expected.values())
    assert len(set(all_tokens)) == 1000

    for client in clients:
        client.stop_channels()
    await kernels.shutdown_all()
    assert owned_containers(docker_client, owner_env, role=None) == []
