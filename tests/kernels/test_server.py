"""A real jupyter_server in a subprocess runs notebooks in TensorFlow containers.

These replay what users do: open a notebook, run it, shut the kernel down from the UI, stop the
server with Ctrl-C, and kill the server outright (the next server start cleans up).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import docker
import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager

from jupyter_tfenv.engine import LABEL_OWNER, LABEL_ROLE
from jupyter_tfenv.kernelspecs import install_kernelspec
from jupyter_tfenv.server_run import ServerSession, run_notebook
from jupyter_tfenv.testing import ServerProcess

from .conftest import sweep, wait_until

pytestmark = [pytest.mark.engine]


@pytest.fixture
def server_factory(
    tmp_path: Path, docker_client: docker.DockerClient, owner_env: str
) -> Iterator[object]:
    servers: list[ServerProcess] = []
    root = tmp_path / "work"
    root.mkdir()

    def make(image: str, kernel_name: str = "tf") -> ServerProcess:
        server = ServerProcess(root, tmp_path / f"jupyter-{len(servers)}")
        install_kernelspec(
            image, name=kernel_name, manager=KernelSpecManager(data_dir=str(server.data_dir))
        )
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.stop()
    sweep(docker_client, owner_env)


def write_notebook(path: Path, *cells: str) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nbformat.write(notebook, path)


def owned(client: docker.DockerClient, owner: str) -> list[object]:
    return client.containers.list(
        all=True, filters={"label": f"{LABEL_OWNER}={owner}"}, ignore_removed=True
    )


@pytest.mark.asyncio
async def test_notebook_runs_tensorflow_through_the_server_and_cleans_up(
    server_factory: object,
    tf_jupyter_image: str,
    docker_client: docker.DockerClient,
    owner_env: str,
) -> None:
    server = server_factory(tf_jupyter_image)  # type: ignore[operator]
    write_notebook(
        server.root_dir / "matmul.ipynb",
        "import tensorflow as tf\nprint(tf.__version__)",
        "m = tf.matmul(tf.constant([[1.0, 2.0]]), tf.constant([[3.0], [4.0]]))\n"
        "print(float(m[0, 0]))",
    )
    session = ServerSession(server.url, server.token)
    executed = await run_notebook(session, "matmul.ipynb", "tf", timeout=180)

    stdout = [
        "".join(o["text"] for o in cell["outputs"] if o.get("name") == "stdout").strip()
        for cell in executed["cells"]
    ]
    assert stdout[0].startswith("2.")
    assert stdout[1] == "11.0"
    saved = nbformat.read(server.root_dir / "matmul.ipynb", as_version=4)
    assert [o["text"].strip() for o in saved.cells[1].outputs if o.get("name") == "stdout"] == [
        "11.0"
    ]
    # The session was deleted, which shuts the kernel down: its container is gone.
    assert wait_until(lambda: owned(docker_client, owner_env) == [])


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.asyncio
async def test_stopping_the_server_removes_its_kernel_containers(
    stop_signal: int,
    server_factory: object,
    kernel_image: str,
    docker_client: docker.DockerClient,
    owner_env: str,
) -> None:
    server = server_factory(kernel_image)  # type: ignore[operator]
    session = ServerSession(server.url, server.token)
    for _ in range(2):
        await session.request("POST", "api/kernels", {"name": "tf"})
    assert wait_until(lambda: len(owned(docker_client, owner_env)) == 2)

    server.signal(stop_signal)
    server.wait(timeout=60)
    # SIGTERM: the server shuts its kernels down. SIGINT without a terminal skips that cleanup
    # in jupyter_server; the owner watchdog then removes the containers within moments.
    assert wait_until(lambda: owned(docker_client, owner_env) == [], timeout=10), server.log()


def watchdog_pids(owner_pid: int) -> list[int]:
    """PIDs of the owner watchdogs that watch ``owner_pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            b"--watch-owner" in argv
            and argv[argv.index(b"--watch-owner") + 1] == str(owner_pid).encode()
        ):
            found.append(int(entry.name))
    return found


