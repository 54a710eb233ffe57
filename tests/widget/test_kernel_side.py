"""The switcher's kernel side, in a real (local) ipykernel: what reaches the front end.

These tests need no Docker: they start the host's ipykernel with the TFENV_* variables the
provisioner would set, run what a user types, and check the messages JupyterLab receives: the
widget comm (protocol 2, our model), the widget-view output, and the printed warnings.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager

from jupyter_tfenv import widget

REPO_ROOT = Path(__file__).resolve().parents[2]
KERNEL_ENV = {
    "TFENV_KERNEL_ID": "0c3d9a41-widget-test",
    "TFENV_IMAGE": "jupyter-tfenv-test/tensorflow:2.21.0-jupyter",
    "TFENV_GPUS": "none",
}


@pytest.fixture(scope="module")
def kernel() -> Iterator[BlockingKernelClient]:
    """A local ipykernel that can import this checkout of jupyter_tfenv."""
    env = {**os.environ, **KERNEL_ENV, "PYTHONPATH": str(REPO_ROOT)}
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(env=env, cwd=str(REPO_ROOT))
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        yield client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def run_cell(client: BlockingKernelClient, code: str) -> list[dict[str, Any]]:
    """Execute CODE; return the iopub messages it caused, up to its idle status."""
    msg_id = client.execute(code)
    messages: list[dict[str, Any]] = []
    while True:
        message = client.get_iopub_msg(timeout=30)
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        if message["msg_type"] == "status":
            if message["content"]["execution_state"] == "idle":
                return messages
            continue
        messages.append(message)


def of_type(messages: list[dict[str, Any]], msg_type: str) -> list[dict[str, Any]]:
    return [message for message in messages if message["msg_type"] == msg_type]


def stream_text(messages: list[dict[str, Any]], name: str) -> str:
    return "".join(
        message["content"]["text"]
        for message in of_type(messages, "stream")
        if message["content"]["name"] == name
    )


def test_switcher_call_opens_our_widget_and_shows_it(kernel: BlockingKernelClient) -> None:
    messages = run_cell(kernel, "import jupyter_tfenv\njupyter_tfenv.switcher()")

    assert not of_type(messages, "error")
    [opened] = of_type(messages, "comm_open")
    assert opened["content"]["target_name"] == "jupyter.widget"
    assert opened["metadata"]["version"].split(".")[0] == "2"
    state = opened["content"]["data"]["state"]
    assert (state["_model_module"], state["_model_name"]) == ("jupyter-tfenv", "TfenvSwitcherModel")
    assert (state["_view_module"], state["_view_name"]) == ("jupyter-tfenv", "TfenvSwitcherView")
    assert state["_model_module_version"] == "^1.0.0"
    assert state["kernel_id"] == KERNEL_ENV["TFENV_KERNEL_ID"]
    assert state["image"] == KERNEL_ENV["TFENV_IMAGE"]
    assert state["gpus"] == "none"

    # Shown once, even though the call is the cell's last expression.
    [shown] = of_type(messages, "display_data") + of_type(messages, "execute_result")
    view = shown["content"]["data"]["application/vnd.jupyter.widget-view+json"]
    assert view["model_id"] == opened["content"]["comm_id"]
    assert view["version_major"] == 2
    plain = shown["content"]["data"]["text/plain"]
    assert "on CPU in jupyter-tfenv-test/tensorflow:2.21.0-jupyter" in plain
    # The host's ipywidgets is 8: nothing to warn about.
    assert stream_text(messages, "stderr") == ""


def test_magic_shows_the_switcher(kernel: BlockingKernelClient) -> None:
    run_cell(kernel, "%load_ext jupyter_tfenv")

    messages = run_cell(kernel, "%tfenv")

    assert [m["content"]["target_name"] for m in of_type(messages, "comm_open")] == [
        "jupyter.widget"
    ]
    assert len(of_type(messages, "display_data")) == 1


def test_magic_rejects_arguments_with_usage(kernel: BlockingKernelClient) -> None:
    run_cell(kernel, "%load_ext jupyter_tfenv")

    messages = run_cell(kernel, "%tfenv 2.20")

    assert "%tfenv takes no arguments, got '2.20'" in stream_text(messages, "stdout")
    assert "Usage: %tfenv" in stream_text(messages, "stdout")
    assert not of_type(messages, "comm_open")


def test_page_reload_gets_the_state_again(kernel: BlockingKernelClient) -> None:
    messages = run_cell(kernel, "import jupyter_tfenv\njupyter_tfenv.switcher()")
    comm_id = of_type(messages, "comm_open")[0]["content"]["comm_id"]

    # What the widget manager of a reloaded page sends to each live widget comm.
    request = kernel.session.msg(
        "comm_msg", {"comm_id": comm_id, "data": {"method": "request_state"}}
    )
    kernel.shell_channel.send(request)
    reply = None
    for _ in range(50):
        message = kernel.get_iopub_msg(timeout=30)
        if message["msg_type"] == "comm_msg" and message["content"]["comm_id"] == comm_id:
            reply = message["content"]["data"]
            break

    assert reply is not None
    assert reply["method"] == "update"
    assert reply["state"]["_model_name"] == "TfenvSwitcherModel"
    assert reply["state"]["image"] == KERNEL_ENV["TFENV_IMAGE"]


def test_incompatible_ipywidgets_in_image_prints_how_to_fix(
    kernel: BlockingKernelClient,
) -> None:
    # Stand in for an image that ships ipywidgets 7 (see tests/browser for the real one).
    code = (
        "import jupyter_tfenv, jupyter_tfenv.widget as w\n"
        "original = w.ipywidgets_version\n"
        "w.ipywidgets_version = lambda: '7.8.5'\n"
        "try:\n"
        "    jupyter_tfenv.switcher()\n"
        "finally:\n"
        "    w.ipywidgets_version = original\n"
    )
    messages = run_cell(kernel, code)

    warning = stream_text(messages, "stderr")
    assert "This image has ipywidgets 7.8.5" in warning
    assert "renders ipywidgets 8 widgets only" in warning
    assert "The TensorFlow switcher below is not affected" in warning
    assert "pip install 'ipywidgets>=8'" in warning
    assert "newer image" in warning
    # The switcher is still shown.
    assert len(of_type(messages, "comm_open")) == 1
    assert len(of_type(messages, "display_data")) == 1
    state = of_type(messages, "comm_open")[0]["content"]["data"]["state"]
    assert state["ipywidgets_version"] == "7.8.5"


@pytest.mark.parametrize(
    ("version", "warns"),
    [(None, False), ("8.1.5", False), ("7.8.5", True), ("6.0.0", True), ("9.0.0", True)],
)
def test_compatibility_message_only_for_other_majors(version: str | None, warns: bool) -> None:
    assert (widget.widgets_compatibility_message(version) is not None) is warns


def test_device_descriptions() -> None:
    assert widget.describe_device("none") == "CPU"
    assert widget.describe_device("all") == "GPU (all)"
    assert widget.describe_device("device=0,1") == "GPU (device=0,1)"


def test_tensorflow_version_prefers_the_imported_module(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = type(sys)("tensorflow")
    fake.__version__ = "2.99.1"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorflow", fake)

    assert widget.tensorflow_version() == "2.99.1"


def test_older_kernels_use_ipykernels_comm(monkeypatch: pytest.MonkeyPatch) -> None:
    import comm
    from ipykernel.comm import Comm

    def unpatched(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the comm package's placeholder must not be used")

    unpatched.__module__ = "comm"
    monkeypatch.setattr(comm, "create_comm", unpatched)

    assert widget._comm_factory() is Comm


def test_kernel_side_imports_nothing_an_image_may_lack() -> None:
    # Run as in a bare image: no site-packages of ours, only the mounted package.
    code = (
        "import sys\n"
        "import jupyter_tfenv, jupyter_tfenv.widget, jupyter_tfenv.kernel_ext\n"
        "heavy = {'docker', 'traitlets', 'jupyter_client', 'jupyter_server', 'tornado',"
        " 'ipywidgets', 'IPython', 'ipykernel', 'comm'}\n"
        "print(sorted(heavy & {name.split('.')[0] for name in sys.modules}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-S", "-c", code],
        cwd=REPO_ROOT,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": os.environ.get("PATH", "")},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "[]"
