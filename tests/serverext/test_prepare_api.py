"""POST prepares: an image without ipykernel gets a thin kernel-ready derivative, built once
per source image, and the source's kernel then runs in it."""

from __future__ import annotations

from typing import Any

import docker

from jupyter_tfenv.images import LABEL_PREPARED_FROM

from .conftest import ImageKit, fetch_json, post_json, wait_for, wait_job
from .test_pull_api import read_events


async def test_prepare_builds_once_and_kernels_use_the_result(
    jp_fetch: Any,
    tfenv_app: Any,
    no_ipykernel_image: str,
    made_images: ImageKit,
    docker_client: docker.DockerClient,
) -> None:
    source_id = docker_client.images.get(no_ipykernel_image).id
    status, job = await post_json(
        jp_fetch, "tfenv", "api", "prepares", body={"image": no_ipykernel_image}
    )
    assert status == 202
    assert (job["kind"], job["image"]) == ("prepare", no_ipykernel_image)

    events = await read_events(jp_fetch, job["id"], timeout=240)
    final = events[-1]
    assert final["status"] == "done", final
    prepared = f"{no_ipykernel_image}-tfenv"
    assert final["result"]["image"] == prepared
    assert final["result"]["source_id"] == source_id
    assert final["result"]["outcome"] in ("built", "reused")
    if final["result"]["outcome"] == "built":
        assert any("ipykernel" in event["message"] for event in events[:-1]), [
            event["message"] for event in events
        ]
    image = docker_client.images.get(prepared)
    assert image.labels[LABEL_PREPARED_FROM] == source_id

    # Built once per source: asking again reuses it.
    status, job = await post_json(
        jp_fetch, "tfenv", "api", "prepares", body={"image": no_ipykernel_image}
    )
    again = await wait_job(jp_fetch, job["id"])
    assert (again["status"], again["result"]["outcome"]) == ("done", "reused")
    assert again["message"] == f"Reusing {prepared}, prepared earlier"

    answer = await fetch_json(jp_fetch, "tfenv", "api", "images", params={"registry": "0"})
    by_ref = {entry["image"]: entry for entry in answer["local"]}
    assert by_ref[no_ipykernel_image]["kernel_ready"] is False
    assert by_ref[prepared]["kernel_ready"] is True
    assert by_ref[prepared]["prepared_from"] == source_id

    # The source's kernel keeps its name and now runs in the prepared image; the prepared image
    # gets no kernel of its own.
    async def spec_of_source() -> Any:
        specs = (await fetch_json(jp_fetch, "api", "kernelspecs"))["kernelspecs"]
        spec = specs.get("tfenv-tensorflow-2.99.9-cpu")
        if spec is None:
            return None
        config = spec["spec"]["metadata"]["kernel_provisioner"]["config"]
        return (spec, specs) if config["image"] == prepared else None

    spec, specs = await wait_for(spec_of_source)
    assert spec["spec"]["display_name"] == "TensorFlow 2.99.9 (Docker CPU)"
    assert spec["spec"]["metadata"]["tfenv"]["kernel_ready"] is True
    assert "tfenv-tensorflow-2.99.9-tfenv-cpu" not in specs


async def test_prepare_of_a_ready_image_changes_nothing(
    jp_fetch: Any, tfenv_app: Any, kernel_image: str, made_images: ImageKit, ns: str
) -> None:
    ready = made_images.tag(kernel_image, f"{ns}/tensorflow:2.99.7")
    status, job = await post_json(jp_fetch, "tfenv", "api", "prepares", body={"image": ready})
    assert status == 202
    final = await wait_job(jp_fetch, job["id"])
    assert final["status"] == "done"
    assert final["result"]["outcome"] == "ready"
    assert final["result"]["image"] == ready
    assert not made_images.exists(f"{ready}-tfenv")


async def test_prepare_of_a_missing_image_pulls_it_first(
    jp_fetch: Any, tfenv_app: Any, remote_tf: str, made_images: ImageKit
) -> None:
    # The registry's images hold no Python at all: the pull works, then prepare says why not.
    image = made_images.remember(f"{remote_tf}:2.99.0")
    made_images.remove(image)
    status, job = await post_json(jp_fetch, "tfenv", "api", "prepares", body={"image": image})
    assert status == 202
    final = await wait_job(jp_fetch, job["id"])
    assert final["status"] == "error"
    assert "no 'python3' on its PATH" in final["error"]
    jobs = await fetch_json(jp_fetch, "tfenv", "api", "jobs")
    pulls = [entry for entry in jobs if entry["kind"] == "pull" and entry["image"] == image]
    assert [entry["status"] for entry in pulls] == ["done"]
