"""Kernelspecs that run in TensorFlow Docker images: naming, writing, listing, removing.

A tfenv kernelspec works two ways. Jupyter servers and clients that know provisioners read
``metadata.kernel_provisioner`` and use :class:`~jupyter_tfenv.provisioner.DockerProvisioner`.
Clients that ignore provisioners (``jupyter console``, VS Code, nbclient) run ``argv``, which
starts :mod:`jupyter_tfenv.launcher` with the same settings, so both behave the same.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

from .gpus import parse_gpus
from .imagename import check_image_reference

PROVISIONER_NAME = "tfenv-docker-provisioner"
_VERSION_IN_TAG = re.compile(r"(\d+\.\d+(?:\.\d+)?)")


@dataclass(frozen=True)
class TfenvKernelSpec:
    """One installed tfenv kernelspec, as ``jupyter tfenv list`` shows it."""

    name: str
    display_name: str
    image: str
    gpus: str
    resource_dir: str


def tensorflow_version_from_tag(image: str) -> str | None:
    """The version a TensorFlow tag names ("2.21.0" of "tensorflow/tensorflow:2.21.0-gpu")."""
    reference = check_image_reference(image)
    assert reference is not None
    match = _VERSION_IN_TAG.match(reference.tag)
    return match.group(1) if match else None


def display_name_for(image: str, tensorflow_version: str | None, gpus: Any) -> str:
    """'TensorFlow 2.21.0 (Docker GPU)', or 'Python (Docker CPU: image)' without TensorFlow."""
    device = "GPU" if parse_gpus(gpus).wants_gpu else "CPU"
    if tensorflow_version:
        return f"TensorFlow {tensorflow_version} (Docker {device})"
    return f"Python (Docker {device}: {image})"


def kernel_name_for(image: str, gpus: Any) -> str:
    """A kernelspec name derived from the image: 'tfenv-tensorflow-2.21.0-jupyter-gpu'."""
    reference = check_image_reference(image)
    assert reference is not None
    base = reference.path.rsplit("/", 1)[-1]
    tag = reference.tag or (reference.digest.split(":")[-1][:12] if reference.digest else "latest")
    device = "gpu" if parse_gpus(gpus).wants_gpu else "cpu"
    raw = f"tfenv-{base}-{tag}-{device}".lower()
    return re.sub(r"[^a-z0-9._-]+", "-", raw)


def build_kernel_json(
    image: str,
    display_name: str,
    gpus: Any = "none",
    resource_dir: str = "",
    extra_config: dict[str, Any] | None = None,
    tensorflow_version: str | None = None,
) -> dict[str, Any]:
    """The kernel.json of a tfenv kernelspec."""
    config: dict[str, Any] = {"image": image, "gpus": gpus}
    config.update(extra_config or {})
    return {
        "argv": [
            sys.executable,
            "-m",
            "jupyter_tfenv.launcher",
            "--kernelspec-dir",
            resource_dir,
            "{connection_file}",
        ],
        "display_name": display_name,
        "language": "python",
        "interrupt_mode": "signal",
        "env": {},
        "metadata": {
            "debugger": False,
            "kernel_provisioner": {"provisioner_name": PROVISIONER_NAME, "config": config},
            "tfenv": {
                "image": image,
                "tensorflow_version": tensorflow_version,
                "gpu": parse_gpus(gpus).wants_gpu,
            },
        },
    }


def install_kernelspec(
    image: str,
    gpus: Any = "none",
    name: str | None = None,
    display_name: str | None = None,
    tensorflow_version: str | None = None,
    user: bool = True,
    prefix: str | None = None,
    extra_config: dict[str, Any] | None = None,
    manager: KernelSpecManager | None = None,
) -> str:
    """Write a tfenv kernelspec and return the directory it was installed to."""
    check_image_reference(image)
    parse_gpus(gpus)
    if tensorflow_version is None:
        tensorflow_version = tensorflow_version_from_tag(image)
    name = name or kernel_name_for(image, gpus)
    if not re.fullmatch(r"[a-zA-Z0-9._-]+", name):
        raise ValueError(
            f"Invalid kernelspec name {name!r}: use letters, digits, '.', '_' and '-' only."
        )
    display_name = display_name or display_name_for(image, tensorflow_version, gpus)
    manager = manager or KernelSpecManager()
    with tempfile.TemporaryDirectory() as staging:
        # The final directory is known only after install; write argv with a placeholder first.
        kernel_json = build_kernel_json(
            image, display_name, gpus, "", extra_config, tensorflow_version
        )
        Path(staging, "kernel.json").write_text(json.dumps(kernel_json, indent=2))
        destination = manager.install_kernel_spec(
            staging, kernel_name=name, user=user, prefix=prefix
        )
    kernel_json["argv"][kernel_json["argv"].index("--kernelspec-dir") + 1] = destination
    Path(destination, "kernel.json").write_text(json.dumps(kernel_json, indent=2))
    return str(destination)


def is_tfenv_spec(spec_json: dict[str, Any]) -> bool:
    provisioner = spec_json.get("metadata", {}).get("kernel_provisioner", {})
    return bool(provisioner.get("provisioner_name") == PROVISIONER_NAME)


def list_kernelspecs(manager: KernelSpecManager | None = None) -> list[TfenvKernelSpec]:
    """Every installed kernelspec that runs in a tfenv container."""
    manager = manager or KernelSpecManager()
    found = []
    for name, resource_dir in sorted(manager.find_kernel_specs().items()):
        try:
            spec_json = json.loads(Path(resource_dir, "kernel.json").read_text())
        except (OSError, ValueError):
            continue
        if not is_tfenv_spec(spec_json):
            continue
        config = spec_json["metadata"]["kernel_provisioner"].get("config", {})
        found.append(
            TfenvKernelSpec(
                name=name,
                display_name=spec_json.get("display_name", name),
                image=str(config.get("image", "")),
                gpus=parse_gpus(config.get("gpus", "none")).describe(),
                resource_dir=resource_dir,
            )
        )
    return found


def uninstall_kernelspec(name: str, manager: KernelSpecManager | None = None) -> str:
    """Remove the tfenv kernelspec ``name``; refuse other kernelspecs. Returns its directory."""
    manager = manager or KernelSpecManager()
    names = {spec.name: spec for spec in list_kernelspecs(manager)}
    if name not in names:
        known = ", ".join(sorted(names)) or "none installed"
        raise NoSuchKernel(f"No tfenv kernelspec named {name!r}. Installed: {known}.")
    return str(manager.remove_kernel_spec(name))
