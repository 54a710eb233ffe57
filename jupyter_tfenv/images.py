"""Which local images are TensorFlow images, and what each one offers a kernel.

:class:`TfenvImages` holds the image settings shared by the server extension and the
``jupyter tfenv images|pull|prepare|doctor`` commands, so one config entry (for example
``c.TfenvImages.registry_mirrors``) applies to both. The functions below list local images
from one engine call and read what they can from labels and tags; the slower probe of an image
(a short container that reads package versions) is cached per image id by ``kernel_image``.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
from traitlets import Bool, Enum, Float, List, TraitError, Unicode, default, validate
from traitlets.config import Configurable

from . import engine
from .errors import TfenvError
from .kernel_image import ImageFacts, probe_image
from .kernelspecs import tensorflow_version_from_tag

if TYPE_CHECKING:
    from .prepare import PrepareResult

LABEL_TF_VERSION = "org.tensorflow.version"
LABEL_PYTHON_VERSION = f"{engine.LABEL_PREFIX}.python-version"
LABEL_GPU = f"{engine.LABEL_PREFIX}.gpu"
# A prepared image names the id of the image it was built from, so it is built once per source.
LABEL_PREPARED_FROM = f"{engine.LABEL_PREFIX}.prepared-from"

DEFAULT_REPOSITORY_PATTERNS = ["tensorflow", "*/tensorflow"]
DEFAULT_TENSORFLOW_REPOSITORY = "tensorflow/tensorflow"
DEFAULT_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def _env_list(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


class TfenvImages(Configurable):  # type: ignore[misc]
    """Image settings of jupyter-tfenv: detection, registry, mirrors, pulls and prepares.

    Read by the server extension and by the ``jupyter tfenv`` image commands, from
    ``jupyter_server_config.py`` or ``jupyter_tfenv_config.py``.
    """

    docker_host = Unicode(
        config=True,
        help="""Docker engine holding the images, e.g. "unix:///var/run/docker.sock" or
        "ssh://user@host". Default: the TFENV_DOCKER_HOST environment variable, else Docker's
        own choice (DOCKER_HOST or the local socket). Use the same engine as the kernels.""",
    )

    owner_label = Unicode(
        config=True,
        help="""Value of the org.jupyter-tfenv.owner label on images built by `prepare` and on
        probe containers. Default: the TFENV_OWNER_LABEL environment variable, else "default".""",
    )

    repository_patterns = List(
        Unicode(),
        default_value=DEFAULT_REPOSITORY_PATTERNS,
        config=True,
        help=f"""Shell-style patterns (fnmatch, "*" also matches "/") of repository names that
        hold TensorFlow images. A local image whose repository matches one of them, or that
        carries a label from `detect_labels`, is offered as a kernel. Default:
        {DEFAULT_REPOSITORY_PATTERNS!r}, which matches "tensorflow/tensorflow" and
        "registry.example:5000/team/tensorflow". Example: ["*/tensorflow", "*/tf-*"].""",
    )

    detect_labels = List(
        Unicode(),
        default_value=[LABEL_TF_VERSION],
        config=True,
        help=f"""Image labels that mark a TensorFlow image whatever its name. Default:
        [{LABEL_TF_VERSION!r}]; its value is taken as the TensorFlow version.""",
    )

    tensorflow_repository = Unicode(
        config=True,
        help=f"""Repository whose tags `images` lists as pullable, as Docker writes it. Default:
        the TFENV_TENSORFLOW_REPOSITORY environment variable, else
        {DEFAULT_TENSORFLOW_REPOSITORY!r} (Docker Hub). Example:
        "registry.example:5000/team/tensorflow".""",
    )

    registry_api_url = Unicode(
        "",
        config=True,
        help="""Base URL of the Registry HTTP API v2 that lists the tags of
        `tensorflow_repository`, e.g. "https://registry.example:5000". Empty (default): derived
        from the repository (Docker Hub: https://registry-1.docker.io; a loopback registry such
        as 127.0.0.1:5000: http, any other host: https).""",
    )

    registry_username = Unicode(
        config=True,
        help="""User name for the tag-list registry, if it needs one. Default: the
        TFENV_REGISTRY_USERNAME environment variable, else anonymous. Pulls use the engine's
        own credentials (`docker login`).""",
    )

    registry_password = Unicode(
        config=True,
        help="""Password or access token for `registry_username`. Default: the
        TFENV_REGISTRY_PASSWORD environment variable. Never logged.""",
    )

    registry_timeout = Float(
        15.0,
        config=True,
        help="Seconds one request to the tag-list registry (or its token server) may take.",
    )

    tags_cache_seconds = Float(
        300.0,
        config=True,
        help="Seconds a registry tag list is reused before it is fetched again. Default 300.",
    )

    registry_mirrors = List(
        Unicode(),
        config=True,
        help="""Registry mirrors for Docker Hub images, tried in order, e.g.
        ["docker.m.daocloud.io"]. A pull of "tensorflow/tensorflow:2.15.0-gpu-jupyter" then
        fetches "MIRROR/tensorflow/tensorflow:2.15.0-gpu-jupyter" (official images such as
        "ubuntu:22.04" become "MIRROR/library/ubuntu:22.04"), keeping the tag or digest, and
        tags the result with the name asked for. Images of other registries are pulled
        unchanged. Default: the TFENV_REGISTRY_MIRRORS environment variable (comma-separated),
        else none.""",
    )

    mirror_fallback = Bool(
        True,
        config=True,
        help="""After every mirror failed, pull from Docker Hub itself. Set False where Docker Hub
        cannot be reached, so the error names the mirrors' causes at once.""",
    )

    pull_stall_timeout = Float(
        120.0,
        config=True,
        help="""Seconds a pull may go without any progress before it is given up, with advice
        (try later, another mirror, or a longer timeout). Default 120; raise it for very slow
        links.""",
    )

    prepare_suffix = Unicode(
        "-tfenv",
        config=True,
        help="""Appended to the tag of an image made kernel-ready by `prepare`:
        "tensorflow/tensorflow:2.21.0" becomes "tensorflow/tensorflow:2.21.0-tfenv".""",
    )

    prepare_packages = List(
        Unicode(),
        default_value=["ipykernel"],
        config=True,
        help="""pip requirements `prepare` installs into the derived image. Default ["ipykernel"];
        add for example "ipywidgets>=8" to get widgets in every prepared image.""",
    )

    prepare_pip_options = List(
        Unicode(),
        config=True,
        help="""Extra pip options of `prepare`, e.g. ["--index-url", "https://pypi.example/simple"].
        They are visible in the image history: put no passwords here.""",
    )

    prepare_network = Unicode(
        "host",
        config=True,
        help="""Network of the `prepare` build, as `docker build --network` takes it. Default
        "host": the build reaches the package index the way this machine does.""",
    )

    prepare_ca_bundle = Unicode(
        config=True,
        help=f"""CA bundle copied into the `prepare` build for pip (PIP_CERT), so an index behind
        a proxy with its own CA works. Default: the TFENV_PREPARE_CA_BUNDLE environment variable,
        else {DEFAULT_CA_BUNDLE} where it exists. Empty: use the image's own CAs.""",
    )

    gpu_support = Enum(
        ["auto", "yes", "no"],
        default_value="auto",
        config=True,
        help="""Whether the engine can run GPU kernels. "auto" (default): yes when `docker info`
        lists an nvidia runtime. "yes": the engine has a GPU device driver that docker info does
        not show (e.g. the NVIDIA hook on dockerd's PATH). "no": offer CPU kernels only.""",
    )

    gpu_kernels_for_cpu_images = Bool(
        False,
        config=True,
        help="""Also offer a GPU kernel for images that are not GPU variants (no "gpu" in the tag
        and no org.jupyter-tfenv.gpu=true label). Off by default: such images lack CUDA, so
        TensorFlow would not see the GPU.""",
    )

    @default("docker_host")
    def _docker_host_default(self) -> str:
        return engine.docker_host_from_env()

    @default("owner_label")
    def _owner_label_default(self) -> str:
        return engine.owner_from_env()

    @default("tensorflow_repository")
    def _tensorflow_repository_default(self) -> str:
        return os.environ.get("TFENV_TENSORFLOW_REPOSITORY", DEFAULT_TENSORFLOW_REPOSITORY)

    @default("registry_username")
    def _registry_username_default(self) -> str:
        return os.environ.get("TFENV_REGISTRY_USERNAME", "")

    @default("registry_password")
    def _registry_password_default(self) -> str:
        return os.environ.get("TFENV_REGISTRY_PASSWORD", "")

    @default("registry_mirrors")
    def _registry_mirrors_default(self) -> list[str]:
        return _env_list("TFENV_REGISTRY_MIRRORS")

    @default("prepare_ca_bundle")
    def _prepare_ca_bundle_default(self) -> str:
        if "TFENV_PREPARE_CA_BUNDLE" in os.environ:
            return os.environ["TFENV_PREPARE_CA_BUNDLE"]
        return DEFAULT_CA_BUNDLE if os.path.isfile(DEFAULT_CA_BUNDLE) else ""

    @validate("tensorflow_repository")
    def _validate_repository(self, proposal: Any) -> str:
        from .imagename import check_image_reference

        value = str(proposal["value"])
        try:
            reference = check_image_reference(value)
        except ValueError as error:
            raise TraitError(f"TfenvImages.tensorflow_repository: {error}") from error
        if reference is not None and (reference.tag or reference.digest):
            raise TraitError(
                f"TfenvImages.tensorflow_repository {value!r} names a tag or digest; give the "
                f"repository only, e.g. {reference.repository!r}."
            )
        return value

    @validate("registry_mirrors")
    def _validate_mirrors(self, proposal: Any) -> list[str]:
        from .mirrors import normalize_mirror

        try:
            return [normalize_mirror(value) for value in proposal["value"]]
        except ValueError as error:
            raise TraitError(f"TfenvImages.registry_mirrors: {error}") from error

    @validate("pull_stall_timeout", "registry_timeout")
    def _validate_positive(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if value <= 0:
            raise TraitError(
                f"TfenvImages.{proposal['trait'].name} must be a positive number of seconds, "
                f"not {value!r}."
            )
        return value

    @validate("prepare_suffix")
    def _validate_suffix(self, proposal: Any) -> str:
        import re

        value = str(proposal["value"])
        if not re.fullmatch(r"-[\w.-]{1,40}", value):
            raise TraitError(
                f"TfenvImages.prepare_suffix {value!r} must start with '-' and hold letters, "
                "digits, '.', '_' or '-' only, e.g. '-tfenv'."
            )
        return value

    def prepare(
        self,
        client: docker.DockerClient,
        image: str,
        report: Callable[[dict[str, Any]], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> PrepareResult:
        """Blocking: make ``image`` kernel-ready with these settings (see prepare.py)."""
        from .prepare import prepare_image

        return prepare_image(
            client,
            image,
            packages=list(self.prepare_packages),
            pip_options=list(self.prepare_pip_options),
            suffix=self.prepare_suffix,
            network=self.prepare_network,
            ca_bundle=self.prepare_ca_bundle,
            owner=self.owner_label,
            report=report,
            cancelled=cancelled,
        )

    def client(self) -> docker.DockerClient:
        """The engine client for these settings (blocking on the first call: it pings)."""
        return engine.get_client(self.docker_host)


@dataclass
class LocalImage:
    """One local TensorFlow image under one name (an image with two tags appears twice)."""

    ref: str
    id: str
    repository: str
    tag: str
    size: int
    labels: dict[str, str] = field(default_factory=dict)
    tensorflow_version: str | None = None
    python_version: str | None = None
    gpu: bool = False
    # None until the image was probed; the probe is cached per image id.
    kernel_ready: bool | None = None
    prepared_from: str | None = None
    probe_error: str | None = None

    def to_api(self, kernels: list[str]) -> dict[str, Any]:
        """The Image object of the REST API (docs/rest-api.md)."""
        return {
            "image": self.ref,
            "id": self.id,
            "tensorflow_version": self.tensorflow_version,
            "python_version": self.python_version,
            "size": self.size,
            "gpu": self.gpu,
            "kernel_ready": bool(self.kernel_ready),
            "kernels": kernels,
            "prepared_from": self.prepared_from,
            "problem": self.probe_error,
        }


def split_repo_tag(repo_tag: str) -> tuple[str, str]:
    """Split "registry:5000/team/tf:2.21.0" into ("registry:5000/team/tf", "2.21.0")."""
    repository, _, tag = repo_tag.rpartition(":")
    if "/" in tag or not repository:
        return repo_tag, ""
    return repository, tag


def is_tensorflow_image(
    repository: str, labels: dict[str, str], patterns: list[str], detect_labels: list[str]
) -> bool:
    """True when the repository matches a pattern or the image carries a detection label."""
    if any(labels.get(name) for name in detect_labels):
        return True
    return any(fnmatch.fnmatchcase(repository, pattern) for pattern in patterns)


def _is_gpu_variant(tag: str, labels: dict[str, str]) -> bool:
    label = labels.get(LABEL_GPU, "").strip().lower()
    if label:
        return label in ("1", "true", "yes")
    # The official tags mark GPU builds as "2.21.0-gpu" and "latest-gpu-jupyter".
    return "gpu" in tag.lower().replace("_", "-").split("-")


def list_tensorflow_images(client: docker.DockerClient, settings: TfenvImages) -> list[LocalImage]:
    """Blocking: every local TensorFlow image by name, from one engine call, without probing."""
    found: list[LocalImage] = []
    # The low-level summary list: one call, where images.list() would inspect every image.
    for attrs in client.api.images():
        labels = attrs.get("Labels") or {}
        for repo_tag in attrs.get("RepoTags") or []:
            if repo_tag == "<none>:<none>":
                continue
            repository, tag = split_repo_tag(repo_tag)
            if not is_tensorflow_image(
                repository, labels, settings.repository_patterns, settings.detect_labels
            ):
                continue
            version = next(
                (labels[name] for name in settings.detect_labels if labels.get(name)), None
            )
            if version is None:
                try:
                    version = tensorflow_version_from_tag(repo_tag)
                except ValueError:
                    version = None
            found.append(
                LocalImage(
                    ref=repo_tag,
                    id=str(attrs["Id"]),
                    repository=repository,
                    tag=tag,
                    size=int(attrs.get("Size") or 0),
                    labels=dict(labels),
                    tensorflow_version=version,
                    python_version=labels.get(LABEL_PYTHON_VERSION) or None,
                    gpu=_is_gpu_variant(tag, labels),
                    prepared_from=labels.get(LABEL_PREPARED_FROM) or None,
                )
            )
    # Newest version first within each repository, repositories in name order.
    found.sort(key=lambda item: version_key(item.tag), reverse=True)
    found.sort(key=lambda item: item.repository)
    return found


def apply_facts(image: LocalImage, facts: ImageFacts) -> None:
    """Fill in what a probe found; a version read from inside the image beats one from a tag."""
    image.kernel_ready = facts.kernel_ready
    if facts.tensorflow:
        image.tensorflow_version = facts.tensorflow
    if facts.python:
        image.python_version = facts.python


def probe_images(
    client: docker.DockerClient,
    images: list[LocalImage],
    settings: TfenvImages,
    stop: Callable[[], bool] | None = None,
) -> None:
    """Blocking: probe each image once per id (cached), recording a failure on the image.

    ``stop`` is asked between images, so a server that shuts down waits for one probe at most.
    """
    by_id: dict[str, ImageFacts | str] = {}
    for image in images:
        if stop is not None and stop():
            return
        if image.id not in by_id:
            try:
                by_id[image.id] = probe_image(client, image.id, owner=settings.owner_label)
            except (TfenvError, docker.errors.DockerException) as error:
                by_id[image.id] = str(error)
        result = by_id[image.id]
        if isinstance(result, str):
            image.kernel_ready = False
            image.probe_error = result.replace(image.id, image.ref)
        else:
            apply_facts(image, result)


def version_key(tag: str) -> tuple[Any, ...]:
    """Sort key that orders "2.9.1" below "2.10.0" and a release above its suffixed tags."""
    import re

    match = re.match(r"^(\d+(?:\.\d+)*)(.*)$", tag)
    if not match:
        return (0, (), tag)
    numbers = tuple(int(part) for part in match.group(1).split("."))
    # "~" sorts after any suffix, so "2.21.0" comes before "2.21.0-gpu" in a descending list.
    return (1, numbers, match.group(2) or "~")


def engine_gpu_support(client: docker.DockerClient, setting: str) -> bool:
    """Blocking: whether GPU kernels should be offered on this engine (see gpu_support)."""
    if setting != "auto":
        return setting == "yes"
    try:
        runtimes = client.info().get("Runtimes") or {}
    except docker.errors.DockerException:
        return False
    return any("nvidia" in name for name in runtimes)
