"""Faults of one kernel (issue 6): its process killed, awkward image entrypoints, a server
killed under it, IPC sockets under a long runtime path.

Each time the user is told what happened, no container or volume is left behind, and the
user's files are intact. The engine's own faults are in test_engine_faults.py; container kills
from outside and out-of-memory kills are in tests/kernels/test_lifecycle.py.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import nbformat
import pytest

from jupyter_tfenv.server_run import ServerSession, execute_cell, run_notebook
from jupyter_tfenv.testing import ServerProcess
from tests.kernels.conftest import containers_of, wait_until

from .conftest import kernel_json, owned_containers, owned_volumes

pytestmark = [pytest.mark.engine, pytest.mark.asyncio]

SIGKILL_REASON = "exited with code 137 (killed by SIGKILL"


async def wait_dead(manager: Any, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while await manager.is_alive():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


@pytest.mark.parametrize("how", ["docker-exec-kill", "os-kill-from-a-cell"])
async def test_kernel_process_killed_inside_its_container_is_reported_and_restarts(
    how: str,
    kernel_image: str,
    make_spec: Callable[..., str],
    start_kernel: Callable[..., Any],
    docker_client: docker.DockerClient,
    notebook_dir: Path,
) -> None:
    kernel = await start_kernel(make_spec(kernel_image))
    out = await kernel.run("import os; open('mine.txt', 'w').write('safe'); print(os.getpid())")
    pid = int(out["stdout"])
    if how == "docker-exec-kill":
        container = docker_client.containers.get(kernel.container_id)
        assert container.exec_run(["sh", "-c", f"kill -9 {pid}"]).exit_code == 0
    else:
        kernel.client.execute("import os; os.kill(os.getpid(), 9)")

    assert await wait_dead(kernel.manager)
    reason = kernel.manager.provisioner.last_exit["reason"]
    assert SIGKILL_REASON in reason
    assert "the kernel process killed inside its container" in reason
    kernel_id = kernel.manager.kernel_id
    assert containers_of(docker_client, kernel_id) == []

    await kernel.manager.restart_kernel(now=True)
    await kernel.client.wait_for_ready(timeout=60)
    assert len(containers_of(docker_client, kernel_id)) == 1
    assert (await kernel.run("print(open('mine.txt').read())"))["stdout"].strip() == "safe"
    assert (notebook_dir / "mine.txt").read_text() == "safe"


async def test_server_restarts_a_kernel_killed_from_a_cell_and_says_why(
    kernel_image: str,
    jupyter_server: Callable[..., ServerProcess],
    docker_client: docker.DockerClient,
    owner_env: str,
) -> None:
    server = jupyter_server({"tf": kernel_json(kernel_image, home_volume="")})
    session = ServerSession(server.url, server.token)
    kernel = await session.request("POST", "api/kernels", {"name": "tf", "path": ""})
    ws = await session.channels(kernel["id"])
    reply, _ = await execute_cell(ws, "open('kept.txt', 'w').write('kept')", 60)
    assert reply["status"] == "ok"
    [before] = owned_containers(docker_client, owner_env)

    await ws.write_message(
        '{"header": {"msg_id": "kill", "msg_type": "execute_request", "username": "t", '
        '"session": "s", "date": "", "version": "5.3"}, "parent_header": {}, "metadata": {}, '
        '"content": {"code": "import os; os.kill(os.getpid(), 9)", "silent": false}, '
        '"channel": "shell", "buffers": []}'
    )
    # The front end is told the kernel is restarting, as for a local kernel that died.
    states: list[str] = []
    deadline = time.monotonic() + 30
    while "restarting" not in states and time.monotonic() < deadline:
        raw = await asyncio.wait_for(ws.read_message(), timeout=30)
        assert raw is not None
        if '"execution_state": "restarting"' in raw:
            states.append("restarting")
    assert states == ["restarting"]

    def replaced() -> bool:
        found = owned_containers(docker_client, owner_env)
        return len(found) == 1 and found[0]["Id"] != before["Id"]

    assert wait_until(replaced, timeout=30), server.log()
    model = await session.request("GET", f"api/kernels/{kernel['id']}")
    assert SIGKILL_REASON in model.get("reason", ""), model
    ws.close()
    ws = await session.channels(kernel["id"])
    reply, outputs = await execute_cell(ws, "print(open('kept.txt').read())", 60)
    ws.close()
    assert [o["text"].strip() for o in outputs] == ["kept"]


@pytest.mark.parametrize("use_image_entrypoint", [True, False], ids=["entrypoint", "direct"])
@pytest.mark.parametrize("recipe", ["entrypoint-noexec", "entrypoint-slow"])
async def test_interrupt_and_shutdown_work_whatever_the_image_entrypoint(
    recipe: str,
    use_image_entrypoint: bool,
    test_image: Callable[[str], str],
    make_spec: Callable[..., str],
    start_kernel: Callable[..., Any],
    docker_client: docker.DockerClient,
) -> None:
    image = test_image(recipe)
    kernel = await start_kernel(
        make_spec(image, use_image_entrypoint=use_image_entrypoint, home_volume="")
    )
    container = docker_client.containers.get(kernel.container_id)
    # Proof of which way the kernel was started: through the script, or around it.
    through_script = "test entrypoint:" in container.logs().decode()
    assert through_script is use_image_entrypoint
    await kernel.run("kept = 41")

    running = asyncio.ensure_future(kernel.run("import time; time.sleep(600)", timeout=30))
    await asyncio.sleep(1.0)
    interrupted_at = time.monotonic()
    await kernel.manager.interrupt_kernel()
    out = await running
    assert out["ename"] == "KeyboardInterrupt"
    assert time.monotonic() - interrupted_at < 2
    assert (await kernel.run("kept + 1"))["result"] == "42"

    started = time.monotonic()
    await kernel.manager.shutdown_kernel(now=False)
    assert time.monotonic() - started < 5
    assert containers_of(docker_client, kernel.manager.kernel_id) == []


@pytest.mark.parametrize("recipe", ["entrypoint-noexec", "entrypoint-slow"])
async def test_docker_stop_ends_a_kernel_behind_an_entrypoint_fast_and_says_so(
    recipe: str,
    test_image: Callable[[str], str],
    make_spec: Callable[..., str],
    start_kernel: Callable[..., Any],
    docker_client: docker.DockerClient,
) -> None:
    # Case B06: a shell entrypoint without exec must not swallow SIGTERM (10 s, then SIGKILL).
    image = test_image(recipe)
    kernel = await start_kernel(make_spec(image, use_image_entrypoint=True, home_volume=""))
    container = docker_client.containers.get(kernel.container_id)

    started = time.monotonic()
    container.stop(timeout=10)
    assert time.monotonic() - started < 3

    assert await wait_dead(kernel.manager)
    reason = kernel.manager.provisioner.last_exit["reason"]
    assert "(stopped by SIGTERM: `docker stop`" in reason
    assert containers_of(docker_client, kernel.manager.kernel_id) == []


async def test_ipc_kernel_starts_under_a_runtime_dir_too_long_for_socket_paths(
    tmp_path: Path,
    kernel_image: str,
    make_spec: Callable[..., str],
    start_kernel: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Unix socket paths end at 107 bytes; jupyter's runtime dir under a long home (or a test
    # tmp dir) plus the kernel id would pass it, and ZeroMQ failed after the container started.
    runtime = tmp_path / ("r" * 60) / "runtime"
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime))
    kernel = await start_kernel(make_spec(kernel_image, network="none", home_volume=""))
    assert (await kernel.run("print(6 * 7)"))["stdout"].strip() == "42"
    run_dir = kernel.manager.provisioner._run_dir
    assert len(str(run_dir / "ipc-99")) <= 107
    await kernel.manager.shutdown_kernel(now=False)
    assert not run_dir.exists()


@pytest.mark.slow
async def test_server_killed_with_kernels_running_leaves_user_files_intact(
    kernel_image: str,
    jupyter_server: Callable[..., ServerProcess],
    docker_client: docker.DockerClient,
    owner_env: str,
) -> None:
    # Extends tests/kernels/test_server.py (containers removed) with what users care about:
    # the notebook, files written by its kernel, and the next server working on them.
    spec = kernel_json(kernel_image)
    first = jupyter_server({"tf": spec})
    # nbformat has no type hints.
    notebook = nbformat.v4.new_notebook()  # type: ignore[no-untyped-call]
    notebook.cells = [
        nbformat.v4.new_code_cell(source)  # type: ignore[no-untyped-call]
        for source in (
            "open('results.csv', 'a').write('1,2\\n')",
            "print(open('results.csv').read().count('1,2'))",
        )
    ]
    nbformat.write(notebook, first.root_dir / "work.ipynb")  # type: ignore[no-untyped-call]
    session = ServerSession(first.url, first.token)
    await run_notebook(session, "work.ipynb", "tf", timeout=120)
    saved = (first.root_dir / "work.ipynb").read_text()
    # Kernels left running, one busy, when the server is killed outright.
    kernel = await session.request("POST", "api/kernels", {"name": "tf", "path": ""})
    ws = await session.channels(kernel["id"])
    await ws.write_message(
        '{"header": {"msg_id": "busy", "msg_type": "execute_request", "username": "t", '
        '"session": "s", "date": "", "version": "5.3"}, "parent_header": {}, "metadata": {}, '
        '"content": {"code": "import time; time.sleep(600)", "silent": false}, '
        '"channel": "shell", "buffers": []}'
    )
    await session.request("POST", "api/kernels", {"name": "tf", "path": ""})
    assert wait_until(lambda: len(owned_containers(docker_client, owner_env)) == 2)
    volumes_before = owned_volumes(docker_client, owner_env)

    first.signal(signal.SIGKILL)
    first.wait()
    ws.close()

    assert wait_until(
        lambda: owned_containers(docker_client, owner_env, role=None) == [], timeout=10
    )
    # Only the kernelspec's persistent HOME volume exists, as before the kill.
    assert owned_volumes(docker_client, owner_env) == volumes_before
    assert (first.root_dir / "work.ipynb").read_text() == saved
    assert (first.root_dir / "results.csv").read_text() == "1,2\n"

    second = jupyter_server({"tf": spec}, root=first.root_dir)
    executed = await run_notebook(
        ServerSession(second.url, second.token), "work.ipynb", "tf", timeout=120
    )
    assert executed["cells"][1]["outputs"][0]["text"].strip() == "2"
