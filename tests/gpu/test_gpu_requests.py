"""GPU request plumbing (issue 3, cases B11/B12), checked on a private engine WITHOUT a GPU.

With the stand-in hook on the private dockerd's PATH, the engine accepts GPU device requests
and sets NVIDIA_VISIBLE_DEVICES as the NVIDIA driver would; nothing else of a GPU stack is
there. So these tests prove what reaches Docker and the container, never that a GPU computed.
Without the stand-in the engine refuses GPU requests, as one without the NVIDIA toolkit does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from jupyter_tfenv.engine import LABEL_GPUS, LABEL_KERNEL_ID, LABEL_OWNER
from jupyter_tfenv.errors import GpuUnavailableError
from jupyter_tfenv.server_run import ServerSession
from jupyter_tfenv.testing import ServerProcess
from tests.reliability.conftest import kernel_json
from tests.reliability.private_engine import PrivateEngine

pytestmark = [pytest.mark.engine, pytest.mark.asyncio]

UUID = "GPU-3a5c1f2e-8d4b-4c6a-9e7f-0123456789ab"


def device_request(attrs: dict[str, Any]) -> tuple[int, list[str], list[list[str]]]:
    """(Count, DeviceIDs, Capabilities) of a container's single GPU device request."""
    [request] = attrs["HostConfig"]["DeviceRequests"]
    return request["Count"], request["DeviceIDs"] or [], request["Capabilities"]


@pytest.mark.parametrize(
    ("gpus", "count", "device_ids", "visible", "label"),
    [
        ("all", -1, [], "all", "all"),
        (1, 1, [], "0", "1"),
        ("2", 2, [], "0,1", "2"),
        ("device=0,1", 0, ["0", "1"], "0,1", "device=0,1"),
        (f"device={UUID}", 0, [UUID], UUID, f"device={UUID}"),
        (["1", UUID], 0, ["1", UUID], f"1,{UUID}", f"device=1,{UUID}"),
    ],
    ids=["all", "count-1", "count-2", "indexes", "uuid", "list"],
)
async def test_gpu_request_plumbing_with_standin_hook_reaches_the_container(
    gpus: Any,
    count: int,
    device_ids: list[str],
    visible: str,
    label: str,
    private_engine: PrivateEngine,
    private_spec: Callable[..., str],
    start_kernel: Callable[..., Any],
) -> None:
    private_engine.use(standin=True)
    kernel = await start_kernel(private_spec(gpus=gpus))

    out = await kernel.run(
        "import os; print(os.environ['NVIDIA_VISIBLE_DEVICES'], os.environ['TFENV_GPUS'])"
    )
    assert out["stdout"].split() == [visible, label]
    attrs = private_engine.client().api.inspect_container(kernel.container_id)
    assert device_request(attrs) == (count, device_ids, [["gpu"]])
    assert attrs["Config"]["Labels"][LABEL_GPUS] == label


async def test_gpu_request_plumbing_with_standin_hook_survives_a_restart(
    private_engine: PrivateEngine,
    private_spec: Callable[..., str],
    start_kernel: Callable[..., Any],
) -> None:
    # Case B03: a restarted GPU kernel is exactly one new container with the same request.
    private_engine.use(standin=True)
    kernel = await start_kernel(private_spec(gpus="device=1"))
    old = kernel.container_id

    await kernel.manager.restart_kernel()
    await kernel.client.wait_for_ready(timeout=60)

    label = f"{LABEL_KERNEL_ID}={kernel.manager.kernel_id}"
    assert [c["Id"] for c in private_engine.containers(label)] == [kernel.container_id]
    assert kernel.container_id != old
    attrs = private_engine.client().api.inspect_container(kernel.container_id)
    assert device_request(attrs) == (0, ["1"], [["gpu"]])
    out = await kernel.run("import os; print(os.environ['NVIDIA_VISIBLE_DEVICES'])")
    assert out["stdout"].strip() == "1"


async def test_gpu_request_plumbing_with_standin_hook_warns_when_one_gpu_kernels_share_gpu_0(
    private_engine: PrivateEngine,
    private_spec: Callable[..., str],
    start_kernel: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Case B12: Docker serves every `--gpus 1` request with GPU 0. The kernels would share it
    # silently; the second start says so and names the fix. Named devices do not collide.
    private_engine.use(standin=True)
    first = await start_kernel(private_spec(gpus=1))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        second = await start_kernel(private_spec(gpus=1))
        third = await start_kernel(private_spec(gpus="device=1"))

    for kernel, expected in ((first, "0"), (second, "0"), (third, "1")):
        out = await kernel.run("import os; print(os.environ['NVIDIA_VISIBLE_DEVICES'])")
        assert out["stdout"].strip() == expected
    warnings = [r.getMessage() for r in caplog.records if "shares GPUs" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert second.manager.kernel_id in warnings[0]
    assert first.manager.kernel_id in warnings[0]
    assert 'gpus="device=1"' in warnings[0]


async def test_gpu_kernel_on_an_engine_without_gpu_support_fails_fast_naming_the_fix(
    private_engine: PrivateEngine,
    private_spec: Callable[..., str],
    start_kernel: Callable[..., Any],
    owner_env: str,
) -> None:
    private_engine.use(standin=False)
    started = time.monotonic()
    with pytest.raises(GpuUnavailableError) as caught:
        await start_kernel(private_spec(gpus="all"))

    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert "gpus='all'" in message
    assert "NVIDIA container toolkit" in message
    assert "CPU kernel" in message
    assert private_engine.containers(f"{LABEL_OWNER}={owner_env}") == []
    # The same engine still runs CPU kernels.
    kernel = await start_kernel(private_spec())
    assert (await kernel.run("print(6 * 7)"))["stdout"].strip() == "42"


async def test_gpu_kernel_on_an_engine_without_gpu_support_through_a_server(
    private_engine: PrivateEngine,
    kernel_image: str,
    jupyter_server: Callable[..., ServerProcess],
    owner_env: str,
) -> None:
    # What JupyterLab gets: the message itself, from both ways of starting a kernel.
    private_engine.use(standin=False)
    spec = kernel_json(
        kernel_image, gpus=1, docker_host=private_engine.url, network="none", home_volume=""
    )
    server = jupyter_server({"tf-gpu": spec})
    session = ServerSession(server.url, server.token)

    started = time.monotonic()
    with pytest.raises(HTTPClientError) as kernels:
        await session.request("POST", "api/kernels", {"name": "tf-gpu"})
    with pytest.raises(HTTPClientError) as sessions:
        await session.request(
            "POST",
            "api/sessions",
            {"path": "a.ipynb", "type": "notebook", "name": "a", "kernel": {"name": "tf-gpu"}},
        )

    assert time.monotonic() - started < 10
    assert kernels.value.code == 503
    assert sessions.value.code == 500  # jupyter_server's own status for any failed session
    for answer in (kernels.value, sessions.value):
        assert answer.response is not None
        body = answer.response.body.decode()
        assert "NVIDIA container toolkit" in body
        assert "CPU kernel" in body
    assert await session.request("GET", "api/kernels") == []
    assert private_engine.containers(f"{LABEL_OWNER}={owner_env}") == []
