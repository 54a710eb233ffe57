#!/usr/bin/env python3
"""Development environment for jupyter-tfenv: a Docker engine and the test images.

The Makefile (``make engine``, ``make images``, ``make test``, ``make demo``...), CI
(``.ci/run``) and the test fixtures (``tests/conftest.py``) all go through this file, so
that a fresh machine with only the docker client gets the same engine and images everywhere.

Subcommands::

    devenv.py engine [--gpu-standin]   make sure a Docker engine answers (start one if allowed)
    devenv.py images [--only KEY]      build (or pull) the test images; unchanged ones are cached
    devenv.py all [--gpu-standin]      engine, then images
    devenv.py stop-engine              stop the dockerd that devenv itself started, by its PID
    devenv.py sweep RUN_LABEL          remove containers, networks, volumes of one test run

Settings read from the environment when a subcommand runs (never at import):

    DOCKER_HOST            the engine to use; when unset, unix:///var/run/docker.sock
    TFENV_TEST_IMAGES      ``local`` (default): build offline stand-ins of the TensorFlow tags;
                           ``official``: pull ``tensorflow/tensorflow:<version>[-jupyter]``
                           instead (needs a reachable registry)
    TFENV_DEBIAN_MIRROR    Debian mirror for debootstrap; default: the bookworm entry of
                           /etc/apt/sources.list.d/debian.sources, else deb.debian.org
    TFENV_PIP_INDEX_URL    package index used inside image builds; default: pip's own (PyPI)

Only the standard library and the docker SDK are used (run it with ``.venv/bin/python``).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

PREFIX = "[devenv]"
REPO_ROOT = Path(__file__).resolve().parents[1]
RECIPES_DIR = Path(__file__).resolve().parent / "images"

# Label keys.  The first two are the product's own scheme (see jupyter_tfenv's provisioner);
# the test-run key marks containers that tests create directly, outside the provisioner.
LABEL_MANAGED = "org.jupyter-tfenv.managed"
LABEL_OWNER = "org.jupyter-tfenv.owner"
LABEL_TEST_RUN = "org.jupyter-tfenv.test-run"
LABEL_RECIPE = "org.jupyter-tfenv.recipe-hash"
LABEL_DEVENV = "org.jupyter-tfenv.devenv-image"
RUN_LABEL_KEYS = (LABEL_OWNER, LABEL_TEST_RUN)

STANDIN_HOOK_NAME = "nvidia-container-runtime-hook"
STANDIN_SCRIPT = """\
#!/bin/sh
# TEST STAND-IN, written by jupyter-tfenv's scripts/devenv.py (engine --gpu-standin).
# This is NOT the NVIDIA hook and NO GPU is used or exposed.  dockerd registers its
# "nvidia" device driver when a file of this name is on its PATH at start, and runc runs it
# as an OCI prestart hook with the container state on stdin.  Reading that state and
# exiting 0 lets GPU device requests succeed, so tests can check the request plumbing
# (the container sees NVIDIA_VISIBLE_DEVICES) on machines without a GPU.
cat >/dev/null
exit 0
"""


class DevenvError(Exception):
    """A step failed; the message says which one, why, and what to do."""


# ---------------------------------------------------------------------------------------------
# Progress output: one line per step, with the time it took.
# ---------------------------------------------------------------------------------------------


@dataclass
class StepOutcome:
    """What a step reports on success; the body of ``Reporter.step`` fills it in."""

    text: str = "done"


class Reporter:
    """Prints one line per finished step with its duration, and says which step failed."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream

    def line(self, text: str) -> None:
        stream = self._stream or sys.stdout
        print(f"{PREFIX} {text}", file=stream, flush=True)

    def detail(self, text: str) -> None:
        self.line(f"    {text}")

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[StepOutcome]:
        outcome = StepOutcome()
        start = time.monotonic()
        try:
            yield outcome
        except DevenvError as exc:
            self.line(f"FAILED {name} ({time.monotonic() - start:.1f} s): {exc}")
            raise DevenvError(f"step '{name}' failed") from exc
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}"
            self.line(f"FAILED {name} ({time.monotonic() - start:.1f} s): {why}")
            raise DevenvError(f"step '{name}' failed: {why}") from exc
        self.line(f"{name}: {outcome.text} ({time.monotonic() - start:.1f} s)")


# ---------------------------------------------------------------------------------------------
# Engine: facts, a pure decision, and an executor with all side effects behind `System`.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineConfig:
    """Where the engine that devenv may start lives.

    The defaults are the system engine.  Tests pass private paths to start a second,
    throw-away dockerd next to the shared one without touching it.
    """

    socket: str = "/var/run/docker.sock"
    pidfile: str = "/var/run/docker.pid"
    state_file: Path = Path("/run/jupyter-tfenv-devenv/dockerd.json")
    log_file: Path = Path("/var/log/jupyter-tfenv-devenv/dockerd.log")
    standin_dir: Path = Path("/usr/local/lib/tfenv-gpu-standin")
    extra_args: tuple[str, ...] = ()
    #: a command that execs dockerd, e.g. ("unshare", "--net", "--") for a private network
    launcher: tuple[str, ...] = ()
    start_timeout: float = 60.0
    existing_timeout: float = 20.0

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def is_default(self) -> bool:
        return self.socket == EngineConfig.socket and self.pidfile == EngineConfig.pidfile


@dataclass(frozen=True)
class Probe:
    """The answer (or not) of an engine to a version request."""

    ok: bool
    version: str = ""
    #: absent (no socket file), refused (nobody listens), permission, timeout, other
    error_kind: str = ""
    error: str = ""


@dataclass(frozen=True)
class DockerdProcess:
    pid: int
    pidfile: str


@dataclass(frozen=True)
class DevenvState:
    """What devenv records about a dockerd it started, to recognise it later."""

    pid: int
    socket: str
    gpu_standin: bool
    log_file: str
    started_at: float


@dataclass(frozen=True)
class EngineFacts:
    """Everything the engine decision depends on, gathered before deciding."""

    url: str
    docker_host: str | None
    probe: Probe
    is_root: bool
    os_ids: frozenset[str]
    dockerd_path: str | None
    #: dockerd processes that use this config's pidfile (so also its socket and data)
    dockerd_pids: tuple[int, ...]
    pidfile_exists: bool
    #: our own dockerd, when the state file names a live dockerd for this socket
    own: DevenvState | None
    gpu_standin: bool
    real_nvidia_hook: str | None = None


