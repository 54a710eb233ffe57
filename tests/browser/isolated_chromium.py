"""Chromium in a private network namespace that reaches Jupyter through a Unix socket.

Chromium aborts requests in flight with ``net::ERR_NETWORK_CHANGED`` whenever the host gains or
loses a network interface, and the Docker engine adds one for every container it starts: ours
(each kernel start and switch) and those of anything else sharing the engine. JupyterLab then
fails to load its theme or settings at random. In its own network namespace Chromium sees only
its loopback interface, so nothing changes under it.

The pieces:

- :class:`UnixBridge` (in the test process, host namespace) accepts connections on a Unix
  socket and forwards them to the Jupyter server on 127.0.0.1:PORT;
- :func:`write_launcher` writes the ``executable_path`` Playwright starts: it runs this file in
  a new network namespace (``unshare --net``), which brings loopback up, listens on
  127.0.0.1:PORT there, forwards each connection to the Unix socket, and runs Chromium as its
  child with Playwright's pipe descriptors (3 and 4). When Chromium exits, so does it, and the
  namespace goes away.

Traffic stays on loopback on both sides; files are the only way between the namespaces.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
BUFFER = 65536


def _pump(source: socket.socket, target: socket.socket) -> None:
    """Copy bytes one way until either side closes, then close both."""
    try:
        while True:
            data = source.recv(BUFFER)
            if not data:
                break
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def _splice(client: socket.socket, upstream: socket.socket) -> None:
    # Each direction gets a daemon thread: a browser holds only a few dozen connections.
    threading.Thread(target=_pump, args=(client, upstream), daemon=True).start()
    threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()


def _serve(listener: socket.socket, connect: object) -> None:
    """Accept on ``listener`` until it is closed; splice each client to ``connect()``."""
    assert callable(connect)
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        try:
            upstream = connect()
        except OSError:
            client.close()
            continue
        _splice(client, upstream)


class UnixBridge:
    """Host side: forwards connections on a Unix socket to 127.0.0.1:``port``."""

    def __init__(self, socket_path: Path, port: int) -> None:
        self.socket_path = socket_path
        self.port = port
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def _connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=30)

    def start(self) -> UnixBridge:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.socket_path))
        os.chmod(self.socket_path, stat.S_IRUSR | stat.S_IWUSR)
        listener.listen(64)
        self._listener = listener
        self._thread = threading.Thread(target=_serve, args=(listener, self._connect), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._listener is not None:
            # Closing the listener ends the accept loop; open connections end with the browser.
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()


def write_launcher(directory: Path, port: int, socket_path: Path) -> Path:
    """Write the script Playwright runs as Chromium; return its path."""
    unshare = ["unshare", "--net"]
    if os.geteuid() != 0:
        # Unprivileged: a user namespace makes the network namespace possible.
        unshare.append("--map-root-user")
    command = [
        *unshare,
        "--",
        sys.executable,
        str(Path(__file__).resolve()),
        str(port),
        str(socket_path),
        CHROMIUM,
    ]
    script = directory / "chromium-isolated"
    script.write_text(f'#!/bin/sh\nexec {shlex.join(command)} "$@"\n')
    script.chmod(0o700)
    return script


def _inside_namespace(port: int, socket_path: str, browser: list[str]) -> int:
    """Run in the new namespace: loopback up, forwarder on, Chromium as a child."""
    ip = shutil.which("ip", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") or "ip"
    subprocess.run([ip, "link", "set", "lo", "up"], check=True)
    listener = socket.create_server(("127.0.0.1", port), backlog=64)

    def connect() -> socket.socket:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.connect(socket_path)
        return upstream

    threading.Thread(target=_serve, args=(listener, connect), daemon=True).start()
    # Playwright talks to Chromium over descriptors 3 and 4 (--remote-debugging-pipe).
    inherited = tuple(fd for fd in (3, 4) if _is_open(fd))
    child = subprocess.Popen(browser, pass_fds=inherited)
    return child.wait()


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(_inside_namespace(int(sys.argv[1]), sys.argv[2], sys.argv[3:]))
