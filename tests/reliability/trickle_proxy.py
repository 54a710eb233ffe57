"""A registry front that sends blob bodies slowly, so a test can cut a pull in the middle.

Run as a script inside the private engine's network namespace (the engine cannot reach the
host's loopback):

    nsenter -t DOCKERD_PID -n -- python trickle_proxy.py LISTEN_PORT UPSTREAM_URL SECONDS

It answers every /v2/ request from UPSTREAM_URL; a blob body larger than 1 MB is written in
40 pieces over SECONDS. It prints "ready" when it listens. The test kills it by its PID.
"""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

UPSTREAM = ""
SECONDS = 1.0
PASSED_HEADERS = ("Content-Type", "Docker-Content-Digest", "Docker-Distribution-Api-Version")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self._forward(send_body=True)

    def do_HEAD(self) -> None:
        self._forward(send_body=False)

    def _forward(self, send_body: bool) -> None:
        request = urllib.request.Request(UPSTREAM + self.path, method=self.command)
        for name in ("Accept",):
            for value in self.headers.get_all(name) or []:
                request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                status, headers, body = answer.status, answer.headers, answer.read()
        except urllib.error.HTTPError as error:
            status, headers, body = error.code, error.headers, error.read()
        self.send_response(status)
        for name in PASSED_HEADERS:
            if headers.get(name):
                self.send_header(name, headers[name])
        self.send_header("Content-Length", headers.get("Content-Length") or str(len(body)))
        self.end_headers()
        if not send_body:
            return
        if "/blobs/" not in self.path or len(body) <= 1 << 20:
            self.wfile.write(body)
            return
        step = len(body) // 40 + 1
        for start in range(0, len(body), step):
            self.wfile.write(body[start : start + step])
            self.wfile.flush()
            time.sleep(SECONDS / 40)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    global UPSTREAM, SECONDS
    port, UPSTREAM, SECONDS = int(sys.argv[1]), sys.argv[2].rstrip("/"), float(sys.argv[3])
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
