#!/usr/bin/env python3
"""``make bench``: kernels in containers against a local ipykernel, measured in one run.

For the small kernel image (Python 3.11 + ipykernel) and each network mode of the provisioner
(loopback, host, none) next to a local ipykernel started by the same jupyter_client
(``AsyncKernelManager`` with the venv's ``python3`` kernelspec), it measures:

- start to ready: ``start_kernel`` until ``wait_for_ready`` accepts a kernel_info reply; the
  launch part (until ``start_kernel`` returns, i.e. container create + start) is shown apart;
- shutdown: a graceful ``shutdown_kernel()``, and the container's exit code;
- execute round trip: ``pass`` sent on shell until both the reply and iopub idle are back;
- output throughput: a cell printing 1 MiB chunks, until iopub idle, bytes received / time;
- memory of an idle kernel: the container's cgroup usage as ``docker stats`` shows it, and the
  RSS of the kernel process, against the local kernel process's RSS;
- a forced shutdown (``now=True``) of each container kernel, which must leave no container;
- the engine alone: create, start and removal of a plain container of the same image and
  network running ipykernel, and the engine calls of one traced kernel start and shutdown, to
  tell what the provisioner costs from what the engine costs.

Targets run round-robin (one start of each, then the next round; executions alternate one by
one), so load from other work on the machine falls on every target alike. Results are printed as a
table with the ratios to local and the targets of shared PERF.md, and written as JSON to
``artifacts/bench.json``. Containers carry a unique ``org.jupyter-tfenv.owner`` value, and only
containers and volumes with that value are removed at the end.

    .venv/bin/python scripts/bench.py [--image IMAGE] [--starts N] [--execs N] [--mib N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.api.client import APIClient
from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager

from jupyter_tfenv import engine
from jupyter_tfenv.kernelspecs import install_kernelspec

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = "jupyter-tfenv-test/kernel:py3.11"
DEFAULT_OUTPUT = REPO_ROOT / "artifacts" / "bench.json"
MODES = ("ipc", "loopback", "host", "none")
LOCAL = "local"
READY_TIMEOUT = 60.0
SETTLE_SECONDS = 0.3

# Field measurements quoted from shared PERF.md (same kind of machine, TensorFlow image):
# start to ready as a multiple of a local ipykernel.
FIELD_START_RATIO = {"gateway-provisioners 0.5.0": 3.6, "dockernel 1.0.2": 4.3}
TARGET_START_RATIO = 1.2
TARGET_EXEC_RATIO = {"ipc": 1.05, "loopback": 1.2, "host": 1.05, "none": 1.05}
TARGET_THROUGHPUT_RATIO = 0.95


def log(text: str) -> None:
    print(text, flush=True)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# ---------------------------------------------------------------------------------------------
# Measuring one kernel
# ---------------------------------------------------------------------------------------------


@dataclass
class Samples:
    """Raw measurements of one target (local or a network mode), in seconds / bytes."""

    launch: list[float] = field(default_factory=list)
    ready: list[float] = field(default_factory=list)
    shutdown: list[float] = field(default_factory=list)
    exit_codes: list[int | None] = field(default_factory=list)
    execute: list[float] = field(default_factory=list)
    throughput: list[float] = field(default_factory=list)
    memory: dict[str, int] = field(default_factory=dict)
    forced_shutdown: float = float("nan")
    # The engine alone: a plain container of the same image and network running ipykernel.
    engine_create: list[float] = field(default_factory=list)
    engine_start: list[float] = field(default_factory=list)
    engine_remove: list[float] = field(default_factory=list)
    left_after_forced: int = -1


async def execute(client: AsyncKernelClient, code: str, timeout: float = 120) -> tuple[float, int]:
    """Run ``code``; return seconds until reply and iopub idle are both in, and stream bytes."""
    start = time.perf_counter()
    msg_id = client.execute(code, store_history=False)
    received = 0
    deadline = start + timeout
    # The kernel sends its reply and then idle; both wait in their sockets while we read the
    # other, so reading iopub first and shell second misses nothing.
    while True:
        msg = await client.get_iopub_msg(timeout=max(deadline - time.perf_counter(), 0.01))
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            received += len(msg["content"]["text"])
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    while True:
        reply = await client.get_shell_msg(timeout=max(deadline - time.perf_counter(), 0.01))
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    if reply["content"]["status"] != "ok":
        raise RuntimeError(f"{code[:40]!r} failed: {reply['content'].get('evalue')}")
    return time.perf_counter() - start, received


class Kernel:
    """One started kernel with its client, as a front end holds them."""

    def __init__(self, manager: AsyncKernelManager, client: AsyncKernelClient) -> None:
        self.manager = manager
        self.client = client

    @classmethod
    async def start(
        cls, name: str, specs: KernelSpecManager, cwd: str, samples: Samples | None = None
    ) -> Kernel:
        manager = AsyncKernelManager(kernel_name=name, kernel_spec_manager=specs)
        start = time.perf_counter()
        # The local kernel would print its TCP warning into this report; keep it out.
        await manager.start_kernel(cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        launched = time.perf_counter()
        client = manager.client()
        client.start_channels()
        await client.wait_for_ready(timeout=READY_TIMEOUT)
        ready = time.perf_counter()
        if samples is not None:
            samples.launch.append(launched - start)
            samples.ready.append(ready - start)
        return cls(manager, client)

    async def shutdown(self, now: bool = False) -> tuple[float, int | None]:
        """Shut down; return the seconds it took and the container's exit code (local: None)."""
        self.client.stop_channels()
        provisioner = self.manager.provisioner
        start = time.perf_counter()
        await self.manager.shutdown_kernel(now=now)
        took = time.perf_counter() - start
        code = getattr(provisioner, "exit_code", None)
        return took, code

    def container_id(self) -> str | None:
        return getattr(self.manager.provisioner, "container_id", None)

    def local_pid(self) -> int | None:
        process = getattr(self.manager.provisioner, "process", None)
        return getattr(process, "pid", None)


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(item) for item in path.read_text().split()]
    except OSError:
        return []


