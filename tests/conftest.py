"""Shared test fixtures: the Docker engine, the test images, and sweeping by run label.

Engine and images come from ``scripts/devenv.py`` (the same code ``make engine`` and
``make images`` run), so a test sees exactly what a developer or CI built.

Every test session gets a unique label value (fixture ``tfenv_run_label``, also exported as
``TFENV_TEST_RUN_LABEL`` for subprocesses, and as ``TFENV_OWNER_LABEL``, the provisioner's
owner label default).  Containers, networks and volumes that carry it,
under the product's ``org.jupyter-tfenv.owner`` key or the tests' own
``org.jupyter-tfenv.test-run`` key, are removed at session end, and those a failed test created
are removed right after it.  Nothing else on the (shared) engine is touched.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import sys
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from traitlets.config import Config

REPO_ROOT = Path(__file__).resolve().parents[1]
RUN_LABEL_ENV = "TFENV_TEST_RUN_LABEL"
# The provisioner's owner_label default reads this, so product containers made anywhere in
# the run (servers and kernels in subprocesses too) carry this run's value, never "default".
OWNER_ENV = "TFENV_OWNER_LABEL"


def _load_devenv() -> ModuleType:
    # scripts/ is not a package; load the one file by path so tests and make share it.
    path = REPO_ROOT / "scripts" / "devenv.py"
    spec = importlib.util.spec_from_file_location("tfenv_devenv", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


devenv = _load_devenv()

_RUN_LABEL = pytest.StashKey[str]()
_IMAGES_MODE = pytest.StashKey[str]()
_SWEEPER = pytest.StashKey["RunSweeper"]()
_NOTES = pytest.StashKey[list[str]]()
_PHASES = pytest.StashKey[dict[str, pytest.TestReport]]()
_PREVIOUS_ENV = pytest.StashKey[dict[str, "str | None"]]()


class RunSweeper:
    """Finds and removes what this run created, by label value; connects on first use."""

    def __init__(self, value: str) -> None:
        self.value = value
        self._client: Any = None
        self._probed = False

    def client(self) -> Any:
        """A docker client, or None when no engine answers (then nothing can be left over)."""
        if not self._probed:
            self._probed = True
            docker_host = os.environ.get("DOCKER_HOST")
            manager = devenv.EngineManager()
            if manager.system.probe(docker_host or manager.config.url, docker_host).ok:
                self._client = devenv.connect(docker_host=docker_host, timeout=60)
        return self._client

    def snapshot(self) -> dict[str, set[str]]:
        """What carries this run's label right now (containers, networks, volumes)."""
        client = self.client()
        if client is None:
            return {}
        found: dict[str, set[str]] = devenv.list_run_resources(client, self.value)
        return found

    def sweep(self, keep: dict[str, set[str]] | None = None) -> list[str]:
        """Remove this run's resources except those in KEEP; return what was removed."""
        client = self.client()
        if client is None:
            return []
        removed: list[str] = devenv.sweep_run(client, self.value, keep=keep)
        return removed

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def pytest_configure(config: pytest.Config) -> None:
    value = f"pytest-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"
    config.stash[_RUN_LABEL] = value
    config.stash[_PREVIOUS_ENV] = {
        name: os.environ.get(name) for name in (RUN_LABEL_ENV, OWNER_ENV)
    }
    os.environ[RUN_LABEL_ENV] = value
    os.environ[OWNER_ENV] = value
    config.stash[_SWEEPER] = RunSweeper(value)
    config.stash[_NOTES] = []
    try:
        config.stash[_IMAGES_MODE] = devenv.images_mode()
    except devenv.DevenvError as exc:
        raise pytest.UsageError(str(exc)) from exc


