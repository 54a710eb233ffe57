"""Making an image kernel-ready: a thin derived image with ipykernel added.

The official ``tensorflow/tensorflow:X.Y.Z`` images hold Python and TensorFlow but no
ipykernel. ``prepare`` builds ``FROM <source image id>`` one layer that pip-installs ipykernel,
labelled with the source's id (and the package list), so it is built once per source image and
found again by label, whatever it is called. The build uses the host's network and CA bundle,
so a package index behind a TLS-inspecting proxy works as it does on the host.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors

from . import engine
from .errors import TfenvError
from .images import LABEL_PREPARED_FROM
from .kernel_image import get_local_image, probe_image
from .mirrors import parse

log = logging.getLogger("jupyter_tfenv")

LABEL_PREPARED_PACKAGES = f"{engine.LABEL_PREFIX}.prepared-packages"
CONTAINER_CA_BUNDLE = "/etc/jupyter-tfenv-ca.pem"

Reporter = Callable[[dict[str, Any]], None]


class PrepareError(TfenvError):
    """The derived image could not be built; the message says why and what to do."""


@dataclass
class PrepareResult:
    """The kernel-ready image, and how it came about."""

    image: str
    id: str
    source: str
    source_id: str
    # "built", "reused" (an earlier prepare of the same source) or "ready" (nothing to do).
    outcome: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "id": self.id,
            "source": self.source,
            "source_id": self.source_id,
            "outcome": self.outcome,
        }


def prepared_name(source: str, suffix: str = "-tfenv") -> str:
    """The prepared image's name: "tensorflow/tensorflow:2.21.0" -> "...:2.21.0-tfenv"."""
    reference = parse(source)
    if reference.tag:
        tag = reference.tag
    elif reference.digest:
        tag = "sha-" + reference.digest.split(":", 1)[-1][:12]
    else:
        tag = "latest"
    return f"{reference.repository}:{tag[: 128 - len(suffix)]}{suffix}"


def _packages_label(packages: list[str]) -> str:
    return " ".join(sorted(packages))


def check_packages(packages: list[str]) -> list[str]:
    """Refuse package entries that pip would read as options (they belong in pip options)."""
    for package in packages:
        if not package.strip() or package.strip().startswith("-"):
            raise PrepareError(
                f"Invalid package {package!r} in TfenvImages.prepare_packages: give pip "
                "requirements such as 'ipykernel' or 'ipywidgets>=8'; options belong in "
                "TfenvImages.prepare_pip_options."
            )
    return [package.strip() for package in packages]


def find_prepared(client: docker.DockerClient, source_id: str, packages: list[str]) -> Any:
    """Blocking: an earlier prepared image of ``source_id`` with the same packages, or None."""
    candidates = client.images.list(filters={"label": f"{LABEL_PREPARED_FROM}={source_id}"})
    wanted = _packages_label(packages)
    for image in candidates:
        if (image.labels or {}).get(LABEL_PREPARED_PACKAGES) == wanted:
            return image
    return None


def dockerfile(
    source_id: str,
    user: str,
    packages: list[str],
    pip_options: list[str],
    with_ca: bool,
    python: str = "python3",
) -> str:
    """The Dockerfile of the derived image (exec-form RUN: nothing passes through a shell)."""
    env = [
        "PIP_BREAK_SYSTEM_PACKAGES=1",
        "PIP_NO_CACHE_DIR=1",
        "PIP_DISABLE_PIP_VERSION_CHECK=1",
        "PIP_ROOT_USER_ACTION=ignore",
    ]
    lines = [f"FROM {source_id}", "USER root"]
    if with_ca:
        lines.append(f"COPY ca.pem {CONTAINER_CA_BUNDLE}")
        env.append(f"PIP_CERT={CONTAINER_CA_BUNDLE}")
    command = ["env", *env, python, "-m", "pip", "install", *pip_options, *packages]
    lines.append(f"RUN {json.dumps(command)}")
    if user:
        # Give the image back its own user, so kernels run as before.
        lines.append(f"USER {user}")
    return "\n".join(lines) + "\n"


def _context(dockerfile_text: str, ca_bundle: str) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = dockerfile_text.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        if ca_bundle:
            tar.add(ca_bundle, arcname="ca.pem")
    buffer.seek(0)
    return buffer


