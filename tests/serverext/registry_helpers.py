"""A real registry on loopback, and a small front for the cases a registry will not play.

``LocalRegistry`` runs Debian's ``docker-registry`` (distribution 2.8) on a free loopback port
with filesystem storage in a temporary directory; it is stopped by its own PID.
``RegistryFront`` is a tornado server on another loopback port, in its own thread, that stands
before that registry in one of these modes:

- ``token``: Docker Hub's bearer-token flow (401 + ``WWW-Authenticate: Bearer realm=...``, a
  token server at ``/token`` that wants basic credentials), then the real registry's answer;
- ``slow``: the real registry, with blob bodies trickled out, so a pull takes seconds;
- ``stall``: accepts every request and never answers (a stalled mirror).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tornado import httpclient, web
from tornado.httpserver import HTTPServer

REGISTRY_BINARY = "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LocalRegistry:
    """docker-registry serving 127.0.0.1:<port>, storage in a temp dir, delete enabled."""

    def __init__(self) -> None:
        if not os.path.exists(REGISTRY_BINARY):
            raise RuntimeError(
                f"{REGISTRY_BINARY} is missing: `apt-get install -y docker-registry` (Debian's "
                "distribution registry) is needed for the registry tests."
            )
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.root = Path(tempfile.mkdtemp(prefix="tfenv-test-registry-"))
        self.config = self.root / "config.yml"
        self.config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n"
            "storage:\n"
            f"  filesystem:\n    rootdirectory: {self.root / 'data'}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n"
        )
        self.log = open(self.root / "registry.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [REGISTRY_BINARY, "serve", str(self.config)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/v2/", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
            if self.process.poll() is not None:
                break
        self.stop()
        raise RuntimeError(f"docker-registry did not start; see {self.root / 'registry.log'}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)


class _Front:
    """Shared state of a RegistryFront's handlers."""

    def __init__(self, upstream: str, mode: str, username: str, password: str) -> None:
        self.upstream = upstream
        self.mode = mode
        self.username = username
        self.password = password
        self.tokens: set[str] = set()
        self.token_requests: list[dict[str, Any]] = []
        self.registry_requests: list[str] = []
        self.port = 0
        self.release = asyncio.Event()


class _TokenHandler(web.RequestHandler):
    def initialize(self, front: _Front) -> None:
        self.front = front

    def get(self) -> None:
        front = self.front
        header = self.request.headers.get("Authorization", "")
        expected = (
            "Basic " + base64.b64encode(f"{front.username}:{front.password}".encode()).decode()
        )
        front.token_requests.append(
            {
                "service": self.get_query_argument("service", ""),
                "scope": self.get_query_argument("scope", ""),
                "basic_ok": header == expected,
            }
        )
        if header != expected:
            self.set_status(401)
            self.finish({"details": "bad credentials"})
            return
        token = secrets.token_hex(8)
        front.tokens.add(token)
        self.finish({"token": token, "expires_in": 300})


class _RegistryHandler(web.RequestHandler):
    def initialize(self, front: _Front) -> None:
        self.front = front

    async def _handle(self, path: str) -> None:
        front = self.front
        front.registry_requests.append(f"{self.request.method} /v2/{path}")
        if front.mode == "stall":
            await front.release.wait()
            return
        if front.mode == "token":
            header = self.request.headers.get("Authorization", "")
            if not (header.startswith("Bearer ") and header[7:] in front.tokens):
                name = path.rsplit("/tags/", 1)[0] if "/tags/" in path else ""
                self.set_status(401)
                self.set_header(
                    "WWW-Authenticate",
                    f'Bearer realm="http://127.0.0.1:{front.port}/token",'
                    f'service="tfenv-test-registry",scope="repository:{name}:pull"',
                )
                self.finish({"errors": [{"code": "UNAUTHORIZED"}]})
                return
        await self._proxy(path)

    async def _proxy(self, path: str) -> None:
        front = self.front
        query = f"?{self.request.query}" if self.request.query else ""
        # The engine sends one Accept header per manifest type; all of them must pass.
        accept = ", ".join(self.request.headers.get_list("Accept"))
        headers = {"Accept": accept} if accept else {}
        client = httpclient.AsyncHTTPClient(force_instance=True)
        try:
            answer = await client.fetch(
                f"{front.upstream}/v2/{path}{query}",
                method=self.request.method,
                headers=headers,
                raise_error=False,
                follow_redirects=False,
                request_timeout=60,
                allow_nonstandard_methods=True,
            )
        finally:
            client.close()
        self.set_status(answer.code)
        for key in {key for key, _ in answer.headers.get_all()}:
            if key.lower() in ("content-length", "transfer-encoding", "connection", "date"):
                continue
            # set_header replaces tornado's default Content-Type instead of adding a second.
            values = answer.headers.get_list(key)
            self.set_header(key, values[0])
            for value in values[1:]:
                self.add_header(key, value)
        body = answer.body or b""
        if self.request.method == "HEAD":
            self.set_header("Content-Length", answer.headers.get("Content-Length", "0"))
            self.finish()
            return
        if front.mode == "slow" and "/blobs/" in path and len(body) > 100_000:
            self.set_header("Content-Length", str(len(body)))
            step = max(len(body) // 40, 1)
            for start in range(0, len(body), step):
                self.write(body[start : start + step])
                await self.flush()
                await asyncio.sleep(0.1)
            self.finish()
            return
        self.finish(body)

    async def get(self, path: str) -> None:
        await self._handle(path)

    async def head(self, path: str) -> None:
        await self._handle(path)


class RegistryFront:
    """A tornado front (see the module doc) on 127.0.0.1:<port>, in its own thread."""

    def __init__(
        self, upstream: str, mode: str, username: str = "tester", password: str = "s3cret"
    ) -> None:
        self.state = _Front(upstream, mode, username, password)
        self.port = free_port()
        self.state.port = self.port
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"front-{mode}", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the registry front did not start")

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        self.state.release = asyncio.Event()
        app = web.Application(
            [
                (r"/token", _TokenHandler, {"front": self.state}),
                (r"/v2/(.*)", _RegistryHandler, {"front": self.state}),
            ]
        )
        # The engine first tries TLS on an insecure registry; tornado would wait for HTTP
        # headers that never come. A short header timeout makes it fall back to HTTP at once.
        server = HTTPServer(app, idle_connection_timeout=0.5)
        server.listen(self.port, address="127.0.0.1")
        self._server = server
        loop.call_soon(self._ready.set)
        try:
            loop.run_forever()
        finally:
            server.stop()
            loop.run_until_complete(asyncio.sleep(0))
            with contextlib.suppress(Exception):
                loop.run_until_complete(server.close_all_connections())
            loop.close()

    @property
    def token_requests(self) -> list[dict[str, Any]]:
        return self.state.token_requests

    @property
    def registry_requests(self) -> list[str]:
        return self.state.registry_requests

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.state.release.set)
            # Let released handlers finish before the loop stops.
            loop.call_soon_threadsafe(loop.call_later, 0.2, loop.stop)
        self._thread.join(10)