@dataclass(frozen=True)
class EnginePlan:
    """What to do: use, wait for, start (maybe install first), or fail with a message."""

    action: str  # use | wait | start | fail
    message: str
    install: bool = False
    remove_stale_pidfile: bool = False
    with_standin: bool = False


def is_local_default(docker_host: str | None, config: EngineConfig) -> bool:
    """Whether DOCKER_HOST (unset or set) designates this config's local socket."""
    if not docker_host:
        return True
    if not docker_host.startswith("unix://"):
        return False
    path = docker_host[len("unix://") :]
    if not path.startswith("/"):
        path = "/" + path
    return os.path.normpath(path) == os.path.normpath(config.socket)


def decide_engine(facts: EngineFacts, config: EngineConfig) -> EnginePlan:
    """Decide, without side effects, how to get an engine that answers."""
    where = f"DOCKER_HOST={facts.docker_host}" if facts.docker_host else facts.url

    if facts.probe.ok:
        return EnginePlan("use", _use_message(facts, where))

    if not is_local_default(facts.docker_host, config):
        return EnginePlan(
            "fail",
            f"the engine at {where} does not answer ({facts.probe.error}). devenv starts "
            f"engines only at {config.url}: start the engine behind DOCKER_HOST, or unset "
            "DOCKER_HOST to use (or let devenv start) the local one.",
        )

    if facts.probe.error_kind == "permission":
        return EnginePlan(
            "fail",
            f"permission denied on {config.socket}: run as root, or add your user to the "
            "'docker' group (sudo usermod -aG docker $USER, then log in again).",
        )

    if facts.dockerd_pids:
        pids = ", ".join(str(pid) for pid in facts.dockerd_pids)
        return EnginePlan(
            "wait",
            f"a dockerd (pid {pids}) runs but does not answer at {config.url} yet "
            f"({facts.probe.error}); waiting for it, devenv never stops an engine it did "
            "not start",
        )

    not_debian = not ({"debian", "ubuntu"} & facts.os_ids)
    if not facts.is_root or not_debian:
        if facts.dockerd_path:
            install = f"Docker Engine is installed ({facts.dockerd_path}): start it"
        else:
            install = (
                "install Docker Engine (Debian/Ubuntu: apt-get install docker.io; others: "
                "https://docs.docker.com/engine/install/) and start it"
            )
        if not facts.is_root:
            why = "devenv installs and starts an engine only when run as root"
            hint = "; or run `sudo make engine` on Debian/Ubuntu"
        else:
            system = ",".join(sorted(facts.os_ids)) or "unknown"
            why = f"devenv installs and starts engines only on Debian or Ubuntu (this is {system})"
            hint = ""
        return EnginePlan(
            "fail",
            f"no Docker engine answers at {config.url} ({facts.probe.error}); {why}. To fix: "
            f"{install} (sudo systemctl start docker, or sudo dockerd &){hint}.",
        )

    with_standin = facts.gpu_standin and facts.real_nvidia_hook is None
    verb = "install docker.io and start" if facts.dockerd_path is None else "start"
    extras = []
    if facts.pidfile_exists:
        extras.append(f"remove the stale {config.pidfile} (no dockerd runs)")
    if with_standin:
        extras.append("put the GPU stand-in hook on dockerd's PATH")
    if facts.gpu_standin and facts.real_nvidia_hook:
        extras.append(f"no stand-in: a real NVIDIA hook is installed ({facts.real_nvidia_hook})")
    detail = f" ({'; '.join(extras)})" if extras else ""
    return EnginePlan(
        "start",
        f"no engine answers at {config.url}; {verb} dockerd{detail}",
        install=facts.dockerd_path is None,
        remove_stale_pidfile=facts.pidfile_exists,
        with_standin=with_standin,
    )


def _use_message(facts: EngineFacts, where: str) -> str:
    text = f"using the engine at {where} (Docker {facts.probe.version})"
    own = facts.own
    if own is None:
        text += ", not started by devenv"
        if facts.gpu_standin:
            text += (
                "; GPU stand-in requested but not installed: devenv never reconfigures an "
                "engine it did not start (the tests probe and report what GPU requests do)"
            )
        return text
    standin = "with" if own.gpu_standin else "without"
    text += f", started by devenv (pid {own.pid}, {standin} GPU stand-in, log {own.log_file})"
    if facts.gpu_standin and not own.gpu_standin:
        text += (
            "; to get the stand-in run `scripts/devenv.py stop-engine` and then "
            "`scripts/devenv.py engine --gpu-standin`"
        )
    return text


class System(Protocol):
    """Side effects of the engine step; tests replace it with a recording fake."""

    def probe(self, url: str, docker_host: str | None) -> Probe: ...
    def is_root(self) -> bool: ...
    def os_ids(self) -> frozenset[str]: ...
    def which(self, name: str) -> str | None: ...
    def dockerd_processes(self) -> list[DockerdProcess]: ...
    def pidfile_pid(self, path: str) -> int | None: ...
    def is_dockerd(self, pid: int) -> bool: ...
    def exists(self, path: str) -> bool: ...
    def remove(self, path: str) -> None: ...
    def run(self, argv: Sequence[str], env: Mapping[str, str]) -> None: ...
    def spawn(self, argv: Sequence[str], env: Mapping[str, str], log_file: Path) -> int: ...
    def exit_status(self, pid: int) -> int | None: ...
    def write_text(self, path: Path, text: str, mode: int) -> None: ...
    def read_text(self, path: Path) -> str | None: ...
    def sleep(self, seconds: float) -> None: ...
    def monotonic(self) -> float: ...


def docker_client_kwargs(url: str, docker_host: str | None) -> dict[str, Any]:
    """Arguments for docker.DockerClient: DOCKER_HOST/TLS settings when set, else the socket."""
    import docker

    if docker_host:
        kwargs: dict[str, Any] = dict(docker.utils.kwargs_from_env())
    else:
        kwargs = {"base_url": url}
    kwargs["use_ssh_client"] = str(kwargs.get("base_url", "")).startswith("ssh://")
    return kwargs


def connect(
    config: EngineConfig | None = None, docker_host: str | None = None, timeout: float = 120
) -> Any:
    """A docker.DockerClient for the engine devenv uses (DOCKER_HOST, else the socket)."""
    import docker

    config = config or EngineConfig()
    return docker.DockerClient(timeout=timeout, **docker_client_kwargs(config.url, docker_host))


