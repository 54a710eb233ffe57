"""Bad request bodies get a 400 whose JSON names the field at fault; unknown ids get 404."""

from __future__ import annotations

from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from .conftest import fetch_json, post_json


@pytest.mark.parametrize(
    ("route", "body", "field", "words"),
    [
        ("pulls", "not json", "body", "not valid JSON"),
        ("pulls", ["tensorflow/tensorflow"], "body", "JSON object"),
        ("pulls", {}, "image", "image name"),
        ("pulls", {"image": 42}, "image", "image name"),
        ("pulls", {"image": "Tensorflow/TF:2"}, "image", "lower-case"),
        ("pulls", {"image": "--rm"}, "image", "command-line option"),
        ("pulls", {"image": "tf;rm -rf /"}, "image", "cannot appear"),
        ("prepares", {"image": ""}, "image", "image name"),
    ],
)
async def test_bad_image_bodies(
    jp_fetch: Any, tfenv_app: Any, route: str, body: Any, field: str, words: str
) -> None:
    raw = body if isinstance(body, str) else None
    if raw is not None:
        with pytest.raises(HTTPClientError) as info:
            await jp_fetch("tfenv", "api", route, method="POST", body=raw)
        assert info.value.response is not None
        import json

        status, answer = info.value.code, json.loads(info.value.response.body)
    else:
        status, answer = await post_json(jp_fetch, "tfenv", "api", route, body=body)
    assert status == 400
    assert answer["field"] == field
    assert words in answer["message"]


async def test_unknown_ids_are_404(jp_fetch: Any, tfenv_app: Any) -> None:
    for parts in (
        ("tfenv", "api", "jobs", "0123456789abcdef"),
        ("tfenv", "api", "jobs", "0123456789abcdef", "events"),
        ("tfenv", "api", "kernels", "5f1d3c4e-0000-0000-0000-000000000000"),
    ):
        with pytest.raises(HTTPClientError) as info:
            await jp_fetch(*parts)
        assert info.value.code == 404, parts
    status, answer = await post_json(
        jp_fetch,
        "tfenv",
        "api",
        "kernels",
        "5f1d3c4e-0000-0000-0000-000000000000",
        "switch",
        body={"gpus": "all"},
    )
    assert status == 404
    assert "No kernel" in answer["message"]


async def test_version_and_empty_lists(jp_fetch: Any, tfenv_app: Any) -> None:
    from jupyter_tfenv import __version__

    assert await fetch_json(jp_fetch, "tfenv", "api", "version") == {"version": __version__}
    assert await fetch_json(jp_fetch, "tfenv", "api", "kernels") == []
    assert await fetch_json(jp_fetch, "tfenv", "api", "jobs") == []


async def test_registry_query_must_be_a_flag(jp_fetch: Any, tfenv_app: Any) -> None:
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("tfenv", "api", "images", params={"registry": "maybe"})
    assert info.value.code == 400
    assert b'"field": "registry"' in info.value.response.body
