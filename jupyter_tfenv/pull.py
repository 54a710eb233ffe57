"""Pulling images through the engine: mirrors, progress, a stall timeout, and real causes.

The engine does the pull; we stream its progress messages, fold them into bytes and layers
(:class:`PullProgress`), and turn its error texts into sentences that say what to do. A pull
that sends nothing for ``stall_timeout`` seconds is given up: the connection to the engine is
closed, which cancels the pull there too.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.auth
import docker.errors
import requests

from .errors import TfenvError
from .mirrors import canonical_name, parse, pull_sources

log = logging.getLogger("jupyter_tfenv")

Reporter = Callable[[dict[str, Any]], None]
_LAYER_ID = re.compile(r"^[0-9a-f]{12,64}$")
_DOWNLOADED = ("Verifying Checksum", "Download complete", "Extracting", "Pull complete")


class PullError(TfenvError):
    """A pull failed; the message names the cause and the fix."""


class PullStalledError(PullError):
    """A pull made no progress for the stall timeout."""


@dataclass
class PullResult:
    """What a pull left on the engine."""

    image: str
    id: str
    digest: str | None
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.image, "id": self.id, "digest": self.digest, "source": self.source}


@dataclass
class PullProgress:
    """Layer states and byte counts folded from the engine's progress messages."""

    layers: dict[str, dict[str, Any]] = field(default_factory=dict)
    message: str = ""
    digest: str | None = None

    def apply(self, event: dict[str, Any]) -> None:
        status = str(event.get("status") or "")
        layer = event.get("id")
        detail = event.get("progressDetail") or {}
        # Layer messages carry the layer's short id; others carry the tag (or nothing).
        if layer and status and _LAYER_ID.match(str(layer)):
            entry = self.layers.setdefault(str(layer), {"status": "", "current": 0, "total": 0})
            entry["status"] = status
            if status == "Downloading" and detail.get("total"):
                entry["current"] = int(detail.get("current") or 0)
                entry["total"] = int(detail["total"])
            elif status in _DOWNLOADED:
                # Once downloaded, a layer's bytes are all done, whatever extraction reports.
                entry["current"] = entry["total"]
        elif status:
            self.message = status
            if status.startswith("Digest: "):
                self.digest = status.split(" ", 1)[1].strip()

    @property
    def bytes_total(self) -> int:
        return sum(int(entry["total"]) for entry in self.layers.values())

    @property
    def bytes_done(self) -> int:
        return sum(int(entry["current"]) for entry in self.layers.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "bytes_done": self.bytes_done,
            "bytes_total": self.bytes_total,
            "layers": {key: dict(value) for key, value in self.layers.items()},
        }


def explain_pull_failure(name: str, text: str) -> str:
    """A sentence for a failed pull of ``name``, from the engine's error text."""
    reference = parse(name)
    host = reference.domain or "Docker Hub"
    lowered = text.lower()
    if "manifest unknown" in lowered or ("manifest for" in lowered and "not found" in lowered):
        return (
            f"{name}: the tag {reference.tag or reference.digest or 'latest'!r} does not exist in "
            f"{reference.repository} on {host}. Pick one of the tags `jupyter tfenv images` "
            "lists, or check the spelling."
        )
    if "no space left on device" in lowered:
        return (
            f"{name}: the Docker engine's disk is full (no space left on device). Free space with "
            "`docker image prune` or `docker system df` to see what uses it, then pull again."
        )
    if (
        "pull access denied" in lowered
        or "unauthorized" in lowered
        or "authentication required" in lowered
        or "denied:" in lowered
    ):
        login = f"docker login {reference.domain}" if reference.domain else "docker login"
        return (
            f"{name}: {host} refused access ({_short(text)}). The repository may not exist or be "
            f"private: check the name, or log the engine in with `{login}`."
        )
    if "repository" in lowered and ("not found" in lowered or "name unknown" in lowered):
        return (
            f"{name}: the repository {reference.repository} does not exist on {host}. Check the "
            "name."
        )
    network_signs = (
        "connection refused",
        "dial tcp",
        "no such host",
        "i/o timeout",
        "tls handshake timeout",
        "network is unreachable",
        "connection reset",
        "eof",
        "client.timeout",
        "server misbehaving",
        "temporary failure in name resolution",
    )
    if any(sign in lowered for sign in network_signs):
        return (
            f"{name}: the registry {host} cannot be reached ({_short(text)}). Check the network "
            "or the registry, or pull through a mirror (TfenvImages.registry_mirrors)."
        )
    return f"{name}: the pull failed: {_short(text)}"


