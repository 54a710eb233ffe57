"""Driving JupyterLab the way a user does, with waits that match what JupyterLab shows.

The app object JupyterLab exposes (``--LabApp.expose_app_in_browser``) is read only to know
when the kernel is really ready: "Idle" in the status bar appears before the session is
connected, and typing then gets lost.
"""

from __future__ import annotations

import re
from typing import Any

import docker
from playwright.sync_api import Locator, Page, expect

from jupyter_tfenv.testing import ServerProcess

KERNEL_READY_JS = """() => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const context = panel && panel.sessionContext;
  const kernel = context && context.session && context.session.kernel;
  return !!(context && context.isReady && kernel &&
    kernel.connectionStatus === 'connected' && kernel.status === 'idle');
}"""

KERNEL_ID_JS = """() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.id"""

# Puts CODE into the active cell and returns its index; the keyboard then runs it.
SET_ACTIVE_CELL_JS = """(code) => {
  const notebook = window.jupyterapp.shell.currentWidget.content;
  notebook.activeCell.model.sharedModel.setSource(code);
  return notebook.activeCellIndex;
}"""

SHUTDOWN_JS = """async () => {
  await window.jupyterapp.shell.currentWidget.sessionContext.shutdown();
}"""

LABEL_OWNER = "org.jupyter-tfenv.owner"
LABEL_KERNEL_ID = "org.jupyter-tfenv.kernel-id"


class Lab:
    """One JupyterLab tab."""

    def __init__(self, page: Page, server: ServerProcess) -> None:
        self.page = page
        self.server = server

    def open(self, workspace: str) -> None:
        """Open JupyterLab in a fresh workspace and wait for the launcher."""
        self.page.goto(
            f"{self.server.url}lab/workspaces/{workspace}?reset&token={self.server.token}"
        )
        expect(self.page.locator(".jp-LauncherCard").first).to_be_visible(timeout=90_000)
        self.page.wait_for_function("() => !!(window.jupyterapp && window.jupyterapp.shell)")

    def start_notebook(self, display_name: str) -> str:
        """Click the launcher's notebook card for DISPLAY_NAME; return the kernel id."""
        card = self.page.locator(
            f'.jp-LauncherCard[data-category="Notebook"][title="{display_name}"]'
        )
        card.click()
        self.wait_until_kernel_ready()
        return str(self.page.evaluate(KERNEL_ID_JS))

    def wait_until_kernel_ready(self, timeout_ms: float = 120_000) -> None:
        self.page.wait_for_function(KERNEL_READY_JS, timeout=timeout_ms, polling=200)

    def run_cell(self, code: str) -> Locator:
        """Run CODE in the active cell with Shift+Enter; return that cell."""
        index = int(self.page.evaluate(SET_ACTIVE_CELL_JS, code))
        cell = self.page.locator(".jp-Notebook .jp-Cell").nth(index)
        cell.locator(".jp-InputArea-editor").click()
        self.page.keyboard.press("Shift+Enter")
        return cell

    def output_of(self, code: str, expected: str, timeout_ms: float = 60_000) -> Locator:
        """Run CODE and wait until the cell's printed output (stdout) shows EXPECTED."""
        output = self.run_cell(code).locator(
            '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stdout"]'
        )
        expect(output).to_contain_text(expected, timeout=timeout_ms)
        return output

    def tensorflow_version_shown(self, version: str) -> None:
        self.output_of(
            "import tensorflow as tf\nprint('TensorFlow', tf.__version__)",
            f"TensorFlow {version}",
        )

    def shut_down_kernel(self) -> None:
        self.page.evaluate(SHUTDOWN_JS)

    def notification(self, text: str | re.Pattern[str]) -> Locator:
        return self.page.locator(".Toastify__toast").filter(has_text=text)


def kernel_containers(client: docker.DockerClient, owner: str, kernel_id: str) -> list[Any]:
    """This run's containers of one kernel, running or not."""
    return list(
        client.containers.list(
            all=True,
            filters={"label": [f"{LABEL_OWNER}={owner}", f"{LABEL_KERNEL_ID}={kernel_id}"]},
        )
    )


def container_exists(client: docker.DockerClient, container_id: str) -> bool:
    try:
        client.containers.get(container_id)
    except docker.errors.NotFound:
        return False
    return True
