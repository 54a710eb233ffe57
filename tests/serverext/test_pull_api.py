"""POST pulls against a real registry on loopback: progress over SSE, a client that leaves
mid-pull, one pull per image, a stalled mirror, an unknown tag, a registry that is down, and
Docker Hub names rewritten for a mirror (B19)."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from typing import Any

import pytest
from jupyter_server.utils import url_path_join

from .conftest import ImageKit, fetch_json, post_json, wait_job
from .registry_helpers import LocalRegistry, RegistryFront, free_port


async def read_events(jp_fetch: Any, job_id: str, timeout: float = 90) -> list[dict[str, Any]]:
    """Follow a job's event stream to its end; return the states it sent."""
    events: list[dict[str, Any]] = []
    buffer = b""

    def on_chunk(chunk: bytes) -> None:
        nonlocal buffer
        buffer += chunk
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            for line in block.split(b"\n"):
                if line.startswith(b"data: "):
                    events.append(json.loads(line[6:]))

    response = await jp_fetch(
        "tfenv",
        "api",
        "jobs",
        job_id,
        "events",
        streaming_callback=on_chunk,
        request_timeout=timeout,
    )
    assert response.headers["Content-Type"] == "text/event-stream"
    return events


async def test_pull_progress_is_streamed(
    jp_fetch: Any,
    tfenv_app: Any,
    made_images: ImageKit,
    fresh_remote: str,
    slow_front: RegistryFront,
) -> None:
    image = made_images.remember(f"{slow_front.host}/{fresh_remote}")
    status, job = await post_json(jp_fetch, "tfenv", "api", "pulls", body={"image": image})
    assert status == 202
    assert (job["kind"], job["image"], job["status"]) == ("pull", image, "running")

    events = await read_events(jp_fetch, job["id"])
    assert events[-1]["status"] == "done", events[-1]
    partial = [
        event
        for event in events
        if 0 < event["progress"]["bytes_done"] < event["progress"]["bytes_total"]
    ]
    assert partial, "no event showed a partly downloaded layer"
    layer = next(iter(partial[0]["progress"]["layers"].values()))
    assert layer["status"] == "Downloading"
    assert layer["total"] > 3_000_000
    final = events[-1]
    assert final["progress"]["bytes_done"] == final["progress"]["bytes_total"] > 3_000_000
    assert final["result"]["image"] == image
    assert final["result"]["digest"].startswith("sha256:")
    assert made_images.exists(image)

    answer = await fetch_json(jp_fetch, "tfenv", "api", "images", params={"registry": "0"})
    assert image in [entry["image"] for entry in answer["local"]]


async def test_client_leaving_mid_pull_neither_cancels_nor_loses_it(
    jp_fetch: Any,
    jp_serverapp: Any,
    jp_http_port: int,
    jp_base_url: str,
    tfenv_app: Any,
    made_images: ImageKit,
    fresh_remote: str,
    slow_front: RegistryFront,
) -> None:
    image = made_images.remember(f"{slow_front.host}/{fresh_remote}")
    status, job = await post_json(jp_fetch, "tfenv", "api", "pulls", body={"image": image})
    assert status == 202

    # A browser tab: reads the first state of the stream, then goes away mid-pull.
    reader, writer = await asyncio.open_connection("127.0.0.1", jp_http_port)
    path = url_path_join(jp_base_url, "tfenv", "api", "jobs", job["id"], "events")
    token = jp_serverapp.identity_provider.token
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: token {token}\r\n\r\n".encode()
    )
    seen = b""
    while b"data: " not in seen:
        seen += await asyncio.wait_for(reader.read(4096), 10)
    writer.close()
    await writer.wait_closed()
    first = json.loads(seen.split(b"data: ", 1)[1].split(b"\n", 1)[0])
    assert first["status"] == "running"

    # Coming back later: the same job, finished, with its progress kept.
    final = await wait_job(jp_fetch, job["id"])
    assert final["status"] == "done", final
    assert final["progress"]["bytes_done"] == final["progress"]["bytes_total"] > 3_000_000
    assert final["created"] == first["created"]
    listed = await fetch_json(jp_fetch, "tfenv", "api", "jobs")
    assert [entry["id"] for entry in listed] == [job["id"]]
    # A stream opened after the end sends the final state once and ends.
    again = await read_events(jp_fetch, job["id"])
    assert [event["status"] for event in again] == ["done"]
    assert made_images.exists(image)


@pytest.mark.tfenv(pull_stall_timeout=2.0)
async def test_one_pull_per_image_and_stalled_pull_times_out(
    jp_fetch: Any, tfenv_app: Any, stall_front: RegistryFront, ns: str
) -> None:
    image = f"{stall_front.host}/{ns}/tensorflow:2.99.0"
    started = time.monotonic()
    status, job = await post_json(jp_fetch, "tfenv", "api", "pulls", body={"image": image})
    assert status == 202
    status, busy = await post_json(jp_fetch, "tfenv", "api", "pulls", body={"image": image})
    assert status == 409
    assert busy["id"] == job["id"]

    final = await wait_job(jp_fetch, job["id"], timeout=30)
    # Given up after the stall timeout, not at once and not much later.
    assert 1.9 <= final["updated"] - final["created"] < 15
    assert time.monotonic() - started < 20
    assert final["status"] == "error"
    assert "no progress for 2 s" in final["error"]
    assert "pull_stall_timeout" in final["error"]
    assert "registry_mirrors" in final["error"]
    # The engine did reach the registry: it is the registry that stalled.
    assert any(line.startswith("GET /v2/") for line in stall_front.registry_requests)

    # Once that pull has ended, the image may be pulled again.
    status, retry = await post_json(jp_fetch, "tfenv", "api", "pulls", body={"image": image})
    assert status == 202
    assert retry["id"] != job["id"]