def classify_error(exc: BaseException) -> str:
    """Map a connection error to absent / refused / permission / timeout / other."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo and len(seen) < 20:
        item = todo.pop()
        seen.append(item)
        todo.extend(arg for arg in item.args if isinstance(arg, BaseException))
        for link in (item.__cause__, item.__context__):
            if link is not None:
                todo.append(link)
    for item in seen:
        if isinstance(item, PermissionError):
            return "permission"
        if isinstance(item, FileNotFoundError):
            return "absent"
        if isinstance(item, ConnectionRefusedError):
            return "refused"
        if isinstance(item, TimeoutError):
            return "timeout"
    text = " ".join(str(item) for item in seen)
    for needle, kind in (
        ("Permission denied", "permission"),
        ("No such file or directory", "absent"),
        ("Connection refused", "refused"),
        ("timed out", "timeout"),
    ):
        if needle in text:
            return kind
    return "other"


def _short_error(exc: BaseException) -> str:
    kind = classify_error(exc)
    return {
        "absent": "no socket",
        "refused": "connection refused",
        "permission": "permission denied",
        "timeout": "timed out",
    }.get(kind, f"{type(exc).__name__}: {exc}"[:300])


def parse_dockerd_pidfile(argv: Sequence[str]) -> str:
    """The pidfile a dockerd command line uses (dockerd's default when not given)."""
    for index, arg in enumerate(argv):
        if arg in ("--pidfile", "-p") and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith("--pidfile="):
            return arg.split("=", 1)[1]
    return EngineConfig.pidfile


class RealSystem:
    """The machine itself."""

    def __init__(self) -> None:
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def probe(self, url: str, docker_host: str | None) -> Probe:
        import docker

        try:
            client = docker.DockerClient(timeout=5, **docker_client_kwargs(url, docker_host))
        except docker.errors.DockerException as exc:
            return Probe(False, error_kind=classify_error(exc), error=_short_error(exc))
        try:
            version = client.version().get("Version", "?")
        except docker.errors.DockerException as exc:
            return Probe(False, error_kind=classify_error(exc), error=_short_error(exc))
        finally:
            client.close()
        return Probe(True, version=str(version))

    def is_root(self) -> bool:
        return os.geteuid() == 0

    def os_ids(self) -> frozenset[str]:
        try:
            text = Path("/etc/os-release").read_text()
        except OSError:
            return frozenset()
        ids: set[str] = set()
        for line in text.splitlines():
            key, _, value = line.partition("=")
            if key in ("ID", "ID_LIKE"):
                ids.update(value.strip().strip('"').lower().split())
        return frozenset(ids)

    def which(self, name: str) -> str | None:
        # /usr/sbin is not on every user's PATH, but it is where Debian puts dockerd.
        path = os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin"
        return shutil.which(name, path=path)

    def dockerd_processes(self) -> list[DockerdProcess]:
        found: list[DockerdProcess] = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if (entry / "comm").read_text().strip() != "dockerd":
                    continue
                if _proc_state(entry) == "Z":
                    continue
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            args = [arg.decode(errors="replace") for arg in argv if arg]
            found.append(DockerdProcess(int(entry.name), parse_dockerd_pidfile(args[1:])))
        return found

    def pidfile_pid(self, path: str) -> int | None:
        try:
            return int(Path(path).read_text().strip())
        except (OSError, ValueError):
            return None

    def is_dockerd(self, pid: int) -> bool:
        entry = Path(f"/proc/{pid}")
        try:
            return (entry / "comm").read_text().strip() == "dockerd" and _proc_state(entry) != "Z"
        except OSError:
            return False

    def exists(self, path: str) -> bool:
        return os.path.lexists(path)

    def remove(self, path: str) -> None:
        os.unlink(path)

    def run(self, argv: Sequence[str], env: Mapping[str, str]) -> None:
        run_logged(argv, env=env)

    def spawn(self, argv: Sequence[str], env: Mapping[str, str], log_file: Path) -> int:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "ab") as log:
            # A new session keeps the engine alive when make or the terminal is interrupted.
            child = subprocess.Popen(
                list(argv),
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._children[child.pid] = child
        return child.pid

    def exit_status(self, pid: int) -> int | None:
        child = self._children.get(pid)
        if child is not None:
            return child.poll()
        return None if self.is_dockerd(pid) else -1

    def write_text(self, path: Path, text: str, mode: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(text)
        partial.chmod(mode)
        partial.replace(path)

    def read_text(self, path: Path) -> str | None:
        try:
            return path.read_text()
        except OSError:
            return None

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def monotonic(self) -> float:
        return time.monotonic()


def _proc_state(entry: Path) -> str:
    stat = (entry / "stat").read_text()
    # The state letter follows the parenthesised command name, which may itself hold spaces.
    return stat.rsplit(")", 1)[1].split()[0]


def run_logged(
    argv: Sequence[str], env: Mapping[str, str] | None = None, tail_lines: int = 25
) -> str:
    """Run a command with no stdin; on failure raise with the end of its output."""
    completed = subprocess.run(
        list(argv),
        env=dict(env) if env is not None else None,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        check=False,
    )
    output = completed.stdout.decode(errors="replace")
    if completed.returncode != 0:
        tail = "\n".join(output.splitlines()[-tail_lines:])
        raise DevenvError(
            f"`{' '.join(argv)}` exited with status {completed.returncode}; last output:\n{tail}"
        )
    return output


class EngineManager:
    """Makes sure an engine answers, starting one only where the rules allow it."""

    def __init__(
        self,
        config: EngineConfig | None = None,
        system: System | None = None,
        reporter: Reporter | None = None,
    ) -> None:
        self.config = config or EngineConfig()
        self.system: System = system or RealSystem()
        self.reporter = reporter or Reporter()
        self._apt_updated = False

    # -- facts ------------------------------------------------------------------------------

    def own_state(self) -> DevenvState | None:
        """The dockerd devenv started for this socket, if it still runs."""
        text = self.system.read_text(self.config.state_file)
        if not text:
            return None
        try:
            state = DevenvState(**json.loads(text))
        except (TypeError, ValueError):
            return None
        if state.socket != self.config.socket or not self.system.is_dockerd(state.pid):
            return None
        return state

    def gather(self, docker_host: str | None, gpu_standin: bool) -> EngineFacts:
        config, system = self.config, self.system
        url = docker_host or config.url
        holder = system.pidfile_pid(config.pidfile)
        pids = {proc.pid for proc in system.dockerd_processes() if proc.pidfile == config.pidfile}
        if holder is not None and system.is_dockerd(holder):
            pids.add(holder)
        hook = system.which(STANDIN_HOOK_NAME)
        if hook and Path(hook).parent == config.standin_dir:
            hook = None
        return EngineFacts(
            url=url,
            docker_host=docker_host,
            probe=system.probe(url, docker_host),
            is_root=system.is_root(),
            os_ids=system.os_ids(),
            dockerd_path=system.which("dockerd"),
            dockerd_pids=tuple(sorted(pids)),
            pidfile_exists=system.exists(config.pidfile),
            own=self.own_state(),
            gpu_standin=gpu_standin,
            real_nvidia_hook=hook,
        )

    # -- actions ----------------------------------------------------------------------------

    def ensure(self, docker_host: str | None = None, gpu_standin: bool = False) -> EngineFacts:
        """Return the facts of an engine that answers, or raise DevenvError saying why not."""
        with self.reporter.step("engine") as outcome:
            facts = self.gather(docker_host, gpu_standin)
            plan = decide_engine(facts, self.config)
            if plan.action == "use":
                outcome.text = plan.message
                return facts
            if plan.action == "fail":
                raise DevenvError(plan.message)
            self.reporter.detail(plan.message)

            if plan.action == "wait":
                facts = self._wait_for_existing(docker_host, gpu_standin)
                outcome.text = f"engine answers now: {_use_message(facts, facts.url)}"
                return facts

            if plan.install:
                self._install_engine()
                # The package may have started an engine itself; never start a second one.
                facts = self.gather(docker_host, gpu_standin)
                plan = decide_engine(facts, self.config)
                if plan.action == "wait":
                    facts = self._wait_for_existing(docker_host, gpu_standin)
                    plan = decide_engine(facts, self.config)
                if plan.action == "use":
                    outcome.text = plan.message + " (started by the docker.io package)"
                    return facts
                if plan.action != "start" or plan.install:
                    raise DevenvError(plan.message)

            pid = self._start(plan)
            facts = self.gather(docker_host, gpu_standin)
            standin = "with the GPU stand-in" if plan.with_standin else "without GPU stand-in"
            outcome.text = (
                f"started dockerd (pid {pid}, {standin}, Docker {facts.probe.version}) at "
                f"{self.config.url}; log {self.config.log_file}; stop it with "
                "`scripts/devenv.py stop-engine`"
            )
            return facts

    def _wait_for_existing(self, docker_host: str | None, gpu_standin: bool) -> EngineFacts:
        deadline = self.system.monotonic() + self.config.existing_timeout
        while True:
            facts = self.gather(docker_host, gpu_standin)
            if facts.probe.ok:
                return facts
            if not facts.dockerd_pids or self.system.monotonic() > deadline:
                raise DevenvError(
                    f"the dockerd that was running (not started now by devenv) does not answer "
                    f"at {self.config.url} ({facts.probe.error}) after "
                    f"{self.config.existing_timeout:.0f} s; devenv leaves it alone: look at its "
                    f"log, or stop it (then `make engine` starts a fresh one)."
                )
            self.system.sleep(0.5)

    def _apt_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["DEBIAN_FRONTEND"] = "noninteractive"
        return env

    def apt_install(self, package: str) -> None:
        """apt-get install -y PACKAGE, after one apt-get update per devenv run."""
        if not self._apt_updated:
            with self.reporter.step("apt-get update"):
                self.system.run(["apt-get", "update"], self._apt_env())
            self._apt_updated = True
        with self.reporter.step(f"apt-get install -y {package}"):
            self.system.run(["apt-get", "install", "-y", package], self._apt_env())

    def _install_engine(self) -> None:
        self.apt_install("docker.io")

    def _dockerd_env(self, with_standin: bool) -> dict[str, str]:
        # dockerd gets a small environment, not the caller's whole one.
        keep = ("HOME", "LANG", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")
        env = {key: value for key, value in os.environ.items() if key.upper() in keep and value}
        path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        if with_standin:
            path = f"{self.config.standin_dir}:{path}"
        env["PATH"] = path
        return env

    def dockerd_argv(self, dockerd: str) -> list[str]:
        if self.config.is_default and not self.config.extra_args:
            return [*self.config.launcher, dockerd]
        return [
            *self.config.launcher,
            dockerd,
            "--host",
            self.config.url,
            "--pidfile",
            self.config.pidfile,
            *self.config.extra_args,
        ]

    def _start(self, plan: EnginePlan) -> int:
        config, system = self.config, self.system
        if plan.remove_stale_pidfile:
            with self.reporter.step(f"remove stale {config.pidfile}") as outcome:
                # Check again right before removing: a dockerd may have started meanwhile.
                holder = system.pidfile_pid(config.pidfile)
                running = [
                    proc.pid
                    for proc in system.dockerd_processes()
                    if proc.pidfile == config.pidfile
                ]
                if running or (holder is not None and system.is_dockerd(holder)):
                    raise DevenvError(
                        f"a dockerd started meanwhile (pid {running or holder}); not removing "
                        f"{config.pidfile}. Run `make engine` again."
                    )
                system.remove(config.pidfile)
                outcome.text = f"removed (it named pid {holder}, which is not a running dockerd)"

        if plan.with_standin:
            with self.reporter.step("GPU stand-in hook") as outcome:
                hook = config.standin_dir / STANDIN_HOOK_NAME
                system.write_text(hook, STANDIN_SCRIPT, 0o755)
                outcome.text = f"{hook} (test stand-in: no GPU is used)"

        dockerd = system.which("dockerd")
        if dockerd is None:
            raise DevenvError("dockerd is not installed (apt-get install -y docker.io)")
        with self.reporter.step("start dockerd") as outcome:
            pid = system.spawn(
                self.dockerd_argv(dockerd), self._dockerd_env(plan.with_standin), config.log_file
            )
            self._wait_started(pid)
            state = DevenvState(
                pid=pid,
                socket=config.socket,
                gpu_standin=plan.with_standin,
                log_file=str(config.log_file),
                started_at=time.time(),
            )
            system.write_text(config.state_file, json.dumps(state.__dict__, indent=1), 0o644)
            outcome.text = f"pid {pid} answers at {config.url}"
        return pid

    def _wait_started(self, pid: int) -> None:
        deadline = self.system.monotonic() + self.config.start_timeout
        while True:
            status = self.system.exit_status(pid)
            if status is not None:
                raise DevenvError(
                    f"dockerd (pid {pid}) exited with status {status}; last lines of "
                    f"{self.config.log_file}:\n{self._log_tail()}"
                )
            probe = self.system.probe(self.config.url, None)
            if probe.ok:
                return
            if self.system.monotonic() > deadline:
                raise DevenvError(
                    f"dockerd (pid {pid}) did not answer at {self.config.url} within "
                    f"{self.config.start_timeout:.0f} s ({probe.error}); it is left running "
                    f"for inspection. Last lines of {self.config.log_file}:\n{self._log_tail()}"
                )
            self.system.sleep(0.2)

    def _log_tail(self, lines: int = 15) -> str:
        text = self.system.read_text(self.config.log_file) or ""
        return "\n".join(text.splitlines()[-lines:])

    def stop_own(self, timeout: float = 30.0) -> str:
        """Stop the dockerd devenv started (by its PID); any other engine is left alone."""
        state = self.own_state()
        if state is None:
            return (
                f"no dockerd started by devenv runs for {self.config.socket}; "
                "nothing stopped (devenv never stops an engine it did not start)"
            )
        os.kill(state.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.system.is_dockerd(state.pid):
            if time.monotonic() > deadline:
                raise DevenvError(
                    f"dockerd pid {state.pid} still runs {timeout:.0f} s after SIGTERM "
                    f"(it waits for containers to stop); see {state.log_file}"
                )
            time.sleep(0.2)
        with contextlib.suppress(FileNotFoundError):
            self.config.state_file.unlink()
        return f"stopped dockerd pid {state.pid}"


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------

IMAGE_REPO = "jupyter-tfenv-test"
PYTHON_VERSION = "3.11"
TF_VERSION = "2.21.0"
TF_ALT_VERSION = "2.20.0"
OFFICIAL_REPO = "tensorflow/tensorflow"
IMAGES_ENV = "TFENV_TEST_IMAGES"
IMAGE_MODES = ("local", "official")

# The debootstrap recipe of the base image; its hash is the base image's recipe hash.
BASE_RECIPE: dict[str, Any] = {
    "format": 1,
    "suite": "bookworm",
    "variant": "minbase",
    "include": ["python3", "python3-venv", "python3-pip", "ca-certificates"],
    "changes": [
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV LANG=C.UTF-8",
        'CMD ["/bin/bash"]',
    ],
}


def _tf_labels(version: str) -> dict[str, str]:
    return {
        "org.tensorflow.version": version,
        "org.jupyter-tfenv.python-version": PYTHON_VERSION,
        "org.jupyter-tfenv.gpu": "false",
    }


@dataclass(frozen=True)
class ImageSpec:
    """One test image: how it is made, its stable name, and the official tag it stands for."""

    key: str
    name: str
    #: a directory under scripts/images, or "debootstrap" for the base
    recipe: str
    base: str | None = None
    buildargs: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    #: the official tag pulled instead when TFENV_TEST_IMAGES=official
    official: str | None = None


IMAGES: tuple[ImageSpec, ...] = (
    ImageSpec("base", f"{IMAGE_REPO}/debian:bookworm", "debootstrap"),
    ImageSpec(
        "kernel",
        f"{IMAGE_REPO}/kernel:py{PYTHON_VERSION}",
        "kernel",
        base="base",
        labels={
            "org.jupyter-tfenv.python-version": PYTHON_VERSION,
            "org.jupyter-tfenv.gpu": "false",
        },
    ),
    ImageSpec(
        "tf",
        f"{IMAGE_REPO}/tensorflow:{TF_VERSION}",
        "tensorflow",
        base="base",
        buildargs={"TF_VERSION": TF_VERSION},
        labels=_tf_labels(TF_VERSION),
        official=f"{OFFICIAL_REPO}:{TF_VERSION}",
    ),
    ImageSpec(
        "tf-jupyter",
        f"{IMAGE_REPO}/tensorflow:{TF_VERSION}-jupyter",
        "tensorflow-jupyter",
        base="tf",
        labels=_tf_labels(TF_VERSION),
        official=f"{OFFICIAL_REPO}:{TF_VERSION}-jupyter",
    ),
    ImageSpec(
        "tf-alt",
        f"{IMAGE_REPO}/tensorflow:{TF_ALT_VERSION}",
        "tensorflow",
        base="base",
        buildargs={"TF_VERSION": TF_ALT_VERSION},
        labels=_tf_labels(TF_ALT_VERSION),
        official=f"{OFFICIAL_REPO}:{TF_ALT_VERSION}",
    ),
    ImageSpec(
        "tf-alt-jupyter",
        f"{IMAGE_REPO}/tensorflow:{TF_ALT_VERSION}-jupyter",
        "tensorflow-jupyter",
        base="tf-alt",
        labels=_tf_labels(TF_ALT_VERSION),
        official=f"{OFFICIAL_REPO}:{TF_ALT_VERSION}-jupyter",
    ),
)
IMAGES_BY_KEY = {spec.key: spec for spec in IMAGES}


def images_mode(environ: Mapping[str, str] | None = None) -> str:
    """``local`` or ``official``, from TFENV_TEST_IMAGES (read when called, not at import)."""
    environ = os.environ if environ is None else environ
    mode = environ.get(IMAGES_ENV, "").strip().lower() or "local"
    if mode not in IMAGE_MODES:
        raise DevenvError(
            f"{IMAGES_ENV}={environ.get(IMAGES_ENV)!r} is not a known image source; use "
            "'local' (the default: build offline stand-ins here) or 'official' (pull the "
            f"{OFFICIAL_REPO} tags from a registry)."
        )
    return mode


def image_name(key: str, mode: str) -> str:
    """The name tests and tools use for an image key in this mode."""
    spec = IMAGES_BY_KEY[key]
    if mode == "official" and spec.official:
        return spec.official
    return spec.name


def recipe_hash(spec: ImageSpec, base_hash: str | None, recipes_dir: Path = RECIPES_DIR) -> str:
    """Hash of what the image is made from: recipe files, build args, labels, base recipe.

    The host CA bundle copied into each build is plumbing, not recipe, and is left out.
    """
    digest = hashlib.sha256()
    head = {
        "format": 1,
        "recipe": spec.recipe,
        "buildargs": dict(sorted(spec.buildargs.items())),
        "labels": dict(sorted(spec.labels.items())),
        "base": base_hash,
    }
    if spec.recipe == "debootstrap":
        head["debootstrap"] = BASE_RECIPE
    digest.update(json.dumps(head, sort_keys=True).encode())
    if spec.recipe != "debootstrap":
        folder = recipes_dir / spec.recipe
        files = sorted(path for path in folder.rglob("*") if path.is_file())
        if not files:
            raise DevenvError(f"recipe folder {folder} is missing or empty")
        for path in files:
            data = path.read_bytes()
            digest.update(f"\0{path.relative_to(folder).as_posix()}\0{len(data)}\0".encode())
            digest.update(data)
    return digest.hexdigest()


def all_recipe_hashes(recipes_dir: Path = RECIPES_DIR) -> dict[str, str]:
    hashes: dict[str, str] = {}
    for spec in IMAGES:  # bases come first in IMAGES
        base_hash = hashes[spec.base] if spec.base else None
        hashes[spec.key] = recipe_hash(spec, base_hash, recipes_dir)
    return hashes


def debian_mirror(
    environ: Mapping[str, str] | None = None, apt_dir: Path = Path("/etc/apt")
) -> str:
    """The Debian mirror for bookworm: TFENV_DEBIAN_MIRROR, else apt's sources, else default."""
    environ = os.environ if environ is None else environ
    if environ.get("TFENV_DEBIAN_MIRROR"):
        return environ["TFENV_DEBIAN_MIRROR"]
    suite = BASE_RECIPE["suite"]
    sources = sorted((apt_dir / "sources.list.d").glob("*.sources"))
    for path in sources:
        with contextlib.suppress(OSError):
            for stanza in re.split(r"\n\s*\n", path.read_text()):
                fields = _deb822_fields(stanza)
                types = fields.get("types", "").split()
                suites = fields.get("suites", "").split()
                uris = fields.get("uris", "").split()
                if "deb" in types and suite in suites and uris:
                    return uris[0]
    with contextlib.suppress(OSError):
        for line in (apt_dir / "sources.list").read_text().splitlines():
            words = re.sub(r"\[[^\]]*\]", "", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
                return words[1]
    return "http://deb.debian.org/debian"


def _deb822_fields(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = ""
    for line in stanza.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if line[0] in " \t" and key:
            fields[key] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if sep:
            key = name.strip().lower()
            fields[key] = value.strip()
    return fields


def host_ca_bundle() -> Path:
    """The CA bundle pip inside a build should trust: the host's, else certifi's."""
    host = Path("/etc/ssl/certs/ca-certificates.crt")
    if host.is_file():
        return host
    import certifi

    return Path(certifi.where())


PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


def build_args_from_env(environ: Mapping[str, str]) -> dict[str, str]:
    """Proxy and index settings the builds inherit from the host, when it has them."""
    args = {key: environ[key] for key in PROXY_VARIABLES if environ.get(key)}
    if environ.get("TFENV_PIP_INDEX_URL"):
        args["PIP_INDEX_URL"] = environ["TFENV_PIP_INDEX_URL"]
    return args


class ImageBuilder:
    """Builds (or pulls) the test images, skipping those whose recipe hash is unchanged."""

    def __init__(
        self,
        client: Any,
        reporter: Reporter | None = None,
        mode: str = "local",
        engine: EngineManager | None = None,
    ) -> None:
        self.client = client
        self.reporter = reporter or Reporter()
        self.mode = mode
        self.engine = engine or EngineManager(reporter=self.reporter)
        self.hashes = all_recipe_hashes()
        self._done: dict[str, str] = {}

    def ensure_all(self, keys: Sequence[str] | None = None) -> dict[str, str]:
        """Ensure the images (all, or the given keys and what they build on); key -> name."""
        for key in keys or [spec.key for spec in IMAGES]:
            if key not in IMAGES_BY_KEY:
                known = ", ".join(IMAGES_BY_KEY)
                raise DevenvError(f"unknown image key {key!r}; known keys: {known}")
            self.ensure(key)
        return dict(self._done)

    def ensure(self, key: str) -> str:
        """Make sure the image for KEY exists as its recipe says; return its name."""
        if key in self._done:
            return self._done[key]
        spec = IMAGES_BY_KEY[key]
        if self.mode == "official" and spec.official:
            name = self._ensure_official(spec.official)
        else:
            name = self._ensure_local(spec)
        self._done[key] = name
        return name

    def _labels_of(self, name: str) -> dict[str, str] | None:
        import docker

        try:
            attrs = self.client.api.inspect_image(name)
        except docker.errors.ImageNotFound:
            return None
        return dict((attrs.get("Config") or {}).get("Labels") or {})

    def _ensure_local(self, spec: ImageSpec) -> str:
        want = self.hashes[spec.key]
        labels = self._labels_of(spec.name)
        if labels is not None and labels.get(LABEL_RECIPE) == want:
            self.reporter.line(f"image {spec.name}: cached (recipe {want[:12]})")
            return spec.name
        reason = "missing" if labels is None else "recipe changed"
        base_name = self.ensure(spec.base) if spec.base else None
        with self.reporter.step(f"image {spec.name}") as outcome:
            old_id = self._image_id(spec.name)
            if spec.recipe == "debootstrap":
                self._build_base(spec, want)
            else:
                assert base_name is not None
                self._build(spec, want, base_name)
            outcome.text = f"built ({reason}; recipe {want[:12]})"
            self._drop_replaced(old_id, spec.name)
        return spec.name

    def _image_id(self, name: str) -> str | None:
        import docker

        try:
            return str(self.client.api.inspect_image(name)["Id"])
        except docker.errors.ImageNotFound:
            return None

    def _drop_replaced(self, old_id: str | None, name: str) -> None:
        """Remove the image a rebuild replaced, if devenv made it and nothing uses it."""
        import docker

        if old_id is None or old_id == self._image_id(name):
            return
        try:
            attrs = self.client.api.inspect_image(old_id)
            labels = (attrs.get("Config") or {}).get("Labels") or {}
            if attrs.get("RepoTags") or labels.get(LABEL_DEVENV) != "true":
                return
            self.client.api.remove_image(old_id)
            self.reporter.detail(f"removed the replaced image {old_id[7:19]}")
        except docker.errors.APIError as exc:
            # In use by a container or a child image: it stays until those go.
            self.reporter.detail(f"kept the replaced image {old_id[7:19]}: {exc.explanation}")

    def _build(self, spec: ImageSpec, recipe: str, base_name: str) -> None:
        folder = RECIPES_DIR / spec.recipe
        with tempfile.TemporaryDirectory(prefix="tfenv-build-") as tmp:
            context = Path(tmp)
            shutil.copytree(folder, context, dirs_exist_ok=True)
            shutil.copyfile(host_ca_bundle(), context / "host-ca-certificates.crt")
            buildargs = {
                "BASE_IMAGE": base_name,
                **spec.buildargs,
                **build_args_from_env(os.environ),
            }
            labels = {**spec.labels, LABEL_RECIPE: recipe, LABEL_DEVENV: "true"}
            events = self.client.api.build(
                path=str(context),
                tag=spec.name,
                buildargs=buildargs,
                labels=labels,
                network_mode="host",
                decode=True,
                rm=True,
                forcerm=True,
                pull=False,
            )
            self._follow_build(events)

    def _follow_build(self, events: Iterator[dict[str, Any]]) -> None:
        tail: collections.deque[str] = collections.deque(maxlen=30)
        step, step_start, built = "", time.monotonic(), False

        def finish_step() -> None:
            # ARG/ENV/LABEL steps take no time; RUN and COPY steps are where builds go slow.
            took = time.monotonic() - step_start
            if step and (" : RUN " in step or " : COPY " in step or took >= 1.0):
                self.reporter.detail(f"{step} ({took:.1f} s)")

        for event in events:
            if "error" in event:
                detail = event.get("errorDetail", {}).get("message") or event["error"]
                output = "\n".join(tail)
                raise DevenvError(f"docker build failed at '{step}': {detail}\n{output}")
            text = str(event.get("stream", ""))
            for line in text.splitlines():
                line = line.rstrip()
                if not line:
                    continue
                tail.append(line)
                if line.startswith("Step "):
                    finish_step()
                    step, step_start = line[:90], time.monotonic()
                if line.startswith("Successfully built"):
                    built = True
        finish_step()
        if not built:
            output = "\n".join(tail)
            raise DevenvError(f"docker build ended without 'Successfully built':\n{output}")

    def _build_base(self, spec: ImageSpec, recipe: str) -> None:
        debootstrap = shutil.which("debootstrap", path=os.environ.get("PATH", "") + ":/usr/sbin")
        if os.geteuid() != 0:
            raise DevenvError(
                "building the base image runs debootstrap, which needs root: run "
                "`sudo make images` once (later runs reuse the image)"
            )
        if debootstrap is None:
            if "debian" not in self.engine.system.os_ids():
                raise DevenvError("debootstrap is missing: apt-get install debootstrap")
            self.engine.apt_install("debootstrap")
            debootstrap = shutil.which("debootstrap", path="/usr/sbin:/usr/bin")
            if debootstrap is None:
                raise DevenvError("debootstrap is still missing after apt-get install")

        mirror = debian_mirror()
        repository, tag = spec.name.rsplit(":", 1)
        work = Path(tempfile.mkdtemp(prefix="tfenv-debootstrap-", dir="/var/tmp"))
        rootfs = work / "rootfs"
        try:
            with self.reporter.step(f"debootstrap {BASE_RECIPE['suite']} from {mirror}"):
                argv = [
                    debootstrap,
                    f"--variant={BASE_RECIPE['variant']}",
                    "--include=" + ",".join(BASE_RECIPE["include"]),
                    BASE_RECIPE["suite"],
                    str(rootfs),
                    mirror,
                ]
                try:
                    run_logged(argv, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
                except DevenvError as exc:
                    log = rootfs / "debootstrap" / "debootstrap.log"
                    extra = ""
                    if log.is_file():
                        extra = "\ndebootstrap.log:\n" + "\n".join(
                            log.read_text(errors="replace").splitlines()[-15:]
                        )
                    raise DevenvError(f"{exc}{extra}") from exc
                # debootstrap keeps the downloaded packages; the image does not need them.
                for deb in (rootfs / "var/cache/apt/archives").glob("*.deb"):
                    deb.unlink()

            with self.reporter.step(f"docker import {spec.name}") as outcome:
                tarball = work / "rootfs.tar"
                run_logged(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tarball), "."])
                labels = [f"LABEL {LABEL_RECIPE}={recipe}", f"LABEL {LABEL_DEVENV}=true"]
                self.client.api.import_image_from_file(
                    str(tarball),
                    repository=repository,
                    tag=tag,
                    changes=[*BASE_RECIPE["changes"], *labels],
                )
                outcome.text = f"{tarball.stat().st_size / 1e6:.0f} MB root file system"
        finally:
            _remove_tree_safely(work, self.reporter)

    def _ensure_official(self, name: str) -> str:
        import docker

        try:
            self.client.api.inspect_image(name)
            self.reporter.line(f"image {name}: present (official tag, not pulled again)")
            return name
        except docker.errors.ImageNotFound:
            pass
        repository, tag = name.rsplit(":", 1)
        with self.reporter.step(f"pull {name}") as outcome:
            layers: set[str] = set()
            for event in self.client.api.pull(repository, tag=tag, stream=True, decode=True):
                if "error" in event:
                    raise DevenvError(
                        f"pulling {name} failed: {event['error']}. Is a registry reachable? "
                        f"Without one, unset {IMAGES_ENV} to build the offline stand-ins."
                    )
                if event.get("id") and event.get("status") == "Pull complete":
                    layers.add(str(event["id"]))
            outcome.text = f"pulled ({len(layers)} layers)"
        return name


def _remove_tree_safely(path: Path, reporter: Reporter) -> None:
    """Delete a debootstrap work folder, but never through a mount left inside it."""
    mounts = _mounts_under(path)
    for mount in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], stdin=subprocess.DEVNULL, check=False)
    left = _mounts_under(path)
    if left:
        reporter.detail(f"left {path} in place: still mounted inside it: {', '.join(left)}")
        return
    shutil.rmtree(path, ignore_errors=True)


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return []
    points = [line.split()[1].replace("\\040", " ") for line in lines if len(line.split()) > 1]
    return [point for point in points if point.startswith(prefix)]


# ---------------------------------------------------------------------------------------------
# Sweeping one run's containers, networks and volumes (by label value, nothing else).
# ---------------------------------------------------------------------------------------------


def run_label_filters(value: str) -> list[str]:
    return [f"{key}={value}" for key in RUN_LABEL_KEYS]


def list_run_resources(client: Any, value: str) -> dict[str, set[str]]:
    """IDs (names for volumes) of the containers, networks, volumes carrying this run value."""
    found: dict[str, set[str]] = {"containers": set(), "networks": set(), "volumes": set()}
    for label in run_label_filters(value):
        for item in client.api.containers(all=True, filters={"label": label}):
            found["containers"].add(str(item["Id"]))
        for item in client.api.networks(filters={"label": label}):
            found["networks"].add(str(item["Id"]))
        for item in (client.api.volumes(filters={"label": label}) or {}).get("Volumes") or []:
            found["volumes"].add(str(item["Name"]))
    return found


def sweep_run(
    client: Any,
    value: str,
    keep: Mapping[str, set[str]] | None = None,
    log: Callable[[str], None] | None = None,
) -> list[str]:
    """Remove this run's containers, then networks, then volumes; return what was removed.

    Anything listed in KEEP (for example what existed before a test started) stays.
    A 404/409 during removal means someone else is already removing it and is ignored.
    """
    import docker

    keep = keep or {}
    removed: list[str] = []
    found = list_run_resources(client, value)
    removers: tuple[tuple[str, Callable[[str], object]], ...] = (
        ("containers", lambda ident: client.api.remove_container(ident, force=True, v=True)),
        ("networks", lambda ident: client.api.remove_network(ident)),
        ("volumes", lambda ident: client.api.remove_volume(ident, force=True)),
    )
    for kind, remove in removers:
        for ident in sorted(found[kind] - keep.get(kind, set())):
            try:
                remove(ident)
                # Volumes go by name, the others by (shortened) ID.
                shown = ident if kind == "volumes" else ident[:12]
                removed.append(f"{kind[:-1]} {shown}")
            except docker.errors.NotFound:
                continue
            except docker.errors.APIError as exc:
                if exc.status_code == 409:
                    continue
                if log:
                    log(f"could not remove {kind[:-1]} {ident[:12]}: {exc.explanation}")
    return removed


# ---------------------------------------------------------------------------------------------
# GPU request support, as tests and tools see it.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuSupport:
    """What a GPU device request does on this engine."""

    accepted: bool
    #: the engine is devenv's own, started with the stand-in hook (no GPU is ever used)
    standin: bool
    visible_devices: str
    detail: str


def probe_gpu_requests(
    client: Any, image: str, labels: Mapping[str, str], config: EngineConfig | None = None
) -> GpuSupport:
    """Run a short container with a GPU request and report what happened."""
    import docker
    from docker.types import DeviceRequest

    own = EngineManager(config=config).own_state()
    standin = bool(own and own.gpu_standin)
    container = None
    try:
        container = client.containers.create(
            image,
            ["sh", "-c", 'echo "NVIDIA_VISIBLE_DEVICES=$NVIDIA_VISIBLE_DEVICES"'],
            device_requests=[DeviceRequest(count=-1, capabilities=[["gpu"]])],
            labels=dict(labels),
            network_mode="none",
        )
        container.start()
        container.wait(timeout=60)
        output = container.logs(stdout=True, stderr=False).decode().strip()
    except docker.errors.APIError as exc:
        detail = f"GPU stand-in not active; GPU requests fail here: {exc.explanation}"
        return GpuSupport(False, False, "", detail)
    finally:
        if container is not None:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
    visible = output.rpartition("=")[2]
    if standin:
        detail = f"GPU stand-in active: requests succeed (NVIDIA_VISIBLE_DEVICES={visible}); no GPU"
    else:
        detail = (
            f"GPU requests accepted by an engine devenv did not set up (NVIDIA_VISIBLE_DEVICES="
            f"{visible}); it may have real GPUs"
        )
    return GpuSupport(True, standin, visible, detail)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def _cmd_engine(args: argparse.Namespace, engine: EngineManager) -> None:
    engine.ensure(os.environ.get("DOCKER_HOST"), args.gpu_standin)


def _require_engine(engine: EngineManager) -> Any:
    docker_host = os.environ.get("DOCKER_HOST")
    where = docker_host or engine.config.url
    probe = engine.system.probe(where, docker_host)
    if not probe.ok:
        raise DevenvError(
            f"no Docker engine answers at {where} ({probe.error}): run `make engine` "
            "(or `scripts/devenv.py engine`) first"
        )
    return connect(docker_host=docker_host, timeout=900)


def _cmd_images(args: argparse.Namespace, engine: EngineManager) -> None:
    mode = images_mode()
    client = _require_engine(engine)
    start = time.monotonic()
    try:
        names = ImageBuilder(client, engine.reporter, mode, engine).ensure_all(args.only)
    finally:
        client.close()
    took = time.monotonic() - start
    engine.reporter.line(f"images ready ({mode}): {len(names)} in {took:.1f} s")


def _cmd_all(args: argparse.Namespace, engine: EngineManager) -> None:
    # One manager for both, so apt-get update runs at most once.
    _cmd_engine(args, engine)
    _cmd_images(args, engine)


def _cmd_stop_engine(args: argparse.Namespace, engine: EngineManager) -> None:
    with engine.reporter.step("stop engine") as outcome:
        outcome.text = engine.stop_own()


def _cmd_sweep(args: argparse.Namespace, engine: EngineManager) -> None:
    client = _require_engine(engine)
    try:
        with engine.reporter.step(f"sweep run {args.run_label}") as outcome:
            removed = sweep_run(client, args.run_label, log=engine.reporter.detail)
            outcome.text = f"removed {len(removed)}: {', '.join(removed) or 'nothing'}"
    finally:
        client.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="devenv.py", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    sub = parser.add_subparsers(dest="command", required=True)
    standin_help = (
        "when devenv starts dockerd itself, put a test stand-in "
        f"{STANDIN_HOOK_NAME} on its PATH so GPU requests succeed (no GPU is used)"
    )
    engine = sub.add_parser("engine", help="make sure a Docker engine answers")
    engine.add_argument("--gpu-standin", action="store_true", help=standin_help)
    images = sub.add_parser("images", help="build or pull the test images (cached by recipe)")
    images.add_argument(
        "--only", action="append", metavar="KEY", help=f"one of: {', '.join(IMAGES_BY_KEY)}"
    )
    everything = sub.add_parser("all", help="engine, then images")
    everything.add_argument("--gpu-standin", action="store_true", help=standin_help)
    everything.set_defaults(only=None)
    sub.add_parser("stop-engine", help="stop the dockerd devenv started (never another one)")
    sweep = sub.add_parser("sweep", help="remove what one test run left (by its label value)")
    sweep.add_argument("run_label", help="the run's TFENV_TEST_RUN_LABEL value")
    args = parser.parse_args(argv)

    reporter = Reporter()
    handlers: dict[str, Callable[[argparse.Namespace, EngineManager], None]] = {
        "engine": _cmd_engine,
        "images": _cmd_images,
        "all": _cmd_all,
        "stop-engine": _cmd_stop_engine,
        "sweep": _cmd_sweep,
    }
    try:
        handlers[args.command](args, EngineManager(reporter=reporter))
    except DevenvError as exc:
        if exc.__cause__ is None:  # not yet printed by a step
            reporter.line(f"FAILED: {exc}")
        return 1
    except KeyboardInterrupt:
        reporter.line("interrupted")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