def container_memory(client: docker.DockerClient, container_id: str) -> dict[str, int]:
    """cgroup usage as ``docker stats`` shows it, and the RSS of the processes in the container.

    docker stats subtracts reclaimable file cache from the cgroup's usage (cgroup v1:
    total_inactive_file, v2: inactive_file); so does this.
    """
    stats = client.api.stats(container_id, stream=False, one_shot=True)
    memory = stats.get("memory_stats", {})
    detail = memory.get("stats", {})
    cache = detail.get("total_inactive_file", detail.get("inactive_file", 0))
    result = {"cgroup_usage": int(memory.get("usage", 0)) - int(cache)}
    init_pid = int(client.api.inspect_container(container_id)["State"]["Pid"])
    # init=True: docker-init is PID 1 of the container, the kernel is its child.
    kernel_pids = children(init_pid)
    result["kernel_rss"] = sum(rss_bytes(pid) for pid in kernel_pids)
    result["init_rss"] = rss_bytes(init_pid)
    return result


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


@dataclass
class Setup:
    image: str
    owner: str
    specs: KernelSpecManager
    cwd: str
    names: dict[str, str]


def make_setup(image: str, owner: str, work: Path) -> Setup:
    """Kernelspecs in a private prefix: one per network mode, plus the venv's python3."""
    prefix = work / "prefix"
    kernels = prefix / "share" / "jupyter" / "kernels"
    kernels.mkdir(parents=True)
    local_kernels = Path(sys.prefix) / "share" / "jupyter" / "kernels"
    if not (local_kernels / "python3" / "kernel.json").is_file():
        raise SystemExit(
            f"no python3 kernelspec in {local_kernels}: run `make setup` (installs ipykernel)"
        )
    specs = KernelSpecManager(kernel_dirs=[str(kernels), str(local_kernels)])
    names = {LOCAL: "python3"}
    for mode in MODES:
        names[mode] = f"tfenv-bench-{mode}"
        install_kernelspec(
            image,
            name=names[mode],
            user=False,
            prefix=str(prefix),
            extra_config={"network": mode, "owner_label": owner},
            manager=specs,
        )
    cwd = work / "notebooks"
    cwd.mkdir()
    return Setup(image, owner, specs, str(cwd), names)


