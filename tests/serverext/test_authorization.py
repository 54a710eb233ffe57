"""A user the authorizer denies the "tfenv" resource gets 403 on every route and verb."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jupyter_server.auth.authorizer import Authorizer
from tornado.httpclient import HTTPClientError

from jupyter_tfenv.serverext.handlers import handler_routes

from .test_auth import _concrete, _own_verbs


class DenyTfenv(Authorizer):  # type: ignore[misc]
    """Allows everything except the "tfenv" resource."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return resource != "tfenv"


@pytest.fixture
def jp_server_config(jp_server_config: Any) -> Any:
    jp_server_config.ServerApp.authorizer_class = DenyTfenv
    return jp_server_config


@pytest.mark.parametrize(
    ("pattern", "verb"),
    [(pattern, verb) for pattern, handler in handler_routes() for verb in _own_verbs(handler)],
)
async def test_authenticated_but_not_authorized_is_refused(
    jp_fetch: Any, tfenv_app: Any, pattern: str, verb: str
) -> None:
    body = json.dumps({"image": "tensorflow/tensorflow:2.21.0"}) if verb == "post" else None
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch(_concrete(pattern), method=verb.upper(), body=body)
    assert info.value.code == 403, f"{verb.upper()} {pattern}: {info.value.code}"
    # The rest of the server still answers the same user: only "tfenv" is denied.
    response = await jp_fetch("api", "kernelspecs")
    assert response.code == 200
