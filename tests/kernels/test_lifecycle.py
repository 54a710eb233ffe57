"""Kernels in real containers on the real engine: start, execute, interrupt, restart, death."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest

from jupyter_tfenv.engine import LABEL_KERNEL_ID
from jupyter_tfenv.errors import (
    ImageNotFoundError,
    ImageNotKernelReadyError,
    ImageWithoutPythonError,
)

from .conftest import containers_of

pytestmark = [pytest.mark.engine, pytest.mark.asyncio]


@pytest.mark.parametrize("network", ["ipc", "loopback", "host", "none"])
async def test_kernel_runs_in_the_image_with_the_notebook_dir_mounted(
    network: str,
    kernel_image: str,
    make_spec: Callable[..., str],
    start_kernel: Callable[..., Any],
    notebook_dir: Path,
    docker_client: docker.DockerClient,
) -> None:
    kernel = await start_kernel(make_spec(kernel_image, network=network))
    container = docker_client.containers.get(kernel.container_id)
    assert container.status == "running"
    assert container.image.tags == [kernel_image]

    out = await kernel.run(
        "import os\n"
        "open('from_kernel.txt', 'w').write('hello')\n"
        "open(os.path.expanduser('~/probe'), 'w').write('x')\n"
        "print(1 + 1, os.getcwd(), os.environ['HOME'])"
    )
    assert out["status"] == "ok"
    assert out["stdout"].split() == ["2", str(notebook_dir), "/tfenv-home"]
    written = notebook_dir / "from_kernel.txt"
    assert written.read_text() == "hello"
    assert (written.stat().st_uid, written.stat().st_gid) == (os.getuid(), os.getgid())


async def test_keras_model_trains_with_falling_loss(
    tf_jupyter_image: str, make_spec: Callable[..., str], start_kernel: Callable[..., Any]
) -> None:
    kernel = await start_kernel(make_spec(tf_jupyter_image))
    out = await kernel.run(
        "import numpy as np, tensorflow as tf\n"
        "rng = np.random.default_rng(0)\n"
        "x = rng.normal(size=(512, 4)).astype('float32')\n"
        "y = x @ np.array([[1.0], [-2.0], [0.5], [3.0]], dtype='float32') + 0.1\n"
        "model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(1)])\n"
        "model.compile(optimizer=tf.keras.optimizers.Adam(0.1), loss='mse')\n"
        "history = model.fit(x, y, epochs=5, verbose=0)\n"
        "print(tf.__version__, *history.history['loss'])",
        timeout=180,
    )
    assert out["status"] == "ok", out
    version, *losses = out["stdout"].split()
    assert version.startswith("2.")
    assert len(losses) == 5
    assert float(losses[-1]) < float(losses[0]) / 2


@pytest.mark.parametrize("code", ["import time; time.sleep(600)", "while True: pass"])
async def test_interrupt_stops_the_cell_and_keeps_container_and_variables(
    code: str,
    kernel_image: str,
    make_spec: Callable[..., str],
    start_kernel: Callable[..., Any],
) -> None:
    kernel = await start_kernel(make_spec(kernel_image))
    await kernel.run("kept = 41")
    container_before = kernel.container_id

    running = asyncio.ensure_future(kernel.run(code, timeout=30))
    await asyncio.sleep(1.0)
    interrupted_at = time.monotonic()
    await kernel.manager.interrupt_kernel()
    out = await running
    elapsed = time.monotonic() - interrupted_at

    assert out["ename"] == "KeyboardInterrupt"
    assert elapsed < 1.0
    assert kernel.container_id == container_before
    assert (await kernel.run("kept + 1"))["result"] == "42"


@pytest.mark.parametrize("busy", [False, True])
async def test_restart_replaces_the_container_and_keeps_home(
    busy: bool,
    kernel_image: str,
    make_spec: Callable[..., str],
    start_kernel: Callable[..., Any],
    docker_client: docker.DockerClient,
) -> None:
    kernel = await start_kernel(make_spec(kernel_image))
    await kernel.run("import os; open(os.path.expanduser('~/cache.txt'), 'w').write('kept')")
    old_container = kernel.container_id
    kernel_id = kernel.manager.kernel_id
    if busy:
        kernel.client.execute("import time; time.sleep(600)")
        await asyncio.sleep(0.5)

    await kernel.manager.restart_kernel()
    await kernel.client.wait_for_ready(timeout=60)

    assert kernel.container_id != old_container
    assert [c.id for c in containers_of(docker_client, kernel_id)] == [kernel.container_id]
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(old_container)
    out = await kernel.run("import os; print(open(os.path.expanduser('~/cache.txt')).read())")
    assert out["stdout"].strip() == "kept"


@pytest.mark.parametrize("now", [False, True])
async def test_shutdown_removes_the_container(
    now: bool,
    kernel_image: str,
    make_spec: Callable[..., str],
    start_kernel: Callable[..., Any],
    docker_client: docker.DockerClient,
) -> None:
    kernel = await start_kernel(make_spec(kernel_image))
    kernel_id = kernel.manager.kernel_id
    assert len(containers_of(docker_client, kernel_id)) == 1
    await kernel.manager.shutdown_kernel(now=now)
    assert containers_of(docker_client, kernel_id) == []


async def test_container_killed_from_outside_is_reported_with_its_reason(
    kernel_image: str,
    make_spec: Callable[..., str],
    start_kernel: Callable[..., Any],
    docker_client: docker.DockerClient,
) -> None:
    kernel = await start_kernel(make_spec(kernel_image))
    await kernel.run("print('last words before the kill')")
    kernel.manager.stop_restarter()
    docker_client.containers.get(kernel.container_id).kill()

    deadline = time.monotonic() + 15
    while await kernel.manager.is_alive() and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    provisioner = kernel.manager.provisioner
    assert not await kernel.manager.is_alive()
    assert provisioner.last_exit["exit_code"] == 137
    assert "exited with code 137" in provisioner.last_exit["reason"]
    assert "SIGKILL" in provisioner.last_exit["reason"]
    assert containers_of(docker_client, kernel.manager.kernel_id) == []


async def test_out_of_memory_is_reported_as_such(
    kernel_image: str,
    make_spec: Callable[..., str],
    start_kernel: Callable[..., Any],
    docker_client: docker.DockerClient,
) -> None:
    kernel = await start_kernel(make_spec(kernel_image, mem_limit="96m"))
    kernel.manager.stop_restarter()
    kernel.client.execute("hog = bytearray(1024 * 1024 * 1024)")
    deadline = time.monotonic() + 30
    while await kernel.manager.is_alive() and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    last_exit = kernel.manager.provisioner.last_exit
    assert last_exit is not None
    assert last_exit["oom_killed"] is True
    assert "ran out of memory" in last_exit["reason"]
    assert "96 MiB" in last_exit["reason"]


async def test_connection_key_is_in_no_env_label_command_log_or_inspect(
    kernel_image: str,
    make_spec: Callable[..., str],
    start_kernel: Callable[..., Any],
    docker_client: docker.DockerClient,
    clean_env: None,
) -> None:
    kernel = await start_kernel(make_spec(kernel_image))
    await kernel.run("print('hello')")
    key = kernel.manager.session.key.decode()
    assert len(key) >= 32
    inspect = json.dumps(docker_client.api.inspect_container(kernel.container_id))
    logs = docker_client.containers.get(kernel.container_id).logs().decode()
    out = await kernel.run("import os; print(sorted(os.environ.items()))")
    for text in (inspect, logs, out["stdout"]):
        assert key not in text
        assert "server-token-do-not-leak" not in text
        assert "s3cr3t" not in text
    # The container sees exactly one connection file, its own, beside its own IPC sockets.
    listing = await kernel.run("import os; print(*sorted(os.listdir('/tfenv-run')))")
    names = listing["stdout"].split()
    assert names[0] == "connection.json"
    assert all(name.startswith("ipc-") for name in names[1:])


@pytest.mark.parametrize("network", ["ipc", "loopback"])
async def test_safe_defaults_in_the_running_container(
    network: str,
    kernel_image: str,
    make_spec: Callable[..., str],
    start_kernel: Callable[..., Any],
    docker_client: docker.DockerClient,
) -> None:
    kernel = await start_kernel(make_spec(kernel_image, network=network))
    attrs = docker_client.api.inspect_container(kernel.container_id)
    host_config = attrs["HostConfig"]
    assert host_config["Privileged"] is False
    assert host_config["SecurityOpt"] == ["no-new-privileges"]
    assert not host_config.get("CapAdd")
    assert host_config["Init"] is True
    assert attrs["Config"]["User"] == f"{os.getuid()}:{os.getgid()}"
    binds = " ".join(host_config.get("Binds") or [])
    assert "docker.sock" not in binds
    published = attrs["NetworkSettings"]["Ports"] or {}
    if network == "ipc":
        # No TCP port at all: the channels are sockets in a private 0700 directory.
        assert published == {}
        run_dir = kernel.manager.ip.rsplit("/", 1)[0]
        assert os.stat(run_dir).st_mode & 0o777 == 0o700
    else:
        assert len(published) == 5
        for bindings in published.values():
            assert [b["HostIp"] for b in bindings] == ["127.0.0.1"]
    out = await kernel.run("import os; print(os.path.exists('/var/run/docker.sock'))")
    assert out["stdout"].strip() == "False"


async def test_image_without_ipykernel_fails_at_once_with_the_fix(
    tf_image: str,
    make_spec: Callable[..., str],
    start_kernel: Callable[..., Any],
    docker_client: docker.DockerClient,
    owner_env: str,
) -> None:
    started = time.monotonic()
    with pytest.raises(ImageNotKernelReadyError, match="jupyter tfenv prepare") as caught:
        await start_kernel(make_spec(tf_image))
    assert tf_image in str(caught.value)
    assert time.monotonic() - started < 20
    assert (
        docker_client.containers.list(
            all=True, filters={"label": f"org.jupyter-tfenv.owner={owner_env}"}
        )
        == []
    )


async def test_unknown_image_fails_at_once_with_the_pull_command(
    make_spec: Callable[..., str], start_kernel: Callable[..., Any]
) -> None:
    started = time.monotonic()
    with pytest.raises(ImageNotFoundError, match="jupyter tfenv pull tfenv-missing/none:1"):
        await start_kernel(make_spec("tfenv-missing/none:1"))
    assert time.monotonic() - started < 5


async def test_image_without_python_is_named(
    kernel_image: str,
    make_spec: Callable[..., str],
    start_kernel: Callable[..., Any],
) -> None:
    # As for an image without Python: the kernel command names an interpreter it lacks.
    with pytest.raises(ImageWithoutPythonError, match="no 'python9' on its PATH"):
        await start_kernel(
            make_spec(kernel_image, kernel_command=["python9", "-f", "{connection_file}"])
        )


async def test_containers_carry_the_kernel_id_label(
    kernel_image: str,
    make_spec: Callable[..., str],
    start_kernel: Callable[..., Any],
    docker_client: docker.DockerClient,
) -> None:
    kernel = await start_kernel(make_spec(kernel_image))
    labels = docker_client.containers.get(kernel.container_id).labels
    assert labels[LABEL_KERNEL_ID] == kernel.manager.kernel_id
    assert labels["org.jupyter-tfenv.role"] == "kernel"
