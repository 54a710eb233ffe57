"""Tag lists from a registry, through the Registry HTTP API v2 and its token flow.

``GET /v2/<name>/tags/list`` answers 401 on registries that use token auth (Docker Hub does,
even for public repositories) with ``WWW-Authenticate: Bearer realm=...,service=...,scope=...``.
The client then asks the realm for a token (with the user's credentials when configured) and
repeats the request with ``Authorization: Bearer <token>``. Long lists come in pages linked by
a ``Link: <...>; rel="next"`` header. Tokens and passwords are never logged.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urljoin, urlparse

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse

from .errors import TfenvError
from .images import version_key
from .mirrors import HUB_DOMAINS, hub_path, parse

log = logging.getLogger("jupyter_tfenv")

DOCKER_HUB_API = "https://registry-1.docker.io"
# Enough for every tag of tensorflow/tensorflow (about 3,000) at 1,000 per page.
MAX_PAGES = 20
PAGE_SIZE = 1000
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


class RegistryError(TfenvError):
    """The registry could not list tags; ``kind`` is "unreachable", "auth", "not_found" or
    "error"."""

    def __init__(self, message: str, kind: str = "error") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class RegistryTarget:
    """Where a repository's tags are listed: API base URL and the path on that registry."""

    api_url: str
    path: str
    repository: str


def registry_target(repository: str, api_url: str = "") -> RegistryTarget:
    """Resolve a repository name as Docker writes it to its API base URL and path."""
    reference = parse(repository)
    if reference.domain in HUB_DOMAINS:
        return RegistryTarget(api_url or DOCKER_HUB_API, hub_path(reference), repository)
    if not api_url:
        host = (
            reference.domain.rsplit(":", 1)[0]
            if "]" not in reference.domain
            else (reference.domain.split("]")[0] + "]")
        )
        # Docker itself talks plain HTTP to loopback registries and HTTPS to any other.
        scheme = "http" if host in _LOOPBACK_HOSTS else "https"
        api_url = f"{scheme}://{reference.domain}"
    return RegistryTarget(api_url.rstrip("/"), reference.path, repository)


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    params = {key.lower(): value for key, value in re.findall(r'(\w+)="([^"]*)"', rest)}
    return scheme.lower(), params


def _next_link(response: HTTPResponse) -> str | None:
    for value in response.headers.get_list("Link"):
        match = re.search(r'<([^>]+)>\s*;\s*rel="?next"?', value)
        if match:
            return match.group(1)
    return None


def sort_tags(tags: list[str]) -> list[str]:
    """Newest version first; tags without a version ("latest", "nightly") after them."""
    return sorted(set(tags), key=version_key, reverse=True)


