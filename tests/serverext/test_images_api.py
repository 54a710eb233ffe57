"""GET images: local TensorFlow images with their facts, and the registry's tags (real
registry on loopback, Docker Hub's bearer-token flow, a registry that is down)."""

from __future__ import annotations

from typing import Any

import pytest

from jupyter_tfenv.registry import RegistryClient, RegistryError, registry_target

from .conftest import ImageKit, fetch_json
from .registry_helpers import LocalRegistry, RegistryFront, free_port


def _local(answer: dict[str, Any], ref: str) -> dict[str, Any]:
    found = [image for image in answer["local"] if image["image"] == ref]
    assert found, f"{ref} not in {[image['image'] for image in answer['local']]}"
    return found[0]


async def test_local_images_and_registry_tags(
    jp_fetch: Any,
    tfenv_app: Any,
    made_images: ImageKit,
    remote_tf: str,
    kernel_image: str,
    ns: str,
) -> None:
    ready = made_images.tag(kernel_image, f"{ns}/tensorflow:2.99.5")
    no_python = made_images.tiny(
        f"{ns}/tensorflow:2.99.4-gpu", megabytes=1, labels={"org.tensorflow.version": "2.99.4"}
    )
    answer = await fetch_json(jp_fetch, "tfenv", "api", "images")

    image = _local(answer, ready)
    assert image["tensorflow_version"] == "2.99.5"
    assert image["python_version"].startswith("3.11")
    assert image["kernel_ready"] is True
    assert image["gpu"] is False
    assert image["size"] > 10_000_000
    assert image["kernels"] == []
    assert image["id"].startswith("sha256:")

    broken = _local(answer, no_python)
    assert broken["gpu"] is True
    assert broken["kernel_ready"] is False
    assert "python3" in broken["problem"]

    assert answer["registry"] == {
        "repository": remote_tf,
        "tags": ["2.99.1", "2.99.0"],
        "error": None,
    }

    skipped = await fetch_json(jp_fetch, "tfenv", "api", "images", params={"registry": "0"})
    assert skipped["registry"]["tags"] == []
    assert _local(skipped, ready)["kernel_ready"] is True


@pytest.mark.tfenv(tensorflow_repository=f"127.0.0.1:{free_port()}/nobody/tensorflow")
async def test_registry_down_is_reported_not_fatal(
    jp_fetch: Any, tfenv_app: Any, tfenv_settings: dict[str, Any]
) -> None:
    answer = await fetch_json(jp_fetch, "tfenv", "api", "images")
    registry = answer["registry"]
    assert registry["tags"] == []
    host = tfenv_settings["tensorflow_repository"].split("/")[0]
    assert f"The registry {host} cannot be reached" in registry["error"]
    assert isinstance(answer["local"], list)


async def test_unknown_repository_is_named(registry: LocalRegistry) -> None:
    target = registry_target(f"{registry.host}/no-such/tensorflow")
    with pytest.raises(RegistryError) as info:
        await RegistryClient().list_tags(target)
    assert info.value.kind == "not_found"
    assert "no-such/tensorflow does not exist" in str(info.value)


async def test_bearer_token_flow(
    token_front: RegistryFront, registry: LocalRegistry, remote_tf: str, ns: str
) -> None:
    target = registry_target(remote_tf, api_url=token_front.url)
    client = RegistryClient(username="tester", password="s3cret")
    assert await client.list_tags(target) == ["2.99.1", "2.99.0"]
    assert token_front.token_requests == [
        {
            "service": "tfenv-test-registry",
            "scope": f"repository:{ns}/tensorflow:pull",
            "basic_ok": True,
        }
    ]
    # The token is reused: a second listing asks the token server nothing.
    assert await client.list_tags(target) == ["2.99.1", "2.99.0"]
    assert len(token_front.token_requests) == 1

    with pytest.raises(RegistryError) as info:
        await RegistryClient(username="tester", password="wrong").list_tags(target)
    assert info.value.kind == "auth"
    assert "refused access" in str(info.value)
    assert "registry_username" in str(info.value)


@pytest.mark.tfenv(registry_username="tester", registry_password="s3cret")
async def test_images_api_through_token_registry(
    jp_fetch: Any,
    tfenv_app: Any,
    token_front: RegistryFront,
    remote_tf: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tfenv_app.images.registry_api_url = token_front.url
    answer = await fetch_json(jp_fetch, "tfenv", "api", "images")
    assert answer["registry"]["tags"] == ["2.99.1", "2.99.0"]
    assert answer["registry"]["error"] is None
    assert token_front.token_requests[-1]["basic_ok"] is True
    # Neither the password nor a token reaches the log.
    assert "s3cret" not in caplog.text
