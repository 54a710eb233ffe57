"""Every route and verb of the extension refuses requests that are not authenticated."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from jupyter_tfenv.serverext.handlers import handler_routes

VERBS = ("get", "post", "put", "patch", "delete")


def _concrete(pattern: str) -> str:
    """A request path for a route pattern: sample values for its named groups."""
    path = re.sub(r"\(\?P<kernel_id>[^)]*\)", "00000000-0000-0000-0000-000000000000", pattern)
    return re.sub(r"\(\?P<job_id>[^)]*\)", "0123456789abcdef", path)


def _own_verbs(handler: type) -> list[str]:
    return [verb for verb in VERBS if verb in handler.__dict__]


def test_every_handler_defines_verbs_and_only_wrapped_ones() -> None:
    routes = handler_routes()
    assert len(routes) == 10
    for pattern, handler in routes:
        verbs = _own_verbs(handler)
        assert verbs, f"{pattern}: {handler.__name__} has no verb"
        for verb in verbs:
            # authorized() wraps the method; web.authenticated wraps that again.
            method = handler.__dict__[verb]
            assert hasattr(method, "__wrapped__"), f"{handler.__name__}.{verb} is not wrapped"
            assert hasattr(method.__wrapped__, "__wrapped__"), (
                f"{handler.__name__}.{verb} lacks @web.authenticated or @authorized"
            )


@pytest.mark.parametrize(
    ("pattern", "verb"),
    [(pattern, verb) for pattern, handler in handler_routes() for verb in _own_verbs(handler)],
)
async def test_requests_without_token_are_refused(
    jp_fetch: Any, tfenv_app: Any, pattern: str, verb: str
) -> None:
    body = json.dumps({"image": "tensorflow/tensorflow:2.21.0"}) if verb == "post" else None
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch(
            _concrete(pattern),
            method=verb.upper(),
            body=body,
            headers={"Authorization": ""},
            follow_redirects=False,
        )
    assert info.value.code in (401, 403), f"{verb.upper()} {pattern}: {info.value.code}"


async def test_cookie_sessions_need_the_xsrf_token_for_post(
    jp_fetch: Any, jp_serverapp: Any, tfenv_app: Any
) -> None:
    """A browser session (login cookie, no token header) must send X-XSRFToken on POST."""
    from http.cookies import SimpleCookie
    from urllib.parse import urlencode

    login = await jp_fetch("login", headers={"Authorization": ""})
    jar: SimpleCookie = SimpleCookie()
    for header in login.headers.get_list("Set-Cookie"):
        jar.load(header)
    xsrf = jar["_xsrf"].value
    form = urlencode({"password": jp_serverapp.identity_provider.token, "_xsrf": xsrf})
    answer = await jp_fetch(
        "login",
        method="POST",
        body=form,
        headers={"Authorization": "", "Cookie": f"_xsrf={xsrf}"},
        follow_redirects=False,
        raise_error=False,
    )
    assert answer.code == 302
    for header in answer.headers.get_list("Set-Cookie"):
        jar.load(header)
    cookies = "; ".join(f"{name}={morsel.value}" for name, morsel in jar.items())
    session = {"Authorization": "", "Cookie": cookies}

    # The session is valid for reading...
    version = await jp_fetch("tfenv", "api", "version", headers=dict(session))
    assert version.code == 200
    # ...but a POST without the XSRF token is refused, with it accepted (here: a 400 for the
    # body, which shows the request got past authentication and XSRF).
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("tfenv", "api", "pulls", method="POST", body="{}", headers=dict(session))
    assert info.value.code == 403
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch(
            "tfenv",
            "api",
            "pulls",
            method="POST",
            body="{}",
            headers=dict(session, **{"X-XSRFToken": xsrf}),
        )
    assert info.value.code == 400