def rotated(items: list[str], by: int) -> list[str]:
    by %= len(items)
    return items[by:] + items[:by]


async def measure_starts(setup: Setup, samples: dict[str, Samples], rounds: int) -> None:
    """Round 0 is the warm-up (creates the HOME volumes, probes the image, warms caches).

    The order rotates each round, so no target always runs right after the same other one
    (dockerd finishes a removal asynchronously, e.g. tearing down published ports).
    """
    for round_index in range(rounds + 1):
        line = []
        for target in rotated(list(setup.names), round_index):
            warm_up = round_index == 0
            kernel = await Kernel.start(
                setup.names[target], setup.specs, setup.cwd, None if warm_up else samples[target]
            )
            took, code = await kernel.shutdown()
            if not warm_up:
                samples[target].shutdown.append(took)
                samples[target].exit_codes.append(code)
                line.append(f"{target} {samples[target].ready[-1]:.2f}/{took:.2f}")
            # Let the engine finish the removal before the next start is timed.
            await asyncio.sleep(SETTLE_SECONDS)
        label = "warm-up" if round_index == 0 else f"round {round_index}/{rounds}"
        log(f"  starts {label}: " + (", ".join(line) or "done") + "  (ready/shutdown s)")


async def round_robin(
    kernels: dict[str, Kernel], step: Callable[[str, Kernel], Awaitable[None]], rounds: int
) -> None:
    for _ in range(rounds):
        for target, kernel in kernels.items():
            await step(target, kernel)


async def measure_running(
    setup: Setup, samples: dict[str, Samples], execs: int, mib: int, repeats: int
) -> None:
    kernels: dict[str, Kernel] = {}
    try:
        for target, name in setup.names.items():
            kernels[target] = await Kernel.start(name, setup.specs, setup.cwd)

        for kernel in kernels.values():
            for _ in range(30):
                await execute(kernel.client, "pass")

        # One execution per target in turn: a burst of load from elsewhere on the machine
        # then hits every target alike instead of one batch.
        async def exec_once(target: str, kernel: Kernel) -> None:
            took, _ = await execute(kernel.client, "pass")
            samples[target].execute.append(took)

        await round_robin(kernels, exec_once, execs)
        log(f"  execute: {execs} round trips per target, interleaved")

        code = f"chunk = 'x' * (1 << 20)\nfor _ in range({mib}):\n    print(chunk)"

        async def flood(target: str, kernel: Kernel) -> None:
            took, received = await execute(kernel.client, code)
            if received < mib << 20:
                raise RuntimeError(f"{target}: only {received} of {mib << 20} bytes arrived")
            samples[target].throughput.append(received / took / 1e6)

        # One smaller warm-up flood per kernel, so first-use costs stay out of the numbers.
        for kernel in kernels.values():
            await execute(kernel.client, "print('x' * (8 << 20))")
        await round_robin(kernels, flood, repeats)
        log(f"  throughput: {repeats} x {mib} MiB per target")

        # Idle: let the floods' buffers settle before reading memory.
        await asyncio.sleep(2.0)
        client = engine.get_client()
        for target, kernel in kernels.items():
            if target == LOCAL:
                pid = kernel.local_pid()
                samples[target].memory = {"kernel_rss": rss_bytes(pid) if pid else 0}
            else:
                container_id = kernel.container_id()
                assert container_id, f"{target}: no container"
                samples[target].memory = container_memory(client, container_id)

        for target, kernel in list(kernels.items()):
            if target == LOCAL:
                continue
            kernel_id = kernel.manager.kernel_id
            took, _ = await kernel.shutdown(now=True)
            del kernels[target]
            samples[target].forced_shutdown = took
            left = client.api.containers(
                all=True, filters={"label": f"{engine.LABEL_KERNEL_ID}={kernel_id}"}
            )
            samples[target].left_after_forced = len(left)
    finally:
        for kernel in kernels.values():
            with contextlib.suppress(Exception):
                await kernel.shutdown(now=True)