def pytest_unconfigure(config: pytest.Config) -> None:
    for name, previous in config.stash.get(_PREVIOUS_ENV, {}).items():
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [
        f"jupyter-tfenv run label: {config.stash[_RUN_LABEL]} ({RUN_LABEL_ENV})",
        f"jupyter-tfenv test images: {config.stash[_IMAGES_MODE]} (TFENV_TEST_IMAGES)",
    ]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    item.stash.setdefault(_PHASES, {})[report.when] = report
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    # Always look: product containers carry the run value through TFENV_OWNER_LABEL even in
    # tests that never asked for a label fixture.  With no engine this returns at once.
    sweeper = session.config.stash.get(_SWEEPER, None)
    if sweeper is None or session.testscollected == 0:
        return
    removed = sweeper.sweep()
    if removed:
        session.config.stash[_NOTES].append(
            f"swept {len(removed)} leftover(s) of run {sweeper.value} at session end: "
            + ", ".join(removed)
        )
    sweeper.close()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    notes = config.stash.get(_NOTES, [])
    if notes:
        terminalreporter.section("jupyter-tfenv test environment")
        for note in notes:
            terminalreporter.write_line(note)


def add_note(config: pytest.Config, text: str) -> None:
    """Add a line to the end-of-run summary (engine, GPU stand-in, sweeps)."""
    config.stash[_NOTES].append(text)


@pytest.fixture(scope="session", name="devenv")
def devenv_fixture() -> ModuleType:
    """scripts/devenv.py as a module (engine and image logic shared with make and CI)."""
    return devenv


# ---------------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tfenv_run_label(pytestconfig: pytest.Config) -> str:
    """This session's unique label value (also in the TFENV_TEST_RUN_LABEL environment)."""
    return pytestconfig.stash[_RUN_LABEL]


@pytest.fixture(scope="session")
def test_labels(tfenv_run_label: str) -> dict[str, str]:
    """Labels for containers, networks, volumes a test creates itself (not the product)."""
    return {devenv.LABEL_TEST_RUN: tfenv_run_label}


@pytest.fixture
def tfenv_config(tfenv_run_label: str) -> Config:
    """Config that makes the provisioner label its containers with this run's owner value."""
    return Config({"DockerProvisioner": {"owner_label": tfenv_run_label}})


@pytest.fixture(autouse=True)
def _sweep_after_failed_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a failed test, remove what it created with this run's label (and nothing else).

    The snapshot is taken after session-, module- and class-scoped fixtures are set up (pytest
    sets up wider scopes first), so resources shared by later tests are kept.
    """
    sweeper = request.config.stash[_SWEEPER]
    before = sweeper.snapshot()
    yield
    phases = request.node.stash.get(_PHASES, {})
    if any(report.failed for report in phases.values()):
        removed = sweeper.sweep(keep=before)
        if removed:
            add_note(
                request.config,
                f"{request.node.nodeid} failed; swept what it created: {', '.join(removed)}",
            )


# ---------------------------------------------------------------------------------------------
# Engine and images
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def docker_client(pytestconfig: pytest.Config) -> Iterator[Any]:
    """A docker SDK client for the engine at DOCKER_HOST or the default socket.

    Fails (never skips) when no engine answers, saying how to get one.
    """
    docker_host = os.environ.get("DOCKER_HOST")
    manager = devenv.EngineManager()
    where = docker_host or manager.config.url
    probe = manager.system.probe(where, docker_host)
    if not probe.ok:
        pytest.fail(
            f"no Docker engine answers at {where} ({probe.error}): run `make engine` "
            "(scripts/devenv.py engine), or `make test` which also builds the images",
            pytrace=False,
        )
    own = manager.own_state()
    origin = "not started by devenv" if own is None else f"started by devenv, pid {own.pid}"
    add_note(pytestconfig, f"engine: {where}, Docker {probe.version} ({origin})")
    client = devenv.connect(docker_host=docker_host, timeout=300)
    yield client
    client.close()


@pytest.fixture(scope="session")
def container_sweeper(docker_client: Any, pytestconfig: pytest.Config) -> RunSweeper:
    """This run's sweeper: ``snapshot()`` and ``sweep(keep=...)`` by run label value."""
    sweeper: RunSweeper = pytestconfig.stash[_SWEEPER]
    return sweeper


