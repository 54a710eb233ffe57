"""What an image holds that matters for a kernel: Python, ipykernel, TensorFlow, ipywidgets.

An image is probed once per image id with a short container that only reads package metadata
(no TensorFlow import, so it takes well under a second), and the answer is cached in memory and
in the Jupyter runtime directory. A kernel start then fails at once, with the fix, on an image
that has no Python or no ipykernel, instead of timing out.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
from jupyter_core.paths import jupyter_runtime_dir

from .engine import LABEL_ROLE, owner_labels, remove_container
from .errors import (
    ImageNotFoundError,
    ImageNotKernelReadyError,
    ImageWithoutPythonError,
    KernelContainerError,
)

PROBE_SCRIPT = """
import json, sys
from importlib import metadata
def version(*names):
    for name in names:
        try:
            return metadata.version(name)
        except Exception:
            pass
    return None
print(json.dumps({
    "python": "%d.%d.%d" % sys.version_info[:3],
    "tensorflow": version("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tf-nightly"),
    "ipykernel": version("ipykernel"),
    "ipywidgets": version("ipywidgets"),
}))
"""

_cache: dict[str, ImageFacts] = {}
_cache_lock = threading.Lock()


@dataclass(frozen=True)
class ImageFacts:
    """Versions found in an image; None where the package is missing."""

    image_id: str
    python: str | None
    tensorflow: str | None
    ipykernel: str | None
    ipywidgets: str | None
    # The image's own PYTHONPATH, kept when ours is appended to it.
    pythonpath: str = ""

    @property
    def kernel_ready(self) -> bool:
        return self.python is not None and self.ipykernel is not None


def _cache_file() -> Path:
    return Path(jupyter_runtime_dir()) / "tfenv-image-facts.json"


def _load_disk_cache() -> dict[str, Any]:
    try:
        data = json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _store_disk_cache(key: str, facts: ImageFacts) -> None:
    path = _cache_file()
    data = _load_disk_cache()
    data[key] = asdict(facts)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)
    except OSError:
        # The cache only saves a probe next time; a read-only runtime dir is no error.
        pass


def get_local_image(client: docker.DockerClient, image: str) -> Any:
    """Return the local image, or raise ImageNotFoundError with the command that gets it."""
    try:
        return client.images.get(image)
    except docker.errors.ImageNotFound as error:
        raise ImageNotFoundError(
            f"Image {image!r} is not on this Docker engine. Pull it first "
            f"(`jupyter tfenv pull {image}` or `docker pull {image}`), or pick an image from "
            "`jupyter tfenv images`."
        ) from error
    except docker.errors.APIError as error:
        if error.status_code == 400 or "invalid reference format" in str(error):
            raise ImageNotFoundError(
                f"{image!r} is not a valid image name. Write it as Docker does, for example "
                "'tensorflow/tensorflow:2.21.0' or 'registry.example:5000/team/tf:latest'."
            ) from error
        raise


def probe_image(
    client: docker.DockerClient,
    image: str,
    python: str = "python3",
    owner: str = "",
) -> ImageFacts:
    """Return the facts of ``image``, probing it with a throwaway container if not cached."""
    local = get_local_image(client, image)
    key = local.id if python == "python3" else f"{local.id}|{python}"
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    on_disk = _load_disk_cache().get(key)
    if isinstance(on_disk, dict):
        try:
            facts = ImageFacts(**on_disk)
        except TypeError:
            pass  # written by another version of this package: probe again
        else:
            with _cache_lock:
                _cache[key] = facts
            return facts

    labels = owner_labels(owner)
    labels[LABEL_ROLE] = "probe"
    container = client.containers.create(
        local.id,
        command=[python, "-c", PROBE_SCRIPT],
        entrypoint=[],
        labels=labels,
        network_disabled=True,
        security_opt=["no-new-privileges"],
    )
    try:
        try:
            container.start()
        except docker.errors.APIError as error:
            if "executable file not found" in str(error) or "no such file" in str(error):
                raise ImageWithoutPythonError(
                    f"Image {image!r} has no {python!r} on its PATH, so no Python kernel can run "
                    "in it. Pick a TensorFlow image (e.g. 'tensorflow/tensorflow:2.21.0'), or "
                    "set the kernel's python_executable to the interpreter the image has."
                ) from error
            raise KernelContainerError(f"Could not probe image {image!r}: {error}") from error
        result = container.wait(timeout=60)
        output = container.logs(stdout=True, stderr=False).decode(errors="replace").strip()
        if result.get("StatusCode") != 0:
            errors = container.logs(stdout=False, stderr=True).decode(errors="replace")
            raise ImageWithoutPythonError(
                f"Image {image!r}: {python!r} failed to run (exit {result.get('StatusCode')}): "
                f"{errors.strip()[-500:]}. Pick an image with Python 3."
            )
    finally:
        remove_container(container)

    try:
        found = json.loads(output.splitlines()[-1])
    except (ValueError, IndexError) as error:
        raise KernelContainerError(
            f"Could not read the Python packages of image {image!r}: {output[-300:]!r}"
        ) from error
    facts = ImageFacts(
        image_id=local.id,
        python=found.get("python"),
        tensorflow=found.get("tensorflow"),
        ipykernel=found.get("ipykernel"),
        ipywidgets=found.get("ipywidgets"),
        pythonpath=_env_value(local.attrs.get("Config", {}).get("Env") or [], "PYTHONPATH"),
    )
    with _cache_lock:
        _cache[key] = facts
    _store_disk_cache(key, facts)
    return facts


def _env_value(env: list[str], name: str) -> str:
    for entry in env:
        key, _, value = entry.partition("=")
        if key == name:
            return value
    return ""


def require_kernel_ready(facts: ImageFacts, image: str) -> None:
    """Raise the error that tells the user how to make ``image`` able to run a kernel."""
    if facts.ipykernel is None:
        raise ImageNotKernelReadyError(
            f"Image {image!r} has Python {facts.python} but no ipykernel, so no kernel can start "
            f"in it. Make it kernel-ready with `jupyter tfenv prepare {image}` (builds a thin "
            "image with ipykernel added), or use the image's '-jupyter' tag."
        )