def engine_network_kwargs(mode: str) -> dict[str, Any]:
    """Host config of a bare container networked as the provisioner's ``mode`` is."""
    if mode == "loopback":
        ports = {port: ("127.0.0.1", None) for port in range(5555, 5560)}
        return {"network_mode": "bridge", "port_bindings": ports}
    if mode == "ipc":
        return {"network_mode": "bridge"}
    return {"network_mode": mode}


def measure_engine(image: str, owner: str, samples: dict[str, Samples], rounds: int) -> None:
    """The engine's own cost per network mode: create, start, force-remove of a plain container.

    It runs ipykernel (on its own ports; nothing connects), so the kernel's boot competes for
    the CPUs with the engine's start as it does under the provisioner. Launch minus this
    create + start is what the provisioner adds; a start that is slow here is slow in the
    engine (network namespace, veth, published ports), whatever the provisioner does.
    """
    api = engine.get_client().api
    labels = {engine.LABEL_OWNER: owner}
    for round_index in range(rounds + 1):
        for mode in rotated(list(MODES), round_index):
            network = engine_network_kwargs(mode)
            exposed = list(network.get("port_bindings", {}))
            begin = time.perf_counter()
            created = api.create_container(
                image,
                ["python3", "-m", "ipykernel_launcher"],
                labels=labels,
                ports=exposed,
                host_config=api.create_host_config(init=True, **network),
            )
            made = time.perf_counter()
            api.start(created["Id"])
            started = time.perf_counter()
            api.remove_container(created["Id"], force=True)
            removed = time.perf_counter()
            if round_index:
                samples[mode].engine_create.append(made - begin)
                samples[mode].engine_start.append(started - made)
                samples[mode].engine_remove.append(removed - started)
            time.sleep(SETTLE_SECONDS)


ENGINE_ID = re.compile(r"/[0-9a-f]{64}")


@contextlib.contextmanager
def traced_engine_calls() -> Iterator[list[tuple[str, float]]]:
    """Every request the docker SDK sends from this process: ("METHOD /path", seconds).

    Wraps the SDK's one send method for the duration, to show which engine calls a kernel
    start and shutdown make and what each costs, without changing what the provisioner does.
    """
    calls: list[tuple[str, float]] = []
    original = APIClient.send

    def send(self: APIClient, request: Any, **kwargs: Any) -> Any:
        begin = time.perf_counter()
        try:
            return original(self, request, **kwargs)
        finally:
            path = ENGINE_ID.sub("/{id}", request.path_url.split("?")[0])
            path = re.sub(r"^/v[0-9.]+", "", path)
            calls.append((f"{request.method} {path}", time.perf_counter() - begin))

    APIClient.send = send
    try:
        yield calls
    finally:
        APIClient.send = original


async def trace_one_start(setup: Setup, mode: str) -> dict[str, list[tuple[str, float]]]:
    """The engine calls of one start (until ready) and one graceful shutdown of ``mode``."""
    with traced_engine_calls() as start_calls:
        kernel = await Kernel.start(setup.names[mode], setup.specs, setup.cwd)
    with traced_engine_calls() as stop_calls:
        await kernel.shutdown()
    return {"start": start_calls, "shutdown": stop_calls}


def describe_calls(calls: list[tuple[str, float]]) -> str:
    return ", ".join(f"{name} {seconds * 1000:.1f} ms" for name, seconds in calls)