def explain_build_failure(source: str, output: list[str], error: str) -> str:
    """A sentence for a failed build, from pip's and the engine's last words."""
    text = "\n".join(output[-30:]) + "\n" + error
    lowered = text.lower()
    tail = " | ".join(line.strip() for line in output[-4:] if line.strip()) or error
    if "no module named pip" in lowered:
        return (
            f"Cannot prepare {source}: its Python has no pip. Use an image with pip (the official "
            "TensorFlow images have it), or its '-jupyter' tag, which already has a kernel."
        )
    network_signs = (
        "could not find a version",
        "connection",
        "temporary failure in name resolution",
        "certificate verify failed",
        "network is unreachable",
        "read timed out",
    )
    if any(sign in lowered for sign in network_signs):
        return (
            f"Cannot prepare {source}: pip could not install from the package index ({tail}). "
            "Check that this machine reaches it, set TfenvImages.prepare_pip_options (e.g. "
            "['--index-url', 'https://your-mirror/simple']) or TfenvImages.prepare_ca_bundle."
        )
    if "no space left on device" in lowered:
        return (
            f"Cannot prepare {source}: the Docker engine's disk is full. Free space (`docker "
            "image prune`) and try again."
        )
    return f"Cannot prepare {source}: the build failed: {tail}"


def prepare_image(
    client: docker.DockerClient,
    source: str,
    *,
    packages: list[str] | None = None,
    pip_options: list[str] | None = None,
    suffix: str = "-tfenv",
    network: str = "host",
    ca_bundle: str = "",
    owner: str = "",
    report: Reporter | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> PrepareResult:
    """Blocking: return a kernel-ready image for ``source``, building it when needed."""
    packages = check_packages(packages if packages is not None else ["ipykernel"])
    local = get_local_image(client, source)
    facts = probe_image(client, source, owner=owner)
    if facts.kernel_ready:
        return PrepareResult(source, local.id, source, local.id, "ready")

    name = prepared_name(source, suffix)
    target = parse(name)
    earlier = find_prepared(client, local.id, packages)
    if earlier is not None:
        if name not in (earlier.tags or []):
            earlier.tag(target.repository, target.tag)
        log.info("Reusing %s, prepared earlier from %s", name, source)
        return PrepareResult(name, earlier.id, source, local.id, "reused")

    if ca_bundle and not os.path.isfile(ca_bundle):
        raise PrepareError(
            f"The CA bundle {ca_bundle!r} (TfenvImages.prepare_ca_bundle) does not exist. Point "
            "it at the host's bundle, e.g. /etc/ssl/certs/ca-certificates.crt, or set it to ''."
        )
    user = str((local.attrs.get("Config") or {}).get("User") or "")
    text = dockerfile(local.id, user, packages, list(pip_options or []), bool(ca_bundle))
    labels = {
        engine.LABEL_MANAGED: "true",
        engine.LABEL_OWNER: owner or engine.DEFAULT_OWNER,
        engine.LABEL_ROLE: "prepared",
        LABEL_PREPARED_FROM: local.id,
        LABEL_PREPARED_PACKAGES: _packages_label(packages),
    }
    log.info("Preparing %s from %s: installing %s", name, source, " ".join(packages))
    if report is not None:
        report({"status": f"Building {name} from {source}: pip install {' '.join(packages)}"})
    output: list[str] = []
    image_id = ""
    try:
        stream = client.api.build(
            fileobj=_context(text, ca_bundle),
            custom_context=True,
            tag=name,
            labels=labels,
            network_mode=network,
            rm=True,
            forcerm=True,
            pull=False,
            decode=True,
        )
        for event in stream:
            if cancelled is not None and cancelled():
                raise PrepareError(f"Preparing {source} was cancelled.")
            if event.get("error") or event.get("errorDetail"):
                detail = event.get("errorDetail") or {}
                message = str(detail.get("message") or event.get("error"))
                raise PrepareError(explain_build_failure(source, output, message))
            aux = event.get("aux") or {}
            if isinstance(aux, dict) and aux.get("ID"):
                image_id = str(aux["ID"])
            for line in str(event.get("stream") or "").splitlines():
                line = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", line).rstrip()
                if line:
                    output.append(line)
                    if report is not None:
                        report({"status": line})
    except docker.errors.APIError as error:
        message = str(getattr(error, "explanation", None) or error)
        raise PrepareError(explain_build_failure(source, output, message)) from error
    if not image_id:
        image_id = str(client.api.inspect_image(name)["Id"])
    log.info("Prepared %s (%s) from %s", name, image_id[7:19], source)
    return PrepareResult(name, image_id, source, local.id, "built")