async def test_unknown_tag_is_named(
    jp_fetch: Any, tfenv_app: Any, registry: LocalRegistry, remote_tf: str
) -> None:
    image = f"{remote_tf}:9.9.9"
    status, job = await post_json(jp_fetch, "tfenv", "api", "pulls", body={"image": image})
    assert status == 202
    final = await wait_job(jp_fetch, job["id"])
    assert final["status"] == "error"
    assert "the tag '9.9.9' does not exist" in final["error"]
    assert "jupyter tfenv images" in final["error"]


async def test_registry_down_is_named(jp_fetch: Any, tfenv_app: Any, ns: str) -> None:
    host = f"127.0.0.1:{free_port()}"
    status, job = await post_json(
        jp_fetch, "tfenv", "api", "pulls", body={"image": f"{host}/{ns}/tensorflow:1.0"}
    )
    assert status == 202
    final = await wait_job(jp_fetch, job["id"])
    assert final["status"] == "error"
    assert f"the registry {host} cannot be reached" in final["error"]
    assert "connection refused" in final["error"]


def _manifest_digest(registry: LocalRegistry, path: str, tag: str) -> str:
    request = urllib.request.Request(
        f"{registry.url}/v2/{path}/manifests/{tag}",
        method="HEAD",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return str(answer.headers["Docker-Content-Digest"])


async def test_docker_hub_names_go_through_the_mirror(
    jp_fetch: Any,
    tfenv_app: Any,
    made_images: ImageKit,
    registry: LocalRegistry,
    remote_tf: str,
    ns: str,
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    # Mirrors are tried in order: the first is down, the second (our registry) serves.
    tfenv_app.images.registry_mirrors = [dead, f"http://{registry.host}/"]
    assert tfenv_app.images.registry_mirrors == [dead, registry.host]

    # A Hub repository with a namespace keeps its path and tag.
    hub_name = made_images.remember(f"{ns}/tensorflow:2.99.0")
    status, job = await post_json(jp_fetch, "tfenv", "api", "pulls", body={"image": hub_name})
    assert status == 202
    final = await wait_job(jp_fetch, job["id"])
    assert final["status"] == "done", final
    assert final["result"]["source"] == f"{registry.host}/{ns}/tensorflow:2.99.0"
    assert final["result"]["image"] == hub_name
    assert made_images.exists(hub_name)
    assert not made_images.exists(f"{registry.host}/{ns}/tensorflow:2.99.0")
    assert not made_images.exists(f"{dead}/{ns}/tensorflow:2.99.0")

    # An official image ("ubuntu:22.04" style) is looked up under library/ on the mirror.
    official = f"{ns}-official:1"
    made_images.tag(hub_name, f"{registry.host}/library/{official}")
    made_images.push(f"{registry.host}/library/{official}")
    made_images.remove(f"{registry.host}/library/{official}")
    made_images.remember(official)
    status, job = await post_json(jp_fetch, "tfenv", "api", "pulls", body={"image": official})
    final = await wait_job(jp_fetch, job["id"])
    assert final["status"] == "done", final
    assert final["result"]["source"] == f"{registry.host}/library/{official}"
    assert final["result"]["image"] == official
    assert made_images.exists(official)

    # A digest is kept, and checked: the mirror must serve exactly that manifest.
    digest = _manifest_digest(registry, f"{ns}/tensorflow", "2.99.1")
    pinned = f"{ns}/tensorflow@{digest}"
    made_images.remember(f"{registry.host}/{pinned}")
    status, job = await post_json(jp_fetch, "tfenv", "api", "pulls", body={"image": pinned})
    final = await wait_job(jp_fetch, job["id"])
    assert final["status"] == "done", final
    assert final["result"]["source"] == f"{registry.host}/{pinned}"
    assert final["result"]["digest"] == digest

    # Names of other registries are never rewritten.
    direct = made_images.remember(f"{remote_tf}:2.99.1")
    status, job = await post_json(jp_fetch, "tfenv", "api", "pulls", body={"image": direct})
    final = await wait_job(jp_fetch, job["id"])
    assert final["status"] == "done", final
    assert final["result"]["source"] == direct


@pytest.mark.tfenv(mirror_fallback=False)
async def test_every_mirror_failing_names_each_cause(
    jp_fetch: Any, tfenv_app: Any, registry: LocalRegistry, ns: str
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    tfenv_app.images.registry_mirrors = [dead, registry.host]
    status, job = await post_json(
        jp_fetch, "tfenv", "api", "pulls", body={"image": f"{ns}/tensorflow:0.0.404"}
    )
    assert status == 202
    final = await wait_job(jp_fetch, job["id"])
    assert final["status"] == "error"
    assert (
        f"{dead}/{ns}/tensorflow:0.0.404: the registry {dead} cannot be reached" in (final["error"])
    )
    assert "the tag '0.0.404' does not exist" in final["error"]