@pytest.fixture(scope="session")
def images_mode(pytestconfig: pytest.Config) -> str:
    """``local`` (offline stand-ins built here) or ``official`` (TFENV_TEST_IMAGES)."""
    return pytestconfig.stash[_IMAGES_MODE]


@pytest.fixture(scope="session")
def image_builder(docker_client: Any, images_mode: str) -> Any:
    """devenv's ImageBuilder: builds a missing image on first use, else reuses it."""
    return devenv.ImageBuilder(docker_client, mode=images_mode)


@pytest.fixture(scope="session")
def kernel_image(image_builder: Any) -> str:
    """Small image with Python 3.11 and ipykernel, for fast kernel tests."""
    return str(image_builder.ensure("kernel"))


@pytest.fixture(scope="session")
def tf_image(image_builder: Any) -> str:
    """TensorFlow TF_VERSION without ipykernel (shaped like tensorflow/tensorflow:2.21.0)."""
    return str(image_builder.ensure("tf"))


@pytest.fixture(scope="session")
def tf_jupyter_image(image_builder: Any) -> str:
    """TensorFlow TF_VERSION with ipykernel and WORKDIR /tf (like the -jupyter tag)."""
    return str(image_builder.ensure("tf-jupyter"))


@pytest.fixture(scope="session")
def tf_alt_image(image_builder: Any) -> str:
    """The second TensorFlow version, without ipykernel."""
    return str(image_builder.ensure("tf-alt"))


@pytest.fixture(scope="session")
def tf_alt_jupyter_image(image_builder: Any) -> str:
    """The second TensorFlow version with ipykernel, for switching versions for real."""
    return str(image_builder.ensure("tf-alt-jupyter"))


@pytest.fixture(scope="session")
def tf_version() -> str:
    """The TensorFlow version in ``tf_image`` and ``tf_jupyter_image``."""
    return str(devenv.TF_VERSION)


@pytest.fixture(scope="session")
def tf_alt_version() -> str:
    """The TensorFlow version in ``tf_alt_image`` and ``tf_alt_jupyter_image``."""
    return str(devenv.TF_ALT_VERSION)


@pytest.fixture(scope="session")
def gpu_support(
    docker_client: Any, kernel_image: str, test_labels: dict[str, str], pytestconfig: pytest.Config
) -> Any:
    """What a GPU device request does on this engine: accepted (stand-in or real) or refused.

    Under ``make test`` on a machine where devenv starts the engine, the stand-in hook is
    active: requests succeed and no GPU is used.  On an engine devenv did not start, requests
    usually fail with "could not select device driver".  The summary says which it was.
    """
    support = devenv.probe_gpu_requests(docker_client, kernel_image, test_labels)
    add_note(pytestconfig, f"GPU: {support.detail}")
    return support


@dataclass(frozen=True)
class ContainerRun:
    """The outcome of a one-shot container."""

    status: int
    stdout: str
    stderr: str


@pytest.fixture
def run_in_image(docker_client: Any, test_labels: dict[str, str]) -> Callable[..., ContainerRun]:
    """Run a command to completion in a fresh, labelled container (no network by default)."""
    import docker

    def run(
        image: str, command: Sequence[str], *, timeout: float = 120, **create: Any
    ) -> ContainerRun:
        create.setdefault("network_mode", "none")
        container = docker_client.containers.create(
            image, list(command), labels=dict(test_labels), **create
        )
        try:
            container.start()
            status = int(container.wait(timeout=timeout)["StatusCode"])
            stdout = container.logs(stdout=True, stderr=False).decode(errors="replace")
            stderr = container.logs(stdout=False, stderr=True).decode(errors="replace")
        finally:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
        return ContainerRun(status, stdout, stderr)

    return run
