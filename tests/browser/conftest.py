"""A real JupyterLab with jupyter-tfenv, real TensorFlow container kernels, and real Chromium.

One JupyterLab serves the whole browser session: it runs from fresh Jupyter directories (config,
data, runtime, settings, workspaces), on a random loopback port with a random token, sees this
checkout's prebuilt extension and two installed tfenv kernelspecs (TensorFlow 2.21.0 and 2.20.0,
CPU), and labels its containers with this test run's owner value. A stand-in registry on
loopback lists a few tags, so the switcher has registry versions to show.

Chromium runs per RECIPES (Debian's /usr/bin/chromium, no background networking, a fresh
profile), inside its own network namespace (see isolated_chromium.py for why).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from jupyter_tfenv.kernelspecs import install_kernelspec
from jupyter_tfenv.testing import ServerProcess

from .isolated_chromium import CHROMIUM, UnixBridge, write_launcher

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO_ROOT / "artifacts" / "screenshots"
DOC_IMAGES = REPO_ROOT / "docs" / "images"
BUILT_EXTENSION = REPO_ROOT / "jupyter_tfenv" / "labextension"
IPYWIDGETS7_RECIPE = Path(__file__).resolve().parent / "images" / "ipywidgets7"
IPYWIDGETS7_IMAGE = "jupyter-tfenv-test/kernel:py3.11-ipywidgets7"
RECIPE_LABEL = "org.jupyter-tfenv.test-recipe"
REGISTRY_REPOSITORY = "tensorflow/tensorflow"
REGISTRY_TAGS = ["2.19.0-jupyter", "2.20.0-jupyter", "2.21.0-jupyter"]
TOOL_PATH = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class _TagsHandler(BaseHTTPRequestHandler):
    """Answers the Registry API's tag list for one repository, like a real registry."""

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] == f"/v2/{REGISTRY_REPOSITORY}/tags/list":
            body = json.dumps({"name": REGISTRY_REPOSITORY, "tags": REGISTRY_TAGS}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_error(404)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="session")
def tag_registry() -> Iterator[str]:
    """A loopback stand-in for a registry's tag list; yields the repository to configure."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TagsHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}/{REGISTRY_REPOSITORY}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="session")
def ipywidgets7_image(docker_client: Any, kernel_image: str, devenv: Any) -> str:
    """The kernel image plus ipywidgets 7 (case B25), built once and again when its recipe
    changes."""
    import docker

    recipe = hashlib.sha256((IPYWIDGETS7_RECIPE / "Dockerfile").read_bytes()).hexdigest()
    with contextlib.suppress(docker.errors.ImageNotFound):
        labels = docker_client.images.get(IPYWIDGETS7_IMAGE).labels or {}
        if labels.get(RECIPE_LABEL) == recipe:
            return IPYWIDGETS7_IMAGE
    with tempfile.TemporaryDirectory(prefix="tfenv-ipywidgets7-") as context:
        shutil.copytree(IPYWIDGETS7_RECIPE, context, dirs_exist_ok=True)
        shutil.copyfile(devenv.host_ca_bundle(), Path(context, "host-ca-certificates.crt"))
        events = docker_client.api.build(
            path=context,
            tag=IPYWIDGETS7_IMAGE,
            buildargs={"BASE_IMAGE": kernel_image, **devenv.build_args_from_env(os.environ)},
            labels={RECIPE_LABEL: recipe},
            network_mode="host",
            decode=True,
            rm=True,
            forcerm=True,
        )
        for event in events:
            if "error" in event:
                pytest.fail(f"building {IPYWIDGETS7_IMAGE} failed: {event['error']}")
    return IPYWIDGETS7_IMAGE


@pytest.fixture(scope="package")
def lab_server(
    tmp_path_factory: pytest.TempPathFactory,
    tf_jupyter_image: str,
    tf_alt_jupyter_image: str,
    ipywidgets7_image: str,
    tfenv_run_label: str,
    container_sweeper: Any,
    tag_registry: str,
) -> Iterator[ServerProcess]:
    """JupyterLab with jupyter-tfenv, its kernels labelled with this run's owner value."""
    home = tmp_path_factory.mktemp("lab")
    root = home / "notebooks"
    root.mkdir()
    prefix = home / "prefix"
    for image in (tf_jupyter_image, tf_alt_jupyter_image):
        install_kernelspec(image, gpus="none", user=False, prefix=str(prefix))
    # No network at all for this one: the switcher must not need the container's network.
    install_kernelspec(
        ipywidgets7_image,
        gpus="none",
        user=False,
        prefix=str(prefix),
        extra_config={"network": "none"},
    )

    # This checkout's build, not a copy an earlier `pip install` left in the environment: in a
    # virtual environment jupyter_core prefers sys.prefix over the user's data directory, so
    # only JUPYTER_PATH comes before that copy.
    extensions = prefix / "share" / "jupyter" / "labextensions"
    extensions.mkdir(parents=True)
    (extensions / "jupyter-tfenv").symlink_to(BUILT_EXTENSION, target_is_directory=True)
    # Keep JupyterLab from asking about news: the toast would cover the page.
    settings = home / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    config = home / "config"
    config.mkdir()
    (config / "jupyter_server_config.json").write_text(
        json.dumps({"ServerApp": {"jpserver_extensions": {"jupyter_tfenv": True}}})
    )

    server = ServerProcess(
        root,
        home,
        app="lab",
        extra_env={
            "TFENV_OWNER_LABEL": tfenv_run_label,
            "TFENV_TENSORFLOW_REPOSITORY": tag_registry,
            "JUPYTER_PATH": str(prefix / "share" / "jupyter"),
            "PYTHONPATH": str(REPO_ROOT),
        },
    )
    server.start(timeout=120)
    try:
        built = json.loads((BUILT_EXTENSION / "package.json").read_text())["jupyterlab"]
        with urllib.request.urlopen(f"{server.url}lab?token={server.token}", timeout=30) as page:
            served = page.read().decode()
        assert built["_build"]["load"] in served, "JupyterLab serves another jupyter-tfenv build"
        yield server
    finally:
        server.stop()
        # Leave the log where CI keeps artifacts.
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(server.log_path, SCREENSHOTS / "jupyterlab.log")


