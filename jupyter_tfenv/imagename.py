"""Image references: validation with a useful message, and splitting into their parts.

The grammar is Docker's (distribution/reference): ``[registry[:port]/]path[:tag][@digest]``,
path components lower-case. Names are never passed through a shell, but we still refuse
option-like and shell-like input at the edge, so a typo is reported instead of misread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(
    rf"^(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$"
)
MAX_LENGTH = 255
_EXAMPLE = "'tensorflow/tensorflow:2.21.0' or '127.0.0.1:5000/team/tf:2.21.0-gpu'"


@dataclass(frozen=True)
class ImageReference:
    """A parsed image reference; ``domain`` is "" for Docker Hub names."""

    domain: str
    path: str
    tag: str
    digest: str

    @property
    def repository(self) -> str:
        return f"{self.domain}/{self.path}" if self.domain else self.path


def _looks_like_domain(first: str) -> bool:
    return "." in first or ":" in first or first == "localhost" or first.startswith("[")


def _shown(value: str) -> str:
    """The value as an error message quotes it: cut short, so a huge input is not echoed whole."""
    return repr(value) if len(value) <= 80 else repr(value[:60]) + f"... ({len(value)} characters)"


def check_image_reference(value: str, allow_empty: bool = False) -> ImageReference | None:
    """Parse ``value``; raise ValueError naming it and showing valid examples."""
    if len(value) > MAX_LENGTH:
        raise ValueError(
            f"Invalid image name {_shown(value)}: image names have at most {MAX_LENGTH} "
            f"characters. Write one such as {_EXAMPLE}."
        )
    if not value:
        if allow_empty:
            return None
        raise ValueError(f"Empty image name. Write one such as {_EXAMPLE}.")
    if value.startswith("-"):
        raise ValueError(
            f"Invalid image name {_shown(value)}: it looks like a command-line option. "
            f"Write an image name such as {_EXAMPLE}."
        )
    bad = sorted(set(re.findall(r"[^A-Za-z0-9._:/@\-\[\]]", value)))
    if bad:
        characters = " ".join(repr(c) for c in bad)
        raise ValueError(
            f"Invalid image name {_shown(value)}: the character(s) {characters} cannot appear "
            f"in an image name. Write one such as {_EXAMPLE}."
        )
    match = _REFERENCE.match(value)
    if match is None:
        hint = " Repository names must be lower-case." if value != value.lower() else ""
        raise ValueError(f"Invalid image name {_shown(value)}.{hint} Write one such as {_EXAMPLE}.")
    domain = match.group("domain") or ""
    path = match.group("path")
    if domain and not _looks_like_domain(domain):
        # "team/tf" is a Docker Hub path, not a registry called "team".
        path = f"{domain}/{path}"
        domain = ""
        if not re.fullmatch(rf"{_COMPONENT}(?:/{_COMPONENT})*", path):
            raise ValueError(
                f"Invalid image name {_shown(value)}. Repository names must be lower-case. "
                f"Write one such as {_EXAMPLE}."
            )
    return ImageReference(domain, path, match.group("tag") or "", match.group("digest") or "")
