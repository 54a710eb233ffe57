"""Bad input reaches the user as a clear message, fast, through a real Jupyter server (issue 6).

Kernelspecs are written as a user's hand-edited kernel.json would be. Each start goes through
POST /api/kernels (a REST client) and POST /api/sessions (what JupyterLab uses), and the test
asserts the HTTP status, that the message naming the value and the fix reaches the client
within seconds, and that no kernel, container or volume is left behind.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import docker
import pytest
from tornado.httpclient import HTTPClientError

import jupyter_tfenv.testing
from jupyter_tfenv.server_run import ServerSession
from jupyter_tfenv.testing import ServerProcess
from tests.kernels.conftest import wait_until

from .conftest import kernel_json, owned_containers, owned_volumes

pytestmark = [pytest.mark.engine, pytest.mark.asyncio]

MISSING_SOCKET = "unix:///tmp/tfenv-no-such-dir/docker.sock"

# (kernel name, provisioner config, HTTP status of POST /api/kernels, texts the message holds)
CASES: list[tuple[str, dict[str, Any], int, list[str]]] = [
    (
        "unknown-image",
        {"image": "tfenv-missing/none:1"},
        400,
        ["'tfenv-missing/none:1' is not on this Docker engine", "jupyter tfenv pull"],
    ),
    ("no-python", {"image": "<no-python>"}, 400, ["has no 'python3' on its PATH"]),
    ("no-ipykernel", {"image": "<base>"}, 400, ["but no ipykernel", "jupyter tfenv prepare"]),
    ("upper-case", {"image": "Tensorflow/TF:2"}, 400, ["'Tensorflow/TF:2'", "lower-case"]),
    ("shell-semicolon", {"image": "tf;rm -rf /"}, 400, ["'tf;rm -rf /'", "cannot appear"]),
    ("shell-subst", {"image": "$(reboot)"}, 400, ["'$(reboot)'", "cannot appear"]),
    ("option-like", {"image": "--privileged"}, 400, ["looks like a command-line option"]),
    ("gpus-word", {"gpus": "sometimes"}, 400, ["Invalid GPU spec 'sometimes'", '"all"']),
    ("gpus-negative", {"gpus": -2}, 400, ["Invalid GPU spec -2", "cannot be negative"]),
    ("gpus-bad-id", {"gpus": "device=abc"}, 400, ["'abc' is neither a GPU index"]),
    ("gpus-empty-id", {"gpus": "device="}, 400, ["an empty device id"]),
    ("gpus-true", {"gpus": True}, 400, ["true is ambiguous"]),
    ("mem-word", {"mem_limit": "lots"}, 400, ["Invalid mem_limit 'lots'", "'8g'"]),
    ("mem-negative", {"mem_limit": "-1g"}, 400, ["Invalid mem_limit '-1g'"]),
    ("shm-word", {"shm_size": "huge"}, 400, ["Invalid shm_size 'huge'"]),
    ("cpus-negative", {"cpus": -1}, 400, ["Invalid cpus -1.0"]),
    ("cpus-too-many", {"cpus": 4096}, 400, ["Invalid cpus 4096.0", "this machine has"]),
    ("network-bridge", {"network": "bridge"}, 400, ["'network'", "'bridge'", "'loopback'"]),
    ("user-name", {"container_user": "root"}, 400, ["Invalid container_user 'root'"]),
    (
        "unknown-key",
        {"mem_limt": "1g"},
        400,
        ["'mem_limt' (did you mean 'mem_limit'?)", "Valid settings:"],
    ),
    (
        "missing-engine",
        {"docker_host": MISSING_SOCKET},
        503,
        [f"No Docker engine socket at {MISSING_SOCKET}", "DOCKER_HOST"],
    ),
]


@pytest.fixture(scope="module")
def bad_server(
    tmp_path_factory: pytest.TempPathFactory,
    kernel_image: str,
    no_python_image: str,
    image_builder: Any,
) -> Iterator[ServerProcess]:
    """One server with a kernelspec per case (a server start costs seconds)."""
    images = {"<no-python>": no_python_image, "<base>": str(image_builder.ensure("base"))}
    base = tmp_path_factory.mktemp("bad-input")
    (base / "work").mkdir()
    server = ServerProcess(base / "work", base / "jupyter")
    for name, config, _, _ in CASES:
        settings = dict(config)
        image = settings.pop("image", kernel_image)
        image = images.get(image, image)
        write_kernelspec(server.data_dir, name, kernel_json(image, **settings))
    server.start()
    yield server
    server.stop()


def write_kernelspec(data_dir: Path, name: str, spec: dict[str, Any]) -> None:
    directory = data_dir / "kernels" / name
    directory.mkdir(parents=True)
    (directory / "kernel.json").write_text(json.dumps(spec))


async def start_both_ways(server: ServerProcess, name: str) -> tuple[int, str, int, str, float]:
    """POST /api/kernels and /api/sessions for kernel ``name``; both must fail.

    Returns each status and message (what JupyterLab shows), and the slower of the two times.
    """
    session = ServerSession(server.url, server.token)
    answers: list[tuple[int, str]] = []
    slowest = 0.0
    for path, body in (
        ("api/kernels", {"name": name}),
        (
            "api/sessions",
            {"path": f"{name}.ipynb", "type": "notebook", "name": name, "kernel": {"name": name}},
        ),
    ):
        started = time.monotonic()
        with pytest.raises(HTTPClientError) as caught:
            await session.request("POST", path, body, timeout=60)
        slowest = max(slowest, time.monotonic() - started)
        assert caught.value.response is not None
        message = json.loads(caught.value.response.body)["message"]
        answers.append((caught.value.code, str(message)))
    assert await session.request("GET", "api/kernels") == []
    assert await session.request("GET", "api/sessions") == []
    return answers[0][0], answers[0][1], answers[1][0], answers[1][1], slowest


@pytest.mark.parametrize(
    ("name", "status", "texts"),
    [(name, status, texts) for name, _, status, texts in CASES],
    ids=[case[0] for case in CASES],
)
async def test_bad_kernelspec_is_refused_with_its_value_and_fix(
    name: str,
    status: int,
    texts: list[str],
    bad_server: ServerProcess,
    docker_client: docker.DockerClient,
    owner_env: str,
) -> None:
    volumes_before = owned_volumes(docker_client, owner_env)
    kernels_status, kernels_body, sessions_status, sessions_body, took = await start_both_ways(
        bad_server, name
    )

    assert took < 5
    assert kernels_status == status
    # jupyter_server answers every failed session start with 500, carrying the message.
    assert sessions_status == 500
    for text in texts:
        assert text in kernels_body, kernels_body
        assert text in sessions_body, sessions_body
    assert "Unhandled error" not in kernels_body
    # Image probes of the server extension may still be running; nothing may stay.
    assert wait_until(lambda: owned_containers(docker_client, owner_env, role=None) == [])
    assert owned_volumes(docker_client, owner_env) == volumes_before


@pytest.mark.parametrize("variable", ["TFENV_DOCKER_HOST", "DOCKER_HOST"])
async def test_server_pointed_at_no_engine_keeps_running_and_says_where_it_looked(
    variable: str,
    kernel_image: str,
    jupyter_server: Callable[..., ServerProcess],
) -> None:
    server = jupyter_server({"tf": kernel_json(kernel_image)}, extra_env={variable: MISSING_SOCKET})
    status, body, sessions_status, sessions_body, took = await start_both_ways(server, "tf")

    assert took < 5
    assert (status, sessions_status) == (503, 500)
    for text in (body, sessions_body):
        assert f"No Docker engine socket at {MISSING_SOCKET}" in text
        assert "Install and start Docker" in text
    # The server itself is fine: its API answers.
    assert await ServerSession(server.url, server.token).request("GET", "api/status")


@pytest.fixture
def servers_without_dac_override(monkeypatch: pytest.MonkeyPatch) -> None:
    """Servers started in this test run as root WITHOUT the capabilities that let root ignore
    file permissions, so a socket with mode 000 refuses them as it refuses a normal user.

    (The test Python lives under /root, which other users cannot reach, so the server cannot
    simply run as another user.)
    """
    real = subprocess.Popen

    def popen(args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        wrapped = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--", *args]
        return real(wrapped, **kwargs)

    replacement = SimpleNamespace(
        Popen=popen,
        STDOUT=subprocess.STDOUT,
        DEVNULL=subprocess.DEVNULL,
        TimeoutExpired=subprocess.TimeoutExpired,
    )
    monkeypatch.setattr(jupyter_tfenv.testing, "subprocess", replacement)


async def test_engine_socket_without_permission_names_the_docker_group(
    tmp_path: Path,
    kernel_image: str,
    jupyter_server: Callable[..., ServerProcess],
    servers_without_dac_override: None,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("creating a socket others cannot open and dropping capabilities needs root")
    path = tmp_path / "engine.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen()
    path.chmod(0)
    try:
        spec = kernel_json(kernel_image, docker_host=f"unix://{path}")
        server = jupyter_server({"tf": spec})
        status, body, _, sessions_body, took = await start_both_ways(server, "tf")
    finally:
        listener.close()

    assert took < 5
    assert status == 503
    for text in (body, sessions_body):
        assert f"Permission denied on the Docker engine socket unix://{path}" in text
        assert "usermod -aG docker" in text
