"""Every local TensorFlow image is a kernel without manual steps: CPU, GPU where the engine
serves GPUs, named by TensorFlow version, current as images come and go, beside installed
kernelspecs (which win a name clash)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from jupyter_tfenv.kernelspecs import PROVISIONER_NAME
from jupyter_tfenv.serverext.kernelspecs import TfenvKernelSpecManager

from .conftest import ImageKit, fetch_json, wait_for


async def kernelspecs(jp_fetch: Any) -> dict[str, Any]:
    answer = await fetch_json(jp_fetch, "api", "kernelspecs")
    specs: dict[str, Any] = answer["kernelspecs"]
    return specs


@pytest.mark.tfenv(gpu_support="yes")
async def test_local_images_become_cpu_and_gpu_kernels(
    jp_fetch: Any,
    jp_serverapp: Any,
    tfenv_app: Any,
    made_images: ImageKit,
    kernel_image: str,
    ns: str,
) -> None:
    assert isinstance(jp_serverapp.kernel_spec_manager, TfenvKernelSpecManager)
    cpu_image = made_images.tag(kernel_image, f"{ns}/tensorflow:2.99.5")
    gpu_image = made_images.derive(
        kernel_image,
        f"{ns}/tensorflow:2.99.6-gpu",
        {"org.tensorflow.version": "2.99.6", "org.jupyter-tfenv.gpu": "true"},
    )

    async def ours() -> Any:
        specs = await kernelspecs(jp_fetch)
        wanted = {
            "tfenv-tensorflow-2.99.5-cpu",
            "tfenv-tensorflow-2.99.6-gpu-cpu",
            "tfenv-tensorflow-2.99.6-gpu-gpu",
        }
        if not wanted <= set(specs):
            return None
        # Kernelspecs appear as soon as the image is listed; the probe fills in the rest.
        probed = specs["tfenv-tensorflow-2.99.5-cpu"]["spec"]["metadata"]["tfenv"]["kernel_ready"]
        return specs if probed is not None else None

    specs = await wait_for(ours)
    cpu = specs["tfenv-tensorflow-2.99.5-cpu"]["spec"]
    assert cpu["display_name"] == "TensorFlow 2.99.5 (Docker CPU)"
    assert cpu["language"] == "python"
    provisioner = cpu["metadata"]["kernel_provisioner"]
    assert provisioner == {
        "provisioner_name": PROVISIONER_NAME,
        "config": {"image": cpu_image, "gpus": "none"},
    }
    assert cpu["metadata"]["tfenv"]["kernel_ready"] is True
    # A CPU image gets no GPU kernel: TensorFlow there would not see the GPU.
    assert "tfenv-tensorflow-2.99.5-gpu" not in specs

    gpu = specs["tfenv-tensorflow-2.99.6-gpu-gpu"]["spec"]
    assert gpu["display_name"] == "TensorFlow 2.99.6 (Docker GPU)"
    assert gpu["metadata"]["kernel_provisioner"]["config"] == {"image": gpu_image, "gpus": "all"}
    assert specs["tfenv-tensorflow-2.99.6-gpu-cpu"]["spec"]["display_name"] == (
        "TensorFlow 2.99.6 (Docker CPU)"
    )
    # The usual kernels stay.
    assert "python3" in specs


async def test_kernels_follow_images_as_they_come_and_go(
    jp_fetch: Any, tfenv_app: Any, made_images: ImageKit, kernel_image: str, ns: str
) -> None:
    name = "tfenv-tensorflow-2.99.8-cpu"
    assert name not in await kernelspecs(jp_fetch)
    ref = made_images.tag(kernel_image, f"{ns}/tensorflow:2.99.8")

    async def present() -> bool:
        return name in await kernelspecs(jp_fetch)

    # The engine's "tag" event refreshes the list: no restart, no waiting for the TTL.
    await wait_for(present, timeout=4.5)
    made_images.remove(ref)

    async def absent() -> bool:
        return name not in await kernelspecs(jp_fetch)

    await wait_for(absent, timeout=4.5)


async def test_installed_kernelspec_wins_a_name_clash(
    jp_fetch: Any,
    tfenv_app: Any,
    jp_kernel_dir: Path,
    made_images: ImageKit,
    kernel_image: str,
    ns: str,
) -> None:
    made_images.tag(kernel_image, f"{ns}/tensorflow:2.99.5")
    mine = jp_kernel_dir / "tfenv-tensorflow-2.99.5-cpu"
    mine.mkdir(parents=True)
    (mine / "kernel.json").write_text(
        json.dumps(
            {
                "argv": ["python3", "-m", "ipykernel", "-f", "{connection_file}"],
                "display_name": "My own TF kernel",
                "language": "python",
            }
        )
    )
    made_images.tag(kernel_image, f"{ns}/tensorflow:2.99.11")

    async def listed() -> Any:
        specs = await kernelspecs(jp_fetch)
        return specs if "tfenv-tensorflow-2.99.11-cpu" in specs else None

    specs = await wait_for(listed)
    assert specs["tfenv-tensorflow-2.99.5-cpu"]["spec"]["display_name"] == "My own TF kernel"
    assert not [
        spec
        for spec in specs.values()
        if spec["spec"].get("metadata", {}).get("tfenv", {}).get("source_image")
        == f"{ns}/tensorflow:2.99.5"
    ]


async def test_kernel_from_a_dynamic_kernelspec_runs(
    jp_fetch: Any, tfenv_app: Any, made_images: ImageKit, kernel_image: str, ns: str
) -> None:
    ref = made_images.tag(kernel_image, f"{ns}/tensorflow:2.99.5")
    name = "tfenv-tensorflow-2.99.5-cpu"

    async def present() -> bool:
        return name in await kernelspecs(jp_fetch)

    await wait_for(present)
    response = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": name}))
    kernel_id = json.loads(response.body)["id"]
    try:

        async def running() -> Any:
            model = await fetch_json(jp_fetch, "tfenv", "api", "kernels", kernel_id)
            return model if model["status"] == "running" else None

        model = await wait_for(running, timeout=60)
        assert model["image"] == ref
        assert model["kernel_name"] == name
        images = await fetch_json(jp_fetch, "tfenv", "api", "images", params={"registry": "0"})
        users = {entry["image"]: entry["kernels"] for entry in images["local"]}
        assert users[ref] == [kernel_id]
    finally:
        await jp_fetch("api", "kernels", kernel_id, method="DELETE")


async def test_image_without_ipykernel_is_offered_and_its_start_says_prepare(
    jp_fetch: Any, tfenv_app: Any, made_images: ImageKit, image_builder: Any, ns: str
) -> None:
    ref = made_images.derive(
        str(image_builder.ensure("base")),
        f"{ns}/tensorflow:2.99.2",
        {"org.tensorflow.version": "2.99.2", "org.jupyter-tfenv.test-variant": "start-fails"},
    )
    name = "tfenv-tensorflow-2.99.2-cpu"

    async def probed() -> Any:
        specs = await kernelspecs(jp_fetch)
        spec = specs.get(name)
        return spec if spec and spec["spec"]["metadata"]["tfenv"]["kernel_ready"] is False else None

    spec = await wait_for(probed)
    assert spec["spec"]["display_name"] == "TensorFlow 2.99.2 (Docker CPU)"
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": name}))
    # jupyter_server answers a failed start with its error; the message names the fix.
    assert info.value.code in (400, 500)
    assert info.value.response is not None
    text = info.value.response.body.decode()
    assert f"jupyter tfenv prepare {ref}" in text
    assert await fetch_json(jp_fetch, "tfenv", "api", "kernels") == []


@pytest.mark.tfenv_app(auto_prepare=True)
async def test_auto_prepare_starts_the_kernel_anyway(
    jp_fetch: Any, tfenv_app: Any, no_ipykernel_image: str
) -> None:
    name = "tfenv-tensorflow-2.99.9-cpu"

    async def present() -> Any:
        specs = await kernelspecs(jp_fetch)
        return specs.get(name)

    spec = await wait_for(present)
    config = spec["spec"]["metadata"]["kernel_provisioner"]["config"]
    assert config.get("auto_prepare") is True or config["image"].endswith("-tfenv")
    response = await jp_fetch(
        "api", "kernels", method="POST", body=json.dumps({"name": name}), request_timeout=240
    )
    kernel_id = json.loads(response.body)["id"]
    try:
        model = await fetch_json(jp_fetch, "tfenv", "api", "kernels", kernel_id)
        assert model["status"] in ("running", "starting")
        images = await fetch_json(jp_fetch, "tfenv", "api", "images", params={"registry": "0"})
        assert f"{no_ipykernel_image}-tfenv" in [entry["image"] for entry in images["local"]]
    finally:
        await jp_fetch("api", "kernels", kernel_id, method="DELETE")
