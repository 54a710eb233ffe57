"""Docker Hub names rewritten for registry mirrors, and back.

A pull-through mirror such as ``docker.m.daocloud.io`` serves Docker Hub repositories under
their full path, so the mirror name must spell out what Docker abbreviates: the ``library/``
namespace of official images and an explicit tag (B19: a mirror cannot resolve "latest" for
you if the name has no tag). Digests are kept, so a pinned image stays pinned. Names of any
other registry are never rewritten: a mirror only stands in for Docker Hub.
"""

from __future__ import annotations

import re

from .imagename import ImageReference, check_image_reference

# Every spelling of Docker Hub's domain that Docker itself accepts in an image name.
HUB_DOMAINS = frozenset(
    {"", "docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)


def parse(image: str) -> ImageReference:
    """Validate ``image`` (ValueError with the fix) and return its parts."""
    reference = check_image_reference(image)
    assert reference is not None
    return reference


def is_docker_hub(reference: ImageReference) -> bool:
    return reference.domain in HUB_DOMAINS


def hub_path(reference: ImageReference) -> str:
    """The repository path on Docker Hub: "ubuntu" -> "library/ubuntu"."""
    return reference.path if "/" in reference.path else f"library/{reference.path}"


def _suffix(reference: ImageReference) -> str:
    suffix = f":{reference.tag or ('' if reference.digest else 'latest')}"
    if suffix == ":":
        suffix = ""
    if reference.digest:
        suffix += f"@{reference.digest}"
    return suffix


def canonical_name(image: str) -> str:
    """The name Docker shows locally: Hub domain dropped, ":latest" added when no tag/digest.

    "docker.io/library/ubuntu" -> "ubuntu:latest";
    "127.0.0.1:5000/x/tf" -> "127.0.0.1:5000/x/tf:latest".
    """
    reference = parse(image)
    if is_docker_hub(reference):
        path = reference.path
        if path.startswith("library/") and path.count("/") == 1:
            path = path.split("/", 1)[1]
        return path + _suffix(reference)
    return reference.repository + _suffix(reference)


def normalize_mirror(value: str) -> str:
    """Check a mirror setting and return it as "host[:port][/prefix]" (no scheme, no slash)."""
    text = value.strip()
    text = re.sub(r"^https?://", "", text).rstrip("/")
    example = "'docker.m.daocloud.io' or '127.0.0.1:5000'"
    if not text:
        raise ValueError(f"Empty mirror {value!r}. Write a registry host such as {example}.")
    try:
        reference = check_image_reference(f"{text}/library/probe:1")
    except ValueError as error:
        raise ValueError(
            f"Invalid mirror {value!r}: it is not a registry host. Write one such as {example}."
        ) from error
    host = text.split("/", 1)[0]
    if reference is None or not reference.domain or reference.domain != host:
        raise ValueError(
            f"Invalid mirror {value!r}: the first part must be a registry host with a dot or a "
            f"port, such as {example}."
        )
    return text


def mirrored_name(image: str, mirror: str) -> str | None:
    """The name of ``image`` on ``mirror``, or None when ``image`` is not a Docker Hub image.

    "tensorflow/tensorflow:2.15.0-gpu-jupyter" -> "MIRROR/tensorflow/tensorflow:2.15.0-gpu-jupyter";
    "ubuntu:22.04" -> "MIRROR/library/ubuntu:22.04".
    """
    reference = parse(image)
    if not is_docker_hub(reference):
        return None
    return f"{normalize_mirror(mirror)}/{hub_path(reference)}{_suffix(reference)}"


def pull_sources(image: str, mirrors: list[str], fallback: bool) -> list[str]:
    """Names to pull, in order: each mirror's name for a Hub image, then the origin.

    The origin is left out only when mirrors exist and ``fallback`` is off; with no mirror (or
    for an image of another registry) the origin is the only source.
    """
    origin = canonical_name(image)
    sources = [name for name in (mirrored_name(image, m) for m in mirrors) if name is not None]
    if not sources or fallback:
        sources.append(origin)
    return sources
