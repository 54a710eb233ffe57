"""The status bar item and the TensorFlow menu, in Chromium: show and switch the environment."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from playwright.sync_api import expect

from jupyter_tfenv.testing import ServerProcess

from .lab import Lab, container_exists, kernel_containers

pytestmark = pytest.mark.browser

SWITCH_TIMEOUT_MS = 180_000
# Parts of the 1280x760 window: the menu bar with an open menu; the toasts and the status bar.
TOP_LEFT = {"x": 0, "y": 0, "width": 720, "height": 130}
BOTTOM = {"x": 0, "y": 620, "width": 1280, "height": 140}


def test_menu_switches_version_and_status_bar_follows(
    lab_server: ServerProcess,
    page: Any,
    docker_client: Any,
    tfenv_run_label: str,
    tf_version: str,
    tf_alt_version: str,
    tf_alt_jupyter_image: str,
    screenshot: Any,
) -> None:
    lab = Lab(page, lab_server)
    lab.open("menu")
    kernel_id = lab.start_notebook(f"TensorFlow {tf_version} (Docker CPU)")
    [before] = kernel_containers(docker_client, tfenv_run_label, kernel_id)
    status = page.locator(".jp-tfenv-status")
    expect(status).to_have_text(f"TensorFlow {tf_version} · CPU · tensorflow:{tf_version}-jupyter")
    lab.tensorflow_version_shown(tf_version)
    # Front end and server extension are the same release: no warning.
    expect(lab.notification("jupyter-tfenv")).to_have_count(0)
    screenshot(page.locator("#jp-main-statusbar"), "statusbar")

    page.locator(".lm-MenuBar-item", has_text="TensorFlow").click()
    menu = page.locator(".lm-Menu").last
    expect(menu.locator('.lm-Menu-item[data-type="command"] .lm-Menu-itemLabel')).to_have_text(
        ["Switch TensorFlow Version…", "Run on CPU", "Run on GPU"]
    )
    screenshot(page, "menu", clip=TOP_LEFT)
    menu.locator(".lm-Menu-item", has_text="Switch TensorFlow Version…").click()

    dialog = page.locator(".jp-Dialog-content")
    versions = dialog.locator("select.jp-tfenv-version")
    expect(versions.locator(f'option[value="{tf_alt_jupyter_image}"]')).to_be_attached()
    versions.select_option(tf_alt_jupyter_image)
    screenshot(dialog, "switch-dialog")
    dialog.locator("button.jp-mod-accept").click()

    done = lab.notification(f"The kernel now runs TensorFlow {tf_alt_version} · CPU")
    expect(done).to_be_visible(timeout=SWITCH_TIMEOUT_MS)
    expect(status).to_have_text(
        f"TensorFlow {tf_alt_version} · CPU · tensorflow:{tf_alt_version}-jupyter"
    )
    screenshot(page, "menu-switched", clip=BOTTOM)

    lab.wait_until_kernel_ready()
    lab.tensorflow_version_shown(tf_alt_version)
    [after] = kernel_containers(docker_client, tfenv_run_label, kernel_id)
    assert after.image.tags == [tf_alt_jupyter_image]
    assert not container_exists(docker_client, before.id)

    # A device the engine cannot serve: the error is a notification, the kernel stays as it was.
    if "nvidia" not in (docker_client.info().get("Runtimes") or {}):
        # Close the success notice so the error stands alone; it may close itself first.
        with contextlib.suppress(PlaywrightTimeoutError):
            done.get_by_role("button", name="Hide notification").click(timeout=2_000)
        expect(done).to_be_hidden(timeout=15_000)
        page.locator(".lm-MenuBar-item", has_text="TensorFlow").click()
        page.locator(".lm-Menu-item", has_text="Run on GPU").click()
        failure = lab.notification(
            f"Switching to tensorflow:{tf_alt_version}-jupyter failed; the kernel is unchanged."
        )
        expect(failure).to_be_visible(timeout=SWITCH_TIMEOUT_MS)
        screenshot(page, "menu-gpu-error", clip=BOTTOM)
        failure.get_by_role("button", name="Details").click()
        details = page.locator(".jp-Dialog-content")
        expect(details).to_contain_text("NVIDIA container toolkit")
        screenshot(details, "menu-gpu-error-details")
        details.locator("button.jp-mod-accept").click()
        expect(status).to_have_text(
            f"TensorFlow {tf_alt_version} · CPU · tensorflow:{tf_alt_version}-jupyter"
        )
        assert [c.id for c in kernel_containers(docker_client, tfenv_run_label, kernel_id)] == [
            after.id
        ]

    lab.shut_down_kernel()
    page.wait_for_timeout(500)
    assert kernel_containers(docker_client, tfenv_run_label, kernel_id) == []


def test_version_mismatch_is_announced(lab_server: ServerProcess, page: Any) -> None:
    # A server extension from another release, as after upgrading without restarting Jupyter.
    page.route(
        "**/tfenv/api/version*",
        lambda route: route.fulfill(json={"version": "0.0.9"}),
    )
    lab = Lab(page, lab_server)
    lab.open("mismatch")

    warning = lab.notification("the JupyterLab extension is version")
    expect(warning).to_be_visible(timeout=30_000)
    expect(warning).to_contain_text("but the server extension is 0.0.9")