# Package scope: Playwright's sync API marks an event loop as running in this thread until it
# stops, which would break every asyncio test that runs after the browser tests.
@pytest.fixture(scope="package")
def browser_context(
    lab_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """A fresh Chromium profile driven by Playwright, isolated from host network changes."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"no Chromium at {CHROMIUM}: run `apt-get install -y chromium` (the tests use the "
            "system's Chromium; never `playwright install`)",
            pytrace=False,
        )
    missing = [tool for tool in ("unshare", "ip") if shutil.which(tool, path=TOOL_PATH) is None]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not found: run `apt-get install -y util-linux iproute2` "
            "(Chromium runs in its own network namespace)",
            pytrace=False,
        )
    home = tmp_path_factory.mktemp("chromium")
    # Unix socket paths are limited to about 100 bytes: keep this one short.
    socket_dir = Path(tempfile.mkdtemp(prefix="tfenv-br-"))
    socket_path = socket_dir / "lab.sock"
    bridge = UnixBridge(socket_path, lab_server.port).start()
    launcher = write_launcher(home, lab_server.port, socket_path)
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                str(home / "profile"),
                executable_path=str(launcher),
                args=CHROMIUM_ARGS,
                headless=True,
                viewport={"width": 1280, "height": 760},
            )
            try:
                yield context
            finally:
                context.close()
    finally:
        bridge.stop()
        shutil.rmtree(socket_dir, ignore_errors=True)


@pytest.fixture
def page(browser_context: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A new tab; on failure its screenshot and console lines are kept as artifacts."""
    tab = browser_context.new_page()
    console: list[str] = []
    tab.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    tab.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
    try:
        yield tab
    finally:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        name = request.node.name
        with contextlib.suppress(Exception):
            tab.screenshot(path=str(SCREENSHOTS / f"{name}-last.png"))
        (SCREENSHOTS / f"{name}-console.log").write_text("\n".join(console))
        tab.close()


@pytest.fixture(scope="session")
def screenshot() -> Any:
    """Save a screenshot under artifacts/screenshots/; with TFENV_UPDATE_DOC_IMAGES=1, also
    under docs/images/ (the README's pictures)."""

    def save(target: Any, name: str, **options: Any) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        target.screenshot(path=str(path), **options)
        if os.environ.get("TFENV_UPDATE_DOC_IMAGES") == "1":
            DOC_IMAGES.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, DOC_IMAGES / path.name)
        return path

    return save
