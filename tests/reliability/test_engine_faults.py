"""The Docker engine stops or restarts under running kernels (private engine, issue 6).

Stopping dockerd stops its containers. A kernel must then be reported dead with a reason that
names the engine, leave no exited container behind once the engine is back, and a restart or a
new kernel must work at once. The shared engine is never touched: see private_engine.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jupyter_tfenv.engine import LABEL_OWNER
from jupyter_tfenv.server_run import ServerSession, execute_cell
from jupyter_tfenv.testing import ServerProcess

from .conftest import kernel_json
from .private_engine import PrivateEngine

pytestmark = [pytest.mark.engine, pytest.mark.asyncio, pytest.mark.slow]


async def wait_dead(manager: Any, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while await manager.is_alive():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.2)
    return True


async def test_engine_restart_under_running_kernels_reports_them_dead_and_leaks_nothing(
    private_engine: PrivateEngine,
    private_spec: Callable[..., str],
    start_kernel: Callable[..., Any],
    notebook_dir: Path,
    owner_env: str,
) -> None:
    standin = bool(private_engine.use(standin=bool(private_engine.standin)).standin)
    name = private_spec()
    idle = await start_kernel(name)
    busy = await start_kernel(name)
    await idle.run("open('notes.txt', 'w').write('written before the engine restart')")
    busy.client.execute("import time; time.sleep(600)")
    await asyncio.sleep(0.5)

    # SIGTERM to dockerd: it stops its containers first, which takes moments thanks to the
    # init process passing the signal to the kernel.
    assert private_engine.stop() < 15
    # While the engine is away the kernels' fate is unknown, so they are not declared dead.
    assert await idle.manager.is_alive()
    private_engine.start(standin=standin)

    reasons = []
    for kernel in (idle, busy):
        assert await wait_dead(kernel.manager)
        reasons.append(kernel.manager.provisioner.last_exit["reason"])
    # The idle kernel was polled while the engine was away, so its reason says so outright;
    # the busy one's exit code alone still points at the engine.
    assert reasons[0].startswith("The Docker engine stopped answering while the kernel ran")
    for reason in reasons:
        assert "exited with code 143 (stopped by SIGTERM: `docker stop`, or the Docker engine" in (
            reason
        )
        assert "Ctrl-C will not work" not in reason
    owner = f"{LABEL_OWNER}={owner_env}"
    assert private_engine.containers(owner) == []

    # A restart brings the kernel back on the same engine: one container, files intact.
    await idle.manager.restart_kernel(now=True)
    await idle.client.wait_for_ready(timeout=60)
    out = await idle.run("print(open('notes.txt').read())")
    assert out["stdout"].strip() == "written before the engine restart"
    fresh = await start_kernel(name)
    assert (await fresh.run("print(6 * 7)"))["stdout"].strip() == "42"
    ids = {c["Id"] for c in private_engine.containers(owner)}
    assert ids == {idle.container_id, fresh.container_id}
    assert (notebook_dir / "notes.txt").read_text() == "written before the engine restart"


async def test_kernel_shut_down_while_the_engine_is_down_is_removed_when_it_returns(
    private_engine: PrivateEngine,
    private_spec: Callable[..., str],
    start_kernel: Callable[..., Any],
    owner_env: str,
) -> None:
    standin = bool(private_engine.use(standin=bool(private_engine.standin)).standin)
    name = private_spec()
    kernel = await start_kernel(name)
    private_engine.stop()

    started = time.monotonic()
    await kernel.manager.shutdown_kernel(now=True)
    # jupyter_client waits 5 s for a kill it cannot confirm, then gives up: no hang, no error.
    assert time.monotonic() - started < 10
    private_engine.start(standin=standin)
    # The stopped container of that kernel is still on the engine, exited; the next start on
    # this engine removes it.
    fresh = await start_kernel(name)
    owner = f"{LABEL_OWNER}={owner_env}"
    assert [c["Id"] for c in private_engine.containers(owner)] == [fresh.container_id]


async def test_engine_restart_under_a_server_kernel_restarts_it_with_files_intact(
    private_engine: PrivateEngine,
    kernel_image: str,
    jupyter_server: Callable[..., ServerProcess],
    owner_env: str,
) -> None:
    standin = bool(private_engine.use(standin=bool(private_engine.standin)).standin)
    spec = kernel_json(kernel_image, docker_host=private_engine.url, network="none", home_volume="")
    server = jupyter_server({"tf": spec})
    session = ServerSession(server.url, server.token)
    kernel = await session.request("POST", "api/kernels", {"name": "tf", "path": ""})
    ws = await session.channels(kernel["id"])
    reply, _ = await execute_cell(ws, "open('data.txt', 'w').write('precious')", 60)
    assert reply["status"] == "ok"
    ws.close()
    owner = f"{LABEL_OWNER}={owner_env}"
    [before] = private_engine.containers(owner)

    private_engine.stop()
    private_engine.start(standin=standin)

    # The server's restarter finds the kernel dead and starts a new container for it.
    deadline = time.monotonic() + 30
    containers: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        containers = private_engine.containers(owner)
        if [c["Id"] for c in containers] != [before["Id"]] and len(containers) == 1:
            break
        await asyncio.sleep(0.3)
    assert len(containers) == 1 and containers[0]["Id"] != before["Id"], server.log()
    # The server log says why the kernel restarted (JupyterLab shows "Kernel Restarting").
    died = [line for line in server.log().splitlines() if f"Kernel {kernel['id']} died" in line]
    assert died and "Docker engine" in died[0], server.log()

    ws = await session.channels(kernel["id"])
    reply, outputs = await execute_cell(ws, "print(open('data.txt').read())", 60)
    ws.close()
    assert reply["status"] == "ok"
    assert [o["text"].strip() for o in outputs] == ["precious"]
    assert (server.root_dir / "data.txt").read_text() == "precious"
    model = await session.request("GET", f"api/kernels/{kernel['id']}")
    assert model["execution_state"] in ("idle", "busy", "starting"), json.dumps(model)