def sweep(owner: str) -> list[str]:
    """Remove containers, then volumes, that carry this run's owner value; nothing else."""
    client = engine.get_client()
    label = {"label": f"{engine.LABEL_OWNER}={owner}"}
    removed = []
    for item in client.api.containers(all=True, filters=label):
        engine.remove_container_id(client, item["Id"])
        removed.append(f"container {item['Id'][:12]}")
    for volume in (client.api.volumes(filters=label) or {}).get("Volumes") or []:
        with contextlib.suppress(docker.errors.NotFound):
            client.api.remove_volume(volume["Name"], force=True)
            removed.append(f"volume {volume['Name']}")
    return removed


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def machine_facts(image: str) -> dict[str, Any]:
    client = engine.get_client()
    info = client.info()
    version = client.version()
    meminfo = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()
    packages = {}
    for name in ("jupyter_client", "ipykernel", "pyzmq", "docker"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            packages[name] = importlib.metadata.version(name)
    image_attrs = client.api.inspect_image(image)
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(int(meminfo[1]) / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "docker_server": version.get("Version"),
        "docker_api": version.get("ApiVersion"),
        "storage_driver": info.get("Driver"),
        "cgroup": f"v{info.get('CgroupVersion', '?')} ({info.get('CgroupDriver', '?')})",
        "packages": packages,
        "image": image,
        "image_id": image_attrs["Id"][:19],
        "image_size_mb": round(image_attrs["Size"] / 1e6),
        "loadavg_before": os.getloadavg(),
    }


def summarize(samples: dict[str, Samples]) -> dict[str, dict[str, Any]]:
    local = samples[LOCAL]
    base = {
        "ready": median(local.ready),
        "shutdown": median(local.shutdown),
        "execute": median(local.execute),
        "throughput": median(local.throughput),
        "memory": local.memory.get("kernel_rss", 0),
    }
    out: dict[str, dict[str, Any]] = {}
    for target, data in samples.items():
        row: dict[str, Any] = {
            "launch_s": median(data.launch),
            # From start_kernel's return to ready: the kernel's own boot and the connection.
            "boot_s": median(
                [ready - launch for ready, launch in zip(data.ready, data.launch, strict=True)]
            ),
            "ready_s": median(data.ready),
            "ready_min_s": min(data.ready),
            "ready_max_s": max(data.ready),
            "ready_samples": len(data.ready),
            "shutdown_s": median(data.shutdown),
            "exit_codes": data.exit_codes,
            "execute_ms": median(data.execute) * 1000,
            "execute_p90_ms": statistics.quantiles(data.execute, n=10)[-1] * 1000,
            "execute_samples": len(data.execute),
            "throughput_mb_s": median(data.throughput),
            "throughput_best_mb_s": max(data.throughput),
            "memory": data.memory,
        }
        row["ratio"] = {
            "ready": row["ready_s"] / base["ready"],
            "shutdown": row["shutdown_s"] / base["shutdown"],
            "execute": median(data.execute) / base["execute"],
            "throughput": row["throughput_mb_s"] / base["throughput"],
            # Best cases: what is left when other load on the machine happened to stay away.
            "ready_best": row["ready_min_s"] / min(local.ready),
            "throughput_best": row["throughput_best_mb_s"] / max(local.throughput),
        }
        if target != LOCAL:
            row["ratio"]["memory_cgroup"] = data.memory.get("cgroup_usage", 0) / base["memory"]
            row["ratio"]["memory_rss"] = data.memory.get("kernel_rss", 0) / base["memory"]
            row["forced_shutdown_s"] = data.forced_shutdown
            row["left_after_forced"] = data.left_after_forced
            row["engine_create_s"] = median(data.engine_create)
            row["engine_start_s"] = median(data.engine_start)
            row["engine_remove_s"] = median(data.engine_remove)
            # What the provisioner itself adds to the engine's create + start.
            row["provisioner_overhead_s"] = (
                row["launch_s"] - row["engine_create_s"] - row["engine_start_s"]
            )
        out[target] = row
    return out


def verdicts(results: dict[str, dict[str, Any]]) -> list[tuple[str, bool, str]]:
    """(check, met, detail) for each PERF.md target that this run measures."""
    checks = []
    for mode in MODES:
        ratio = results[mode]["ratio"]
        checks.append(
            (
                f"{mode}: cold start <= {TARGET_START_RATIO} x local",
                ratio["ready"] <= TARGET_START_RATIO,
                f"{ratio['ready']:.2f} x",
            )
        )
        slowest_field = min(FIELD_START_RATIO.values())
        checks.append(
            (
                f"{mode}: start >= 3 x faster than the field ({slowest_field} x local or more)",
                slowest_field / ratio["ready"] >= 3,
                f"{slowest_field / ratio['ready']:.2f} x faster",
            )
        )
        checks.append(
            (
                f"{mode}: execute round trip <= {TARGET_EXEC_RATIO[mode]} x local",
                ratio["execute"] <= TARGET_EXEC_RATIO[mode],
                f"{ratio['execute']:.2f} x",
            )
        )
        checks.append(
            (
                f"{mode}: output throughput >= {TARGET_THROUGHPUT_RATIO} x local",
                ratio["throughput"] >= TARGET_THROUGHPUT_RATIO,
                f"{ratio['throughput']:.2f} x",
            )
        )
        codes = results[mode]["exit_codes"]
        checks.append(
            (
                f"{mode}: graceful exit on shutdown (exit code 0)",
                all(code == 0 for code in codes),
                f"exit codes {sorted(set(codes), key=str)}",
            )
        )
        left = results[mode]["left_after_forced"]
        checks.append(
            (
                f"{mode}: nothing left after a forced shutdown",
                left == 0,
                f"{left} container(s) left",
            )
        )
    return checks


def print_report(facts: dict[str, Any], results: dict[str, dict[str, Any]]) -> None:
    log("")
    log(
        f"machine: {facts['cpus']} CPUs, {facts['memory_gib']} GiB, Linux {facts['kernel']}, "
        f"Docker {facts['docker_server']} (API {facts['docker_api']}, {facts['storage_driver']}, "
        f"cgroup {facts['cgroup']}), Python {facts['python']}, "
        + ", ".join(f"{name} {ver}" for name, ver in facts["packages"].items())
    )
    log(
        f"image: {facts['image']} ({facts['image_id']}, {facts['image_size_mb']} MB); "
        f"load average before {facts['loadavg_before'][0]:.2f}, "
        f"after {facts['loadavg_after'][0]:.2f}"
    )
    headers = (
        "target",
        "launch s",
        "boot s",
        "ready s",
        "x",
        "shutdown s",
        "x",
        "exec ms",
        "x",
        "p90 ms",
        "out MB/s",
        "x",
        "idle MiB",
        "x",
    )
    rows = []
    for target, result in results.items():
        ratio = result["ratio"]
        memory = result["memory"].get("cgroup_usage", result["memory"].get("kernel_rss", 0))
        rows.append(
            (
                target,
                f"{result['launch_s']:.3f}",
                f"{result['boot_s']:.3f}",
                f"{result['ready_s']:.3f}",
                f"{ratio['ready']:.2f}",
                f"{result['shutdown_s']:.3f}",
                f"{ratio['shutdown']:.2f}",
                f"{result['execute_ms']:.3f}",
                f"{ratio['execute']:.2f}",
                f"{result['execute_p90_ms']:.3f}",
                f"{result['throughput_mb_s']:.0f}",
                f"{ratio['throughput']:.2f}",
                f"{memory / 2**20:.1f}",
                f"{ratio.get('memory_cgroup', 1.0):.2f}",
            )
        )
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    log("")
    for row in [headers, *rows]:
        log("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
    local = results[LOCAL]
    log(
        f"\nmedians of {local['ready_samples']} starts after a warm-up and "
        f"{local['execute_samples']} executions; x = container / local (throughput: higher is "
        "better). launch: start_kernel (container create + start); boot: from there to ready. "
        "idle MiB: container cgroup usage without reclaimable cache (docker stats); local: "
        "kernel RSS."
    )
    for mode in MODES:
        memory = results[mode]["memory"]
        log(
            f"  {mode}: kernel process RSS {memory.get('kernel_rss', 0) / 2**20:.1f} MiB "
            f"(x {results[mode]['ratio']['memory_rss']:.2f}), docker-init "
            f"{memory.get('init_rss', 0) / 2**20:.1f} MiB; forced shutdown "
            f"{results[mode]['forced_shutdown_s']:.3f} s"
        )
    log("  the engine alone (plain container running ipykernel, same image and network):")
    for mode in MODES:
        result = results[mode]
        log(
            f"    {mode}: create {result['engine_create_s']:.3f} s, start "
            f"{result['engine_start_s']:.3f} s, remove -f {result['engine_remove_s']:.3f} s; "
            f"launch minus create and start: {result['provisioner_overhead_s']:+.3f} s"
        )
    log("  best cases (fastest start, fastest flood) against local's best:")
    for mode in MODES:
        result = results[mode]
        ratio = result["ratio"]
        log(
            f"    {mode}: ready {result['ready_min_s']:.3f} s (x {ratio['ready_best']:.2f}), "
            f"output {result['throughput_best_mb_s']:.0f} MB/s (x {ratio['throughput_best']:.2f})"
        )
    log("\nPERF.md targets:")
    for check, met, detail in verdicts(results):
        log(f"  [{'met' if met else 'MISSED'}] {check}: {detail}")
    load = max(facts["loadavg_before"][0], facts["loadavg_after"][0])
    if load > 0.75 * facts["cpus"]:
        log(
            f"\nWARNING: the machine was busy (load average up to {load:.1f} on {facts['cpus']} "
            "CPUs): other processes competed with the kernels, which skews the ratios. Quote "
            "figures from a run on a quiet machine."
        )


async def run(args: argparse.Namespace) -> int:
    owner = f"bench-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    work = Path(tempfile.mkdtemp(prefix="tfenv-bench-"))
    # Connection files and run dirs go to a private runtime dir, gone with the work dir.
    os.environ["JUPYTER_RUNTIME_DIR"] = str(work / "runtime")
    start = time.monotonic()
    try:
        engine.get_client().api.inspect_image(args.image)
    except docker.errors.ImageNotFound:
        log(f"bench FAILED: image {args.image} is missing; run `make images`")
        return 1
    facts = machine_facts(args.image)
    log(f"bench: image {args.image}, owner label {owner}, {facts['cpus']} CPUs")
    samples = {target: Samples() for target in (LOCAL, *MODES)}
    traces: dict[str, dict[str, list[tuple[str, float]]]] = {}
    try:
        setup = make_setup(args.image, owner, work)
        await measure_starts(setup, samples, args.starts)
        measure_engine(args.image, owner, samples, args.starts)
        log(f"  engine alone: {args.starts} plain containers per network mode")
        for mode in MODES:
            traces[mode] = await trace_one_start(setup, mode)
            await asyncio.sleep(SETTLE_SECONDS)
        await measure_running(setup, samples, args.execs, args.mib, args.repeats)
    finally:
        removed = sweep(owner)
        shutil.rmtree(work, ignore_errors=True)
    facts["loadavg_after"] = os.getloadavg()
    results = summarize(samples)
    print_report(facts, results)
    log("\nengine calls of one traced start (until ready) and graceful shutdown per mode:")
    for mode, trace in traces.items():
        others = [seconds for name, seconds in trace["start"] if not name.endswith("/start")]
        log(
            f"  {mode} start: {describe_calls(trace['start'])}; besides the engine's start: "
            f"{len(others)} calls, {sum(others) * 1000:.1f} ms"
        )
        log(f"  {mode} shutdown: {describe_calls(trace['shutdown'])}")
    checks = verdicts(results)
    took = time.monotonic() - start
    log(
        f"\nleft over and removed by label: {', '.join(removed) or 'nothing'}; bench took "
        f"{took:.0f} s"
    )
    output = {
        "machine": facts,
        "settings": {
            "starts": args.starts,
            "execs": args.execs,
            "mib_per_flood": args.mib,
            "floods": args.repeats,
        },
        "results": results,
        "targets": [{"check": c, "met": m, "detail": d} for c, m, d in checks],
        "raw": {
            target: {
                "ready_s": data.ready,
                "launch_s": data.launch,
                "shutdown_s": data.shutdown,
                "throughput_mb_s": data.throughput,
            }
            for target, data in samples.items()
        },
        "seconds": took,
        "removed_after_run": removed,
        "engine_calls": traces,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(output, indent=2) + "\n")
    log(f"results written to {args.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--image", default=DEFAULT_IMAGE, help=f"default {DEFAULT_IMAGE}")
    parser.add_argument("--starts", type=int, default=11, help="timed starts per target (>= 5)")
    parser.add_argument("--execs", type=int, default=300, help="round trips per target (>= 200)")
    parser.add_argument("--mib", type=int, default=64, help="MiB printed per flood (>= 50)")
    parser.add_argument("--repeats", type=int, default=3, help="timed floods per target")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    if args.starts < 1 or args.execs < 50 or args.mib < 1 or args.repeats < 1:
        parser.error("--starts >= 1, --execs >= 50, --mib >= 1, --repeats >= 1")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