@pytest.mark.asyncio
async def test_containers_of_a_killed_server_are_removed_at_once(
    server_factory: object,
    kernel_image: str,
    docker_client: docker.DockerClient,
    owner_env: str,
) -> None:
    server = server_factory(kernel_image)  # type: ignore[operator]
    await ServerSession(server.url, server.token).request("POST", "api/kernels", {"name": "tf"})
    assert wait_until(lambda: len(owned(docker_client, owner_env)) == 1)

    [container] = owned(docker_client, owner_env)
    run_dir = Path(container.labels["org.jupyter-tfenv.run-dir"])
    assert (run_dir / "connection.json").is_file()

    server.signal(signal.SIGKILL)
    server.wait()
    assert wait_until(lambda: owned(docker_client, owner_env) == [], timeout=10)
    # The kernel's private connection file (it holds the key) goes with its container.
    assert wait_until(lambda: not run_dir.exists(), timeout=5)


@pytest.mark.asyncio
async def test_containers_of_a_killed_server_are_removed_by_the_next_server(
    server_factory: object,
    kernel_image: str,
    docker_client: docker.DockerClient,
    owner_env: str,
) -> None:
    first = server_factory(kernel_image)  # type: ignore[operator]
    await ServerSession(first.url, first.token).request("POST", "api/kernels", {"name": "tf"})
    assert wait_until(lambda: len(owned(docker_client, owner_env)) == 1)

    # As when a machine's processes are all killed at once: the server and its watchdog.
    assert first.process is not None
    [watchdog] = watchdog_pids(first.process.pid)
    os.kill(watchdog, signal.SIGKILL)
    first.signal(signal.SIGKILL)
    first.wait()
    kernels = [c for c in owned(docker_client, owner_env) if c.labels[LABEL_ROLE] == "kernel"]
    assert len(kernels) == 1

    second = server_factory(kernel_image)  # type: ignore[operator]
    assert wait_until(lambda: owned(docker_client, owner_env) == [], timeout=30), second.log()


@pytest.mark.asyncio
async def test_a_notebook_path_with_dotdot_cannot_mount_host_folders(
    server_factory: object,
    kernel_image: str,
    docker_client: docker.DockerClient,
    owner_env: str,
) -> None:
    """A client-chosen '../../../run/x.ipynb' must not mount /run (and the Docker socket)."""
    server = server_factory(kernel_image)  # type: ignore[operator]
    session = ServerSession(server.url, server.token)
    kernel = await session.request(
        "POST", "api/kernels", {"name": "tf", "path": "../../../../../run/x.ipynb"}
    )
    [container] = [c for c in owned(docker_client, owner_env) if c.labels[LABEL_ROLE] == "kernel"]
    binds = [mount["Source"] for mount in container.attrs["Mounts"] if mount["Type"] == "bind"]
    assert "/run" not in binds
    assert str(server.root_dir) in binds
    assert container.attrs["Config"]["WorkingDir"] == str(server.root_dir)
    await session.request("DELETE", f"api/kernels/{kernel['id']}")


@pytest.mark.asyncio
async def test_settings_the_engine_refuses_get_a_400_with_its_reason(
    tmp_path: Path,
    kernel_image: str,
    docker_client: docker.DockerClient,
    owner_env: str,
) -> None:
    from tornado.httpclient import HTTPClientError

    server = ServerProcess(tmp_path / "work", tmp_path / "jupyter")
    (tmp_path / "work").mkdir()
    install_kernelspec(
        kernel_image,
        name="bad-volume",
        extra_config={"home_volume": "../not a volume"},
        manager=KernelSpecManager(data_dir=str(server.data_dir)),
    )
    with server:
        session = ServerSession(server.url, server.token)
        with pytest.raises(HTTPClientError) as caught:
            await session.request("POST", "api/kernels", {"name": "bad-volume"})
    assert caught.value.code == 400
    body = caught.value.response.body.decode() if caught.value.response else ""
    assert "refused the kernel container" in body
    assert "home_volume" in body
    sweep(docker_client, owner_env)