class RegistryClient:
    """An async client for the tag list of one registry, with bearer-token caching."""

    def __init__(
        self,
        username: str = "",
        password: str = "",
        timeout: float = 15.0,
    ) -> None:
        self._username = username
        self._password = password
        self._timeout = timeout
        self._tokens: dict[tuple[str, str, str], tuple[str, float]] = {}

    def _basic(self) -> str | None:
        if not self._username:
            return None
        raw = f"{self._username}:{self._password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    async def _fetch(self, url: str, headers: dict[str, str]) -> HTTPResponse:
        client = AsyncHTTPClient(force_instance=True)
        request = HTTPRequest(
            url,
            headers=headers,
            connect_timeout=self._timeout,
            request_timeout=self._timeout,
            follow_redirects=True,
        )
        try:
            return await client.fetch(request, raise_error=False)
        except (OSError, TimeoutError) as error:
            host = urlparse(url).netloc
            raise RegistryError(
                f"The registry {host} cannot be reached ({error}). Check the network and the "
                "registry address (TfenvImages.tensorflow_repository / registry_api_url).",
                "unreachable",
            ) from error
        except HTTPClientError as error:
            # Timeouts and similar arrive as a 599 error from tornado's client.
            host = urlparse(url).netloc
            raise RegistryError(
                f"The registry {host} cannot be reached ({error}). Check the network and the "
                "registry address (TfenvImages.tensorflow_repository / registry_api_url).",
                "unreachable",
            ) from error
        finally:
            client.close()

    async def _token(self, challenge: dict[str, str], scope_default: str) -> str:
        realm = challenge.get("realm", "")
        service = challenge.get("service", "")
        scope = challenge.get("scope", scope_default)
        key = (realm, service, scope)
        cached = self._tokens.get(key)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        parsed = urlparse(realm)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise RegistryError(f"The registry sent an unusable token realm {realm!r}.", "auth")
        query = {key: value for key, value in (("service", service), ("scope", scope)) if value}
        url = realm + ("&" if "?" in realm else "?") + urlencode(query)
        headers: dict[str, str] = {}
        basic = self._basic()
        # Credentials go to the token server only over HTTPS (or to this machine).
        if basic and (parsed.scheme == "https" or parsed.hostname in _LOOPBACK_HOSTS):
            headers["Authorization"] = basic
        response = await self._fetch(url, headers)
        if response.code in (401, 403):
            raise RegistryError(
                f"The token server {parsed.netloc} refused access to {scope!r} (HTTP "
                f"{response.code}). Check TfenvImages.registry_username / registry_password.",
                "auth",
            )
        if response.code != 200:
            raise RegistryError(
                f"The token server {parsed.netloc} answered HTTP {response.code}.", "error"
            )
        try:
            body = json.loads(response.body or b"{}")
        except ValueError as error:
            raise RegistryError(
                f"The token server {parsed.netloc} sent no JSON.", "error"
            ) from error
        token = body.get("token") or body.get("access_token")
        if not isinstance(token, str) or not token:
            raise RegistryError(f"The token server {parsed.netloc} sent no token.", "error")
        lifetime = float(body.get("expires_in") or 60)
        # Renew a little early, so a token never expires between check and use.
        self._tokens[key] = (token, time.monotonic() + max(lifetime - 10, 5))
        return token

    async def _get(self, url: str, scope: str) -> HTTPResponse:
        response = await self._fetch(url, {"Accept": "application/json"})
        if response.code != 401:
            return response
        scheme, challenge = _parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if scheme == "bearer":
            token = await self._token(challenge, scope)
            authorization = f"Bearer {token}"
        elif scheme == "basic" and self._basic():
            authorization = self._basic() or ""
        else:
            return response
        return await self._fetch(
            url, {"Accept": "application/json", "Authorization": authorization}
        )

    async def list_tags(self, target: RegistryTarget) -> list[str]:
        """Every tag of ``target``'s repository, newest version first."""
        scope = f"repository:{target.path}:pull"
        url: str | None = f"{target.api_url}/v2/{target.path}/tags/list?n={PAGE_SIZE}"
        tags: list[str] = []
        pages = 0
        while url is not None and pages < MAX_PAGES:
            pages += 1
            response = await self._get(url, scope)
            self._raise_for(response, target)
            try:
                body: Any = json.loads(response.body or b"{}")
            except ValueError as error:
                raise RegistryError(
                    f"{target.api_url} sent no JSON tag list for {target.repository}.", "error"
                ) from error
            tags.extend(tag for tag in body.get("tags") or [] if isinstance(tag, str))
            link = _next_link(response)
            url = urljoin(url, link) if link else None
        return sort_tags(tags)

    @staticmethod
    def _raise_for(response: HTTPResponse, target: RegistryTarget) -> None:
        if response.code == 200:
            return
        host = urlparse(target.api_url).netloc
        if response.code in (401, 403):
            raise RegistryError(
                f"The registry {host} refused to list the tags of {target.repository} (HTTP "
                f"{response.code}). It needs credentials: set TfenvImages.registry_username and "
                "registry_password.",
                "auth",
            )
        if response.code == 404:
            raise RegistryError(
                f"The repository {target.repository} does not exist on {host}. Check "
                "TfenvImages.tensorflow_repository.",
                "not_found",
            )
        raise RegistryError(
            f"The registry {host} answered HTTP {response.code} to the tag list of "
            f"{target.repository}.",
            "error",
        )


@dataclass
class _CacheEntry:
    tags: list[str]
    error: str | None
    expires: float


class TagCache:
    """Tag lists per repository, kept for ``ttl`` seconds (errors for a shorter while)."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], _CacheEntry] = {}

    async def get(
        self, client: RegistryClient, target: RegistryTarget, ttl: float
    ) -> tuple[list[str], str | None]:
        key = (target.api_url, target.path)
        entry = self._entries.get(key)
        now = time.monotonic()
        if entry is not None and entry.expires > now:
            return entry.tags, entry.error
        try:
            tags = await client.list_tags(target)
            error = None
        except RegistryError as failure:
            log.warning("Could not list the tags of %s: %s", target.repository, failure)
            tags, error = [], str(failure)
        # A failure is retried sooner than a good answer is refreshed.
        lifetime = ttl if error is None else min(ttl, 30.0)
        self._entries[key] = _CacheEntry(tags, error, now + lifetime)
        return tags, error

    def clear(self) -> None:
        self._entries.clear()
