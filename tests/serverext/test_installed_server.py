"""A plain `jupyter server`, configured only by what the package installs, serves the API and
offers local TensorFlow images as kernels (nothing enabled by hand)."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

from jupyter_tfenv.testing import ServerProcess

from .conftest import ImageKit


def get(server: ServerProcess, path: str) -> Any:
    request = urllib.request.Request(
        f"{server.url}{path}", headers={"Authorization": f"token {server.token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def test_installed_package_enables_the_extension(
    tmp_path: Path, made_images: ImageKit, kernel_image: str, ns: str, tfenv_run_label: str
) -> None:
    ref = made_images.tag(kernel_image, f"{ns}/tensorflow:2.99.13")
    root = tmp_path / "root"
    root.mkdir()
    server = ServerProcess(
        root, tmp_path / "home", extra_env={"TFENV_OWNER_LABEL": tfenv_run_label}
    )
    with server:
        from jupyter_tfenv import __version__

        assert get(server, "tfenv/api/version") == {"version": __version__}
        deadline = time.monotonic() + 30
        specs: dict[str, Any] = {}
        while time.monotonic() < deadline:
            specs = get(server, "api/kernelspecs")["kernelspecs"]
            if "tfenv-tensorflow-2.99.13-cpu" in specs:
                break
            time.sleep(0.3)
        spec = specs["tfenv-tensorflow-2.99.13-cpu"]["spec"]
        assert spec["display_name"] == "TensorFlow 2.99.13 (Docker CPU)"
        assert spec["metadata"]["kernel_provisioner"]["config"]["image"] == ref
    assert "Traceback" not in server.log()
