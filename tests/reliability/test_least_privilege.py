"""Least privilege, seen from inside the kernel (issue 6).

tests/kernels/test_lifecycle.py::test_safe_defaults_in_the_running_container checks the create
arguments Docker recorded. These tests check what the kernel process itself gets: its user,
its capabilities, no_new_privs, no engine socket, read-only mounts, and where its ports listen.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest

from jupyter_tfenv.container import IPC_MODES, PORT_NAMES

pytestmark = [pytest.mark.engine, pytest.mark.asyncio]

PROBE = """
import json, os
status = dict(line.split(':\\t', 1) for line in open('/proc/self/status').read().splitlines())
mounts = open('/proc/self/mountinfo').read()
def writable(path):
    try:
        open(os.path.join(path, '.tfenv-probe'), 'w').close()
        os.remove(os.path.join(path, '.tfenv-probe'))
        return True
    except OSError:
        return False
print(json.dumps({
    'ids': [os.getuid(), os.geteuid(), os.getgid()],
    'groups': sorted(os.getgroups()),
    'caps': {k: status[k].strip() for k in ('CapEff', 'CapPrm', 'CapInh', 'CapBnd', 'CapAmb')},
    'no_new_privs': status['NoNewPrivs'].strip(),
    'sockets': [p for p in ('/var/run/docker.sock', '/run/docker.sock') if os.path.exists(p)],
    'docker_in_mounts': 'docker.sock' in mounts or 'containerd' in mounts,
    'docker_env': sorted(k for k in os.environ if k.startswith('DOCKER')),
    'pid1': open('/proc/1/cmdline').read().split('\\0')[0],
    'writable': {p: writable(p) for p in ('/tfenv-run', '/tfenv-lib/jupyter_tfenv', '.', '~')},
}))
""".replace("'~'", "os.path.expanduser('~')")


async def probe(kernel: Any) -> dict[str, Any]:
    out = await kernel.run(PROBE)
    assert out["status"] == "ok", out
    result: dict[str, Any] = json.loads(out["stdout"])
    return result


def docker_default_caps(run_in_image: Callable[..., Any], image: str) -> str:
    """CapEff of a plain `docker run` as root on this engine: Docker's default set."""
    run = run_in_image(image, ["sh", "-c", "grep CapEff /proc/self/status"], entrypoint=[])
    return str(run.stdout.split()[-1])


async def test_kernel_of_a_root_jupyter_gets_dockers_defaults_and_no_new_privileges(
    kernel_image: str,
    make_spec: Callable[..., str],
    start_kernel: Callable[..., Any],
    run_in_image: Callable[..., Any],
) -> None:
    if os.getuid() != 0:
        pytest.skip("this case is Jupyter run by root; the non-root case is the next test")
    kernel = await start_kernel(make_spec(kernel_image))
    seen = await probe(kernel)

    assert seen["ids"] == [0, 0, 0]
    # Root in the container, but no more than any `docker run` gets, and setuid programs
    # cannot raise it: no_new_privs is set on the kernel process itself.
    assert seen["caps"]["CapEff"] == docker_default_caps(run_in_image, kernel_image)
    assert seen["no_new_privs"] == "1"
    assert seen["sockets"] == []
    assert seen["docker_in_mounts"] is False
    assert seen["docker_env"] == []
    assert seen["pid1"] == "/sbin/docker-init"
    assert seen["writable"] == {
        # Writable only where the kernel creates its IPC sockets there.
        "/tfenv-run": kernel.manager.provisioner.network in IPC_MODES,
        "/tfenv-lib/jupyter_tfenv": False,
        ".": True,  # the notebook dir
        "/tfenv-home": True,
    }


async def test_non_root_kernel_has_no_capability_and_writes_files_as_its_user(
    kernel_image: str,
    make_spec: Callable[..., str],
    start_kernel: Callable[..., Any],
    notebook_dir: Path,
    docker_client: docker.DockerClient,
) -> None:
    # As a Jupyter run by uid 1000 gets by default (container_user "" = the Jupyter user).
    notebook_dir.chmod(0o777)
    # Its own kernelspec, so its HOME volume is new and handed to uid 1000 (a volume made
    # for another user keeps that owner: see docs/reliability.md).
    name = make_spec(kernel_image, name="tfenv-test-uid-1000", container_user="1000:1000")
    kernel = await start_kernel(name)
    seen = await probe(kernel)

    assert seen["ids"] == [1000, 1000, 1000]
    assert seen["groups"] in ([], [1000])
    assert set(seen["caps"].values()) == {"0000000000000000"}
    assert seen["no_new_privs"] == "1"
    assert seen["sockets"] == []
    assert seen["docker_in_mounts"] is False
    assert seen["writable"] == {
        "/tfenv-run": kernel.manager.provisioner.network in IPC_MODES,
        "/tfenv-lib/jupyter_tfenv": False,
        ".": True,  # the notebook dir
        "/tfenv-home": True,  # the HOME volume was handed to uid 1000 once
    }
    await kernel.run("open('owned.txt', 'w').write('x')")
    written = (notebook_dir / "owned.txt").stat()
    assert (written.st_uid, written.st_gid) == (1000, 1000)
    host_config = docker_client.api.inspect_container(kernel.container_id)["HostConfig"]
    assert host_config["CapDrop"] == ["ALL"]


async def test_kernel_ports_listen_on_the_host_loopback_only(
    kernel_image: str,
    make_spec: Callable[..., str],
    start_kernel: Callable[..., Any],
) -> None:
    # Read the host's own socket table (no traffic is sent): every listener on the kernel's
    # five host ports is bound to 127.0.0.1, none to 0.0.0.0 or another address.
    kernel = await start_kernel(make_spec(kernel_image, network="loopback"))
    ports = {int(getattr(kernel.manager, name)) for name in PORT_NAMES}
    listeners = tcp_listeners()
    assert ports <= {port for _, port in listeners}
    assert {address for address, port in listeners if port in ports} == {"127.0.0.1"}


def tcp_listeners() -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket of this network namespace."""
    found: set[tuple[str, int]] = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            address, port = fields[1].split(":")
            found.add((decode_address(address, width), int(port, 16)))
    return found


def decode_address(hex_address: str, width: int) -> str:
    if width == 8:
        raw = bytes.fromhex(hex_address)[::-1]
        return ".".join(str(part) for part in raw)
    if hex_address == "0" * 32:
        return "::"
    if hex_address == "00000000000000000000000001000000":
        return "::1"
    return hex_address