def _short(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= 300 else text[:297] + "..."


def _error_text(error: docker.errors.APIError) -> str:
    return str(getattr(error, "explanation", None) or error)


def _stream_pull(
    client: docker.DockerClient,
    name: str,
    stall_timeout: float,
    report: Reporter,
    cancelled: Callable[[], bool],
) -> None:
    """Blocking: pull one name, passing each progress message to ``report``.

    docker-py's ``pull`` reads the stream without any timeout, so a stalled registry would
    block forever; this issues the same request with a read timeout, which is our stall timer.
    """
    api = client.api
    reference = parse(name)
    params: dict[str, Any] = {"fromImage": reference.repository}
    # An empty tag would make the engine pull every tag of the repository.
    params["tag"] = reference.digest or reference.tag or "latest"
    headers: dict[str, str] = {}
    registry, _ = docker.auth.resolve_repository_name(reference.repository)
    auth_header = docker.auth.get_config_header(api, registry)
    if auth_header:
        headers["X-Registry-Auth"] = auth_header
    try:
        response = api._post(
            api._url("/images/create"),
            params=params,
            headers=headers,
            stream=True,
            timeout=(30, stall_timeout),
        )
    except requests.exceptions.ReadTimeout as error:
        raise PullStalledError(_stall_message(name, stall_timeout)) from error
    try:
        api._raise_for_status(response)
        for event in api._stream_helper(response, decode=True):
            if cancelled():
                raise PullError(f"{name}: the pull was cancelled.")
            if event.get("error") or event.get("errorDetail"):
                detail = event.get("errorDetail") or {}
                raise PullError(
                    explain_pull_failure(name, str(detail.get("message") or event.get("error")))
                )
            report(event)
    except requests.exceptions.ConnectionError as error:
        # A read timeout in the middle of the stream arrives wrapped in a ConnectionError.
        if "timed out" in str(error).lower():
            raise PullStalledError(_stall_message(name, stall_timeout)) from error
        raise PullError(f"{name}: lost the connection to the Docker engine: {error}") from error
    except docker.errors.APIError as error:
        raise PullError(explain_pull_failure(name, _error_text(error))) from error
    finally:
        # Closing the stream early makes the engine cancel the pull.
        response.close()


def _stall_message(name: str, seconds: float) -> str:
    reference = parse(name)
    return (
        f"{name}: no progress for {seconds:g} s, so the pull was given up. The registry "
        f"{reference.domain or 'Docker Hub'} (or the mirror) stalled. Try again later, pull "
        "through another mirror (TfenvImages.registry_mirrors), or allow more time with "
        "TfenvImages.pull_stall_timeout."
    )


def pull_image(
    client: docker.DockerClient,
    image: str,
    *,
    mirrors: list[str] | None = None,
    fallback: bool = True,
    stall_timeout: float = 120.0,
    report: Reporter | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> PullResult:
    """Blocking: pull ``image``, through each mirror in turn for a Docker Hub image.

    A mirror's copy is tagged with the name asked for (without ``MIRROR/``), and the mirror's
    name is removed, so kernels and kernelspecs find the image under its usual name. Raises
    :class:`PullError` naming every source's cause when all fail.
    """
    wanted = canonical_name(image)
    sources = pull_sources(image, mirrors or [], fallback)
    failures: list[str] = []
    for source in sources:
        progress = PullProgress()

        def forward(event: dict[str, Any], progress: PullProgress = progress) -> None:
            progress.apply(event)
            if report is not None:
                report(event)

        if report is not None:
            report({"status": f"Pulling {source}"})
        try:
            _stream_pull(client, source, stall_timeout, forward, cancelled or (lambda: False))
        except PullError as error:
            failures.append(str(error))
            continue
        return _finish(client, wanted, source, progress.digest)
    if len(failures) == 1:
        raise PullError(failures[0])
    raise PullError(f"Could not pull {wanted} from any source: " + " | ".join(failures))


def _finish(
    client: docker.DockerClient, wanted: str, source: str, digest: str | None
) -> PullResult:
    """Tag a mirror's copy with the wanted name; check a pinned digest; report the image id."""
    api = client.api
    reference = parse(wanted)
    local = source
    if source != wanted and reference.tag:
        api.tag(source, reference.repository, reference.tag)
        try:
            # noprune: only the mirror's name goes; the layers stay under the wanted name.
            api.remove_image(source, noprune=True)
        except docker.errors.APIError as error:
            log.debug("Could not remove the mirror name %s: %s", source, error)
        local = f"{reference.repository}:{reference.tag}"
    # A digest-only name cannot become a tag, so such an image keeps the mirror's name.
    attrs = api.inspect_image(local)
    if reference.digest:
        digests = [entry.split("@", 1)[-1] for entry in attrs.get("RepoDigests") or []]
        if reference.digest not in digests:
            raise PullError(
                f"{wanted}: the image pulled from {source} has digest(s) {digests}, not the "
                f"{reference.digest} asked for. That source serves other content: stop using it."
            )
        digest = reference.digest
    return PullResult(image=local, id=str(attrs["Id"]), digest=digest, source=source)
