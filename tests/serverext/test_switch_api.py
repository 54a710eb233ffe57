"""GET kernels and POST kernels/<id>/switch on a real kernel in a real container: the image is
pulled or prepared when needed, the kernel restarts in a new container, the old one is gone,
and the choice sticks across restarts. A refused switch leaves the kernel as it was."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from jupyter_tfenv.kernelspecs import build_kernel_json

from .conftest import ImageKit, fetch_json, post_json, wait_for, wait_job
from .registry_helpers import LocalRegistry

SPEC_NAME = "tfenv-switch-test"


@pytest.fixture
def switch_spec(jp_kernel_dir: Path, kernel_image: str) -> str:
    """An installed kernelspec that runs ``kernel_image`` (Python 3.11 + ipykernel)."""
    spec_dir = jp_kernel_dir / SPEC_NAME
    spec_dir.mkdir(parents=True)
    kernel_json = build_kernel_json(kernel_image, "Switch test", "none", str(spec_dir))
    (spec_dir / "kernel.json").write_text(json.dumps(kernel_json))
    return SPEC_NAME


async def running_model(jp_fetch: Any, kernel_id: str) -> Any:
    model = await fetch_json(jp_fetch, "tfenv", "api", "kernels", kernel_id)
    return model if model["status"] == "running" else None


@pytest.fixture
def kernel_id(
    jp_fetch: Any, jp_serverapp: Any, jp_asyncio_loop: Any, tfenv_app: Any, switch_spec: str
) -> Iterator[str]:
    response = jp_asyncio_loop.run_until_complete(
        jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": switch_spec}))
    )
    kernel = json.loads(response.body)["id"]
    jp_asyncio_loop.run_until_complete(wait_for(lambda: running_model(jp_fetch, kernel), 60))
    yield kernel
    if kernel in jp_serverapp.kernel_manager.list_kernel_ids():
        jp_asyncio_loop.run_until_complete(jp_fetch("api", "kernels", kernel, method="DELETE"))


def container_gone(client: docker.DockerClient, container_id: str) -> bool:
    try:
        client.api.inspect_container(container_id)
    except docker.errors.NotFound:
        return True
    return False


async def test_kernel_model(
    jp_fetch: Any, kernel_id: str, kernel_image: str, docker_client: docker.DockerClient
) -> None:
    listed = await fetch_json(jp_fetch, "tfenv", "api", "kernels")
    assert [model["kernel_id"] for model in listed] == [kernel_id]

    async def logged() -> Any:
        model = await fetch_json(jp_fetch, "tfenv", "api", "kernels", kernel_id)
        # ipykernel's start banner ends with the connection file's path.
        return model if any("connection.json" in line for line in model["log_tail"]) else None

    model = await wait_for(logged)
    assert model["image"] == kernel_image
    assert model["kernel_name"] == SPEC_NAME
    assert model["gpus"] == "none"
    assert model["status"] == "running"
    assert model["tensorflow_version"] is None
    assert model["memory_bytes"] > 1_000_000
    assert model["last_exit"] is None
    attrs = docker_client.api.inspect_container(model["container_id"])
    assert attrs["Config"]["Labels"]["org.jupyter-tfenv.kernel-id"] == kernel_id


async def test_switch_pulls_the_image_and_replaces_the_container(
    jp_fetch: Any,
    kernel_id: str,
    kernel_image: str,
    made_images: ImageKit,
    registry: LocalRegistry,
    docker_client: docker.DockerClient,
    ns: str,
) -> None:
    # The target exists only in the registry (its layers happen to be local already).
    target = made_images.tag(kernel_image, f"{registry.host}/{ns}/kernel:py3.11")
    made_images.push(target)
    made_images.remove(target)
    before = await fetch_json(jp_fetch, "tfenv", "api", "kernels", kernel_id)

    status, job = await post_json(
        jp_fetch, "tfenv", "api", "kernels", kernel_id, "switch", body={"image": target}
    )
    assert status == 202
    assert (job["kind"], job["image"]) == ("switch", target)
    status, busy = await post_json(
        jp_fetch, "tfenv", "api", "kernels", kernel_id, "switch", body={"gpus": "none"}
    )
    assert (status, busy["id"]) == (409, job["id"])

    final = await wait_job(jp_fetch, job["id"], timeout=120)
    assert final["status"] == "done", final
    assert final["result"]["image"] == target
    assert final["result"]["previous_image"] == kernel_image
    jobs = await fetch_json(jp_fetch, "tfenv", "api", "jobs")
    # The switch started a pull job of its own, which any client can watch.
    assert [(entry["kind"], entry["status"]) for entry in jobs if entry["image"] == target] == [
        ("switch", "done"),
        ("pull", "done"),
    ]

    after = await wait_for(lambda: running_model(jp_fetch, kernel_id), 60)
    # The switch waited for the new kernel's kernel_info reply.
    assert after["execution_state"] == "idle"
    assert after["image"] == target
    assert after["container_id"] != before["container_id"]
    assert after["container_id"] == final["result"]["container_id"]
    assert container_gone(docker_client, before["container_id"])
    images = await fetch_json(jp_fetch, "tfenv", "api", "images", params={"registry": "0"})
    assert isinstance(images["local"], list)


async def test_switch_prepares_an_image_without_ipykernel_and_it_sticks(
    jp_fetch: Any,
    kernel_id: str,
    no_ipykernel_image: str,
    docker_client: docker.DockerClient,
) -> None:
    before = await fetch_json(jp_fetch, "tfenv", "api", "kernels", kernel_id)
    status, job = await post_json(
        jp_fetch,
        "tfenv",
        "api",
        "kernels",
        kernel_id,
        "switch",
        body={"image": no_ipykernel_image},
    )
    assert status == 202
    final = await wait_job(jp_fetch, job["id"], timeout=240)
    assert final["status"] == "done", final
    prepared = f"{no_ipykernel_image}-tfenv"
    assert final["result"]["image"] == prepared
    switched = await wait_for(lambda: running_model(jp_fetch, kernel_id), 60)
    assert switched["image"] == prepared
    assert container_gone(docker_client, before["container_id"])

    # A plain restart (the notebook's Restart button) keeps the new image.
    await jp_fetch("api", "kernels", kernel_id, "restart", method="POST", body="{}")
    restarted = await wait_for(lambda: running_model(jp_fetch, kernel_id), 60)
    assert restarted["image"] == prepared
    assert restarted["container_id"] != switched["container_id"]
    assert container_gone(docker_client, switched["container_id"])


async def test_refused_switches_leave_the_kernel_alone(
    jp_fetch: Any, kernel_id: str, kernel_image: str, made_images: ImageKit, ns: str
) -> None:
    before = await fetch_json(jp_fetch, "tfenv", "api", "kernels", kernel_id)

    # GPUs on an engine that cannot serve them: refused before anything is touched.
    status, job = await post_json(
        jp_fetch, "tfenv", "api", "kernels", kernel_id, "switch", body={"gpus": "all"}
    )
    assert status == 202
    final = await wait_job(jp_fetch, job["id"])
    assert final["status"] == "error"
    assert "NVIDIA" in final["error"]
    assert f"keeps running in {kernel_image}" in final["error"]

    # An image that has no Python: the probe says so, the kernel stays.
    no_python = made_images.tiny(f"{ns}/tensorflow:2.99.3", megabytes=1)
    status, job = await post_json(
        jp_fetch, "tfenv", "api", "kernels", kernel_id, "switch", body={"image": no_python}
    )
    final = await wait_job(jp_fetch, job["id"])
    assert final["status"] == "error"
    assert "no 'python3' on its PATH" in final["error"]

    after = await fetch_json(jp_fetch, "tfenv", "api", "kernels", kernel_id)
    assert (after["image"], after["gpus"], after["container_id"]) == (
        kernel_image,
        "none",
        before["container_id"],
    )
    assert after["status"] == "running"


BAD_BODIES = [
    ({}, "image", "nothing to switch to"),
    ({"gpus": "lots"}, "gpus", "Invalid GPU spec 'lots'"),
    ({"gpus": True}, "gpus", "Field 'gpus'"),
    ({"gpus": [0, 1]}, "gpus", "Field 'gpus'"),
    ({"gpus": -2}, "gpus", "cannot be negative"),
    ({"image": "Not An Image"}, "image", "cannot appear"),
    ({"colour": "blue"}, "colour", "Unknown field 'colour'"),
]


async def test_switch_bodies_are_validated(jp_fetch: Any, kernel_id: str) -> None:
    for body, field, words in BAD_BODIES:
        status, answer = await post_json(
            jp_fetch, "tfenv", "api", "kernels", kernel_id, "switch", body=body
        )
        assert (status, answer["field"]) == (400, field), body
        assert words in answer["message"], (body, answer)
