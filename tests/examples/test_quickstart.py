"""The demo's notebook runner executes the TensorFlow quickstart through a real Jupyter server.

This is ``make demo`` on one notebook: a kernelspec for the TensorFlow -jupyter image, a real
``jupyter server`` subprocess, the notebook run over REST and websocket, the kernel in a
container. The model must learn (accuracy well above chance) and the plot must come back as a
PNG output, saved into the notebook and written next to it by the kernel.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import docker
import docker.errors
import pytest

from jupyter_tfenv.engine import LABEL_OWNER

REPO_ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = REPO_ROOT / "examples" / "tensorflow_quickstart.ipynb"

pytestmark = [pytest.mark.engine]


def load_demo() -> ModuleType:
    # scripts/ is not a package: load the demo script by path, as the Makefile runs it.
    path = REPO_ROOT / "scripts" / "demo.py"
    spec = importlib.util.spec_from_file_location("tfenv_demo", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def demo_owner(tfenv_run_label: str, docker_client: docker.DockerClient) -> Iterator[str]:
    """An owner value of this test alone, so the demo's own sweep touches nothing else."""
    owner = f"{tfenv_run_label}-examples"
    yield owner
    label = {"label": f"{LABEL_OWNER}={owner}"}
    for item in docker_client.api.containers(all=True, filters=label):
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.api.remove_container(item["Id"], force=True)
    # A HOME volume this test created (an existing one is reused and keeps its owner).
    for volume in (docker_client.api.volumes(filters=label) or {}).get("Volumes") or []:
        with contextlib.suppress(docker.errors.APIError):
            docker_client.api.remove_volume(volume["Name"])


def png_outputs(notebook: dict[str, Any]) -> list[bytes]:
    return [
        base64.b64decode(output["data"]["image/png"])
        for cell in notebook["cells"]
        if cell["cell_type"] == "code"
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]


@pytest.mark.asyncio
@pytest.mark.timeout(600)
async def test_quickstart_trains_evaluates_and_plots_in_a_container(
    tf_jupyter_image: str, tf_version: str, demo_owner: str, tmp_path: Path
) -> None:
    demo = load_demo()
    lines: list[str] = []
    work = tmp_path / "demo"

    report = await demo.run_demo(
        tf_jupyter_image, [QUICKSTART], work, demo_owner, timeout=300, out=lines.append
    )

    printed = "\n".join(lines)
    assert report.ok, printed[-4000:]
    (result,) = report.notebooks
    # The kernel's own view: it ran in the image and imported that image's TensorFlow.
    assert result.image == tf_jupyter_image
    assert result.tensorflow == tf_version
    found = re.search(r"test accuracy (\d\.\d+)", result.stdout)
    assert found, result.stdout
    assert float(found.group(1)) > 0.8

    executed_pngs = png_outputs(result.executed)
    saved = json.loads((work / "notebooks" / QUICKSTART.name).read_text())
    saved_pngs = png_outputs(saved)
    assert executed_pngs and saved_pngs == executed_pngs
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in executed_pngs)
    assert "[image/png" in printed and len(result.images_saved) == len(executed_pngs)
    # Written by the kernel inside the container into the mounted notebook folder.
    assert "quickstart.png" in result.files_written
    assert (work / "notebooks" / "quickstart.png").read_bytes().startswith(b"\x89PNG")
    assert report.leftovers == []
