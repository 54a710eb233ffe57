"""The notebook switcher, in Chromium: shows the environment, lists versions, switches.

Case B25 (ipywidgets#3647): an image whose ipywidgets major version differs from JupyterLab's
still gets a working switcher, and a message saying what breaks and how to fix it.
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from jupyter_tfenv.testing import ServerProcess

from .lab import Lab, container_exists, kernel_containers

pytestmark = pytest.mark.browser

SWITCH_TIMEOUT_MS = 180_000


def test_widget_switches_tensorflow_version(
    lab_server: ServerProcess,
    page: Any,
    docker_client: Any,
    tfenv_run_label: str,
    tf_version: str,
    tf_alt_version: str,
    tf_jupyter_image: str,
    tf_alt_jupyter_image: str,
    tag_registry: str,
    screenshot: Any,
) -> None:
    lab = Lab(page, lab_server)
    lab.open("widget")
    kernel_id = lab.start_notebook(f"TensorFlow {tf_version} (Docker CPU)")
    [before] = kernel_containers(docker_client, tfenv_run_label, kernel_id)
    lab.tensorflow_version_shown(tf_version)

    cell = lab.run_cell("import jupyter_tfenv\njupyter_tfenv.switcher()")
    switcher = cell.locator(".jp-tfenv-switcher")
    current = switcher.locator(".jp-tfenv-current")
    expect(current).to_have_text(
        f"Running TensorFlow {tf_version} · CPU · tensorflow:{tf_version}-jupyter"
    )
    versions = switcher.locator("select.jp-tfenv-version")
    # Local images by name, registry tags marked as pulls.
    expect(versions.locator(f'option[value="{tf_alt_jupyter_image}"]')).to_have_text(
        f"TensorFlow {tf_alt_version} · tensorflow:{tf_alt_version}-jupyter"
    )
    expect(versions.locator(f'option[value="{tag_registry}:2.19.0-jupyter"]')).to_have_text(
        f"TensorFlow 2.19.0 · {tag_registry}:2.19.0-jupyter, to pull"
    )
    expect(versions).to_have_value(tf_jupyter_image)
    expect(switcher.locator("select.jp-tfenv-device")).to_have_value("none")
    button = switcher.locator("button.jp-tfenv-switch")
    expect(button).to_be_disabled()  # nothing chosen yet that differs
    screenshot(cell, "widget")

    versions.select_option(tf_alt_jupyter_image)
    expect(button).to_be_enabled()
    button.click()
    expect(switcher.locator(".jp-tfenv-message")).not_to_be_empty()
    screenshot(cell, "widget-switching")

    expect(current).to_have_text(
        f"Running TensorFlow {tf_alt_version} · CPU · tensorflow:{tf_alt_version}-jupyter",
        timeout=SWITCH_TIMEOUT_MS,
    )
    expect(switcher.locator(".jp-tfenv-message")).to_have_text(
        "Switched. The kernel restarted: run your cells again."
    )
    expect(switcher.locator(".jp-tfenv-progress")).to_be_hidden()
    expect(page.locator(".jp-tfenv-status")).to_have_text(
        f"TensorFlow {tf_alt_version} · CPU · tensorflow:{tf_alt_version}-jupyter"
    )
    screenshot(cell, "widget-switched")

    # The same kernel, now in a new container from the other image; the old one is gone.
    lab.wait_until_kernel_ready()
    lab.tensorflow_version_shown(tf_alt_version)
    [after] = kernel_containers(docker_client, tfenv_run_label, kernel_id)
    assert after.id != before.id
    assert after.image.tags == [tf_alt_jupyter_image]
    assert not container_exists(docker_client, before.id)

    lab.shut_down_kernel()
    page.wait_for_timeout(500)
    assert kernel_containers(docker_client, tfenv_run_label, kernel_id) == []


def test_switcher_works_in_an_image_with_ipywidgets_7_and_no_network(
    lab_server: ServerProcess,
    page: Any,
    docker_client: Any,
    tfenv_run_label: str,
    ipywidgets7_image: str,
    screenshot: Any,
) -> None:
    lab = Lab(page, lab_server)
    lab.open("ipywidgets7")
    kernel_id = lab.start_notebook(f"Python (Docker CPU: {ipywidgets7_image})")
    [container] = kernel_containers(docker_client, tfenv_run_label, kernel_id)
    assert container.attrs["HostConfig"]["NetworkMode"] == "none"

    # What breaks: ipywidgets 7's own widgets do not render in JupyterLab's widgets 8.
    slider = lab.run_cell("import ipywidgets\nipywidgets.IntSlider(value=3)")
    expect(slider.locator(".jp-OutputArea-output").first).to_contain_text(
        "Click to show javascript error.", timeout=30_000
    )

    cell = lab.run_cell("%tfenv")
    warning = cell.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
    expect(warning).to_contain_text("This image has ipywidgets 7.8.5")
    expect(warning).to_contain_text("pip install 'ipywidgets>=8'")
    switcher = cell.locator(".jp-tfenv-switcher")
    expect(switcher.locator(".jp-tfenv-current")).to_have_text(
        f"Running Python without TensorFlow · CPU · {ipywidgets7_image.rsplit('/', 1)[-1]}"
    )
    expect(switcher.locator(".jp-tfenv-message")).to_contain_text(
        "This image has ipywidgets 7.8.5: its other widgets won't render here."
    )
    expect(switcher.locator("select.jp-tfenv-version option").first).to_be_attached()
    screenshot(cell, "widget-ipywidgets7")

    lab.shut_down_kernel()
    page.wait_for_timeout(500)
    assert kernel_containers(docker_client, tfenv_run_label, kernel_id) == []
