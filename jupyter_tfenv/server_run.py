"""Execute a notebook through a running Jupyter server, as a browser would.

The notebook is read through the contents API, a session starts its kernel (so the server's
provisioner runs it in a container), each code cell is sent over the kernel websocket, and the
outputs are saved back through the contents API. Used by ``make demo`` and the end-to-end tests.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

OutputCallback = Callable[[int, dict[str, Any]], None]


class ServerSession:
    """A REST + websocket client for one Jupyter server (token auth)."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.token = token
        self.http = AsyncHTTPClient()

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}", "Content-Type": "application/json"}

    async def request(self, method: str, path: str, body: Any = None, timeout: float = 300) -> Any:
        """Call the REST API; return the decoded JSON answer (None for an empty one)."""
        response = await self.http.fetch(
            HTTPRequest(
                self.base_url + path,
                method=method,
                headers=self._headers(),
                body=None if body is None else json.dumps(body),
                request_timeout=timeout,
                allow_nonstandard_methods=True,
            ),
            raise_error=True,
        )
        return json.loads(response.body) if response.body else None

    async def channels(self, kernel_id: str) -> WebSocketClientConnection:
        ws_url = "ws" + self.base_url[len("http") :] + f"api/kernels/{kernel_id}/channels"
        request = HTTPRequest(
            f"{ws_url}?session_id={uuid.uuid4().hex}",
            headers=self._headers(),
            request_timeout=120,
        )
        return await websocket_connect(request, max_message_size=512 * 1024 * 1024)


def _message(msg_type: str, content: dict[str, Any], channel: str = "shell") -> dict[str, Any]:
    return {
        "header": {
            "msg_id": uuid.uuid4().hex,
            "msg_type": msg_type,
            "username": "tfenv",
            "session": uuid.uuid4().hex,
            "date": "",
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "content": content,
        "channel": channel,
        "buffers": [],
    }


def _output_from(msg: dict[str, Any]) -> dict[str, Any] | None:
    """The nbformat output for an iopub message, or None for messages that are no output."""
    kind = msg["msg_type"]
    content = msg["content"]
    if kind == "stream":
        return {"output_type": "stream", "name": content["name"], "text": content["text"]}
    if kind in ("display_data", "execute_result"):
        output = {"output_type": kind, "data": content["data"], "metadata": content["metadata"]}
        if kind == "execute_result":
            output["execution_count"] = content.get("execution_count")
        return output
    if kind == "error":
        return {
            "output_type": "error",
            "ename": content["ename"],
            "evalue": content["evalue"],
            "traceback": content["traceback"],
        }
    return None


async def execute_cell(
    ws: WebSocketClientConnection,
    code: str,
    timeout: float,
    on_output: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run ``code``; return the execute_reply content and the cell's outputs.

    ``on_output`` sees each output as it arrives, so a long cell shows progress while it runs.
    """
    request = _message(
        "execute_request",
        {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        },
    )
    msg_id = request["header"]["msg_id"]
    await ws.write_message(json.dumps(request))
    outputs: list[dict[str, Any]] = []
    reply: dict[str, Any] | None = None
    idle = False
    deadline = time.monotonic() + timeout
    while reply is None or not idle:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"Cell did not finish within {timeout:.0f}s: {code[:80]!r}")
        raw = await asyncio.wait_for(ws.read_message(), timeout=remaining)
        if raw is None:
            raise ConnectionError("The kernel websocket closed while a cell ran.")
        msg = json.loads(raw)
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        if msg["channel"] == "shell" and msg["msg_type"] == "execute_reply":
            reply = msg["content"]
        elif msg["channel"] == "iopub":
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                idle = True
            else:
                output = _output_from(msg)
                if output is not None:
                    outputs.append(output)
                    if on_output is not None:
                        on_output(output)
    return reply, outputs


async def run_notebook(
    session: ServerSession,
    path: str,
    kernel_name: str,
    timeout: float = 600,
    on_output: OutputCallback | None = None,
    save: bool = True,
) -> dict[str, Any]:
    """Execute every code cell of the notebook at API ``path``; return the executed notebook.

    Stops at the first failing cell (as ``nbconvert --execute`` does) and raises RuntimeError
    naming it, after saving what ran so far.
    """
    api_path = quote(path)
    model = await session.request("GET", f"api/contents/{api_path}?content=1")
    notebook = model["content"]
    created = await session.request(
        "POST",
        "api/sessions",
        {
            "path": path,
            "type": "notebook",
            "name": path,
            "kernel": {"name": kernel_name},
        },
        timeout=timeout,
    )
    kernel_id = created["kernel"]["id"]
    failure: str | None = None
    try:
        ws = await session.channels(kernel_id)
        try:
            for index, cell in enumerate(notebook["cells"]):
                if cell["cell_type"] != "code":
                    continue
                source = cell["source"]
                code = "".join(source) if isinstance(source, list) else source
                report = None if on_output is None else functools.partial(on_output, index)
                reply, outputs = await execute_cell(ws, code, timeout, report)
                cell["outputs"] = outputs
                cell["execution_count"] = reply.get("execution_count")
                if reply["status"] != "ok":
                    failure = f"Cell {index} failed: {reply.get('ename')}: {reply.get('evalue')}"
                    break
        finally:
            ws.close()
    finally:
        await session.request("DELETE", f"api/sessions/{created['id']}")
    if save:
        await session.request(
            "PUT",
            f"api/contents/{api_path}",
            {
                "type": "notebook",
                "format": "json",
                "content": notebook,
            },
        )
    if failure:
        raise RuntimeError(failure)
    return dict(notebook)
