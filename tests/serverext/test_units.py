"""Fast checks of the pure parts: mirror names, error sentences, progress folding, settings,
tag order, registry challenges and the kernelspec plan."""

from __future__ import annotations

from typing import Any

import pytest
from traitlets import TraitError

from jupyter_tfenv.images import LocalImage, TfenvImages, split_repo_tag, version_key
from jupyter_tfenv.mirrors import canonical_name, mirrored_name, normalize_mirror, pull_sources
from jupyter_tfenv.prepare import dockerfile, prepared_name
from jupyter_tfenv.pull import PullProgress, explain_pull_failure
from jupyter_tfenv.registry import _parse_challenge, registry_target, sort_tags
from jupyter_tfenv.serverext.catalog import plan_kernelspecs

MIRROR = "docker.m.daocloud.io"
DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (
            "tensorflow/tensorflow:2.15.0-gpu-jupyter",
            f"{MIRROR}/tensorflow/tensorflow:2.15.0-gpu-jupyter",
        ),
        ("tensorflow/tensorflow:latest-gpu", f"{MIRROR}/tensorflow/tensorflow:latest-gpu"),
        ("tensorflow/tensorflow", f"{MIRROR}/tensorflow/tensorflow:latest"),
        ("ubuntu:22.04", f"{MIRROR}/library/ubuntu:22.04"),
        ("docker.io/library/ubuntu:22.04", f"{MIRROR}/library/ubuntu:22.04"),
        ("index.docker.io/tensorflow/tensorflow:2.21.0", f"{MIRROR}/tensorflow/tensorflow:2.21.0"),
        (f"tensorflow/tensorflow@{DIGEST}", f"{MIRROR}/tensorflow/tensorflow@{DIGEST}"),
        (f"ubuntu:22.04@{DIGEST}", f"{MIRROR}/library/ubuntu:22.04@{DIGEST}"),
        ("nvcr.io/nvidia/tensorflow:24.01-tf2-py3", None),
        ("127.0.0.1:5000/team/tensorflow:2.21.0", None),
        ("localhost/team/tensorflow:1", None),
    ],
)
def test_mirror_names_keep_tag_and_digest(image: str, expected: str | None) -> None:
    assert mirrored_name(image, MIRROR) == expected


def test_canonical_names_and_sources() -> None:
    assert canonical_name("docker.io/library/ubuntu") == "ubuntu:latest"
    assert canonical_name("ubuntu@" + DIGEST) == "ubuntu@" + DIGEST
    assert canonical_name("127.0.0.1:5000/x/tf") == "127.0.0.1:5000/x/tf:latest"
    assert pull_sources("ubuntu:22.04", [MIRROR, "127.0.0.1:5000"], fallback=True) == [
        f"{MIRROR}/library/ubuntu:22.04",
        "127.0.0.1:5000/library/ubuntu:22.04",
        "ubuntu:22.04",
    ]
    assert pull_sources("ubuntu:22.04", [MIRROR], fallback=False) == [
        f"{MIRROR}/library/ubuntu:22.04"
    ]
    # Another registry's image: the mirror does not stand in for it, whatever fallback says.
    assert pull_sources("ghcr.io/x/tf:1", [MIRROR], fallback=False) == ["ghcr.io/x/tf:1"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://docker.m.daocloud.io/", MIRROR),
        ("127.0.0.1:5000", "127.0.0.1:5000"),
        ("registry.example/dockerhub", "registry.example/dockerhub"),
    ],
)
def test_mirror_settings_are_normalized(value: str, expected: str) -> None:
    assert normalize_mirror(value) == expected
    assert TfenvImages(registry_mirrors=[value]).registry_mirrors == [expected]


@pytest.mark.parametrize("value", ["", "mirror", "docker m io", "-x.io"])
def test_bad_mirror_settings_name_the_value(value: str) -> None:
    with pytest.raises(TraitError) as info:
        TfenvImages(registry_mirrors=[value])
    assert "TfenvImages.registry_mirrors" in str(info.value)
    assert repr(value) in str(info.value)


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TFENV_REGISTRY_MIRRORS", f"{MIRROR}, 127.0.0.1:5000")
    monkeypatch.setenv("TFENV_TENSORFLOW_REPOSITORY", "127.0.0.1:5000/team/tensorflow")
    settings = TfenvImages()
    assert settings.registry_mirrors == [MIRROR, "127.0.0.1:5000"]
    assert settings.tensorflow_repository == "127.0.0.1:5000/team/tensorflow"


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"tensorflow_repository": "tensorflow/tensorflow:2.21.0"}, "names a tag"),
        ({"tensorflow_repository": "Tensorflow/TF"}, "lower-case"),
        ({"pull_stall_timeout": 0}, "positive number of seconds"),
        ({"prepare_suffix": "tfenv"}, "must start with '-'"),
        ({"gpu_support": "maybe"}, "gpu_support"),
    ],
)
def test_bad_settings_are_refused_with_the_fix(settings: dict[str, Any], words: str) -> None:
    with pytest.raises(TraitError) as info:
        TfenvImages(**settings)
    assert words in str(info.value)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            "manifest for 127.0.0.1:5000/x/tf:9 not found: manifest unknown: manifest unknown",
            "the tag '9' does not exist in 127.0.0.1:5000/x/tf",
        ),
        (
            "pull access denied for nosuch/tf, repository does not exist or may require "
            "'docker login': denied: requested access to the resource is denied",
            "refused access",
        ),
        (
            "failed to register layer: write /usr/lib/x.so: no space left on device",
            "disk is full",
        ),
        (
            'Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io: '
            "no such host",
            "cannot be reached",
        ),
        ("net/http: TLS handshake timeout", "cannot be reached"),
        ("something new", "the pull failed: something new"),
    ],
)
def test_pull_failures_become_sentences(text: str, words: str) -> None:
    name = "127.0.0.1:5000/x/tf:9" if "127.0.0.1" in text else "nosuch/tf:1"
    assert words in explain_pull_failure(name, text)


def test_login_advice_names_the_registry() -> None:
    message = explain_pull_failure("ghcr.io/team/tf:1", "unauthorized: authentication required")
    assert "`docker login ghcr.io`" in message
    assert "`docker login`" in explain_pull_failure("team/tf:1", "unauthorized")


def test_progress_folds_layers_and_ignores_other_messages() -> None:
    progress = PullProgress()
    events = [
        {"status": "Pulling from team/tf", "id": "2.21.0"},
        {"status": "Pulling fs layer", "progressDetail": {}, "id": "aaaaaaaaaaaa"},
        {"status": "Already exists", "progressDetail": {}, "id": "bbbbbbbbbbbb"},
        {
            "status": "Downloading",
            "progressDetail": {"current": 10, "total": 40},
            "id": "aaaaaaaaaaaa",
        },
        {"status": "Some warning about the registry", "id": "2.21.0"},
        {"status": "Download complete", "progressDetail": {}, "id": "aaaaaaaaaaaa"},
        {
            "status": "Extracting",
            "progressDetail": {"current": 5, "total": 40},
            "id": "aaaaaaaaaaaa",
        },
        {"status": "Pull complete", "progressDetail": {}, "id": "aaaaaaaaaaaa"},
        {"status": "Digest: " + DIGEST},
    ]
    for event in events[:4]:
        progress.apply(event)
    assert (progress.bytes_done, progress.bytes_total) == (10, 40)
    for event in events[4:]:
        progress.apply(event)
    assert progress.to_dict() == {
        "bytes_done": 40,
        "bytes_total": 40,
        "layers": {
            "aaaaaaaaaaaa": {"status": "Pull complete", "current": 40, "total": 40},
            "bbbbbbbbbbbb": {"status": "Already exists", "current": 0, "total": 0},
        },
    }
    assert progress.digest == DIGEST


def test_tags_sort_newest_first() -> None:
    tags = ["2.9.1", "latest", "2.10.0", "2.10.0-gpu", "2.10.0-gpu-jupyter", "nightly", "2.2.0"]
    assert sort_tags(tags)[:5] == [
        "2.10.0",
        "2.10.0-gpu-jupyter",
        "2.10.0-gpu",
        "2.9.1",
        "2.2.0",
    ]
    assert set(sort_tags(tags)[5:]) == {"latest", "nightly"}
    assert version_key("2.21.0") > version_key("2.9.0")


def test_registry_targets_and_challenges() -> None:
    hub = registry_target("tensorflow/tensorflow")
    assert (hub.api_url, hub.path) == ("https://registry-1.docker.io", "tensorflow/tensorflow")
    assert registry_target("ubuntu").path == "library/ubuntu"
    local = registry_target("127.0.0.1:5000/team/tensorflow")
    assert (local.api_url, local.path) == ("http://127.0.0.1:5000", "team/tensorflow")
    assert registry_target("registry.example:5000/tf").api_url == "https://registry.example:5000"
    assert registry_target("r.example/tf", api_url="http://10.0.0.1/").api_url == (
        "http://10.0.0.1"
    )
    scheme, params = _parse_challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:tensorflow/tensorflow:pull"'
    )
    assert scheme == "bearer"
    assert params == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:tensorflow/tensorflow:pull",
    }


def test_prepared_names_and_dockerfile() -> None:
    assert prepared_name("tensorflow/tensorflow:2.21.0") == "tensorflow/tensorflow:2.21.0-tfenv"
    assert prepared_name("tensorflow/tensorflow") == "tensorflow/tensorflow:latest-tfenv"
    assert prepared_name(f"tensorflow/tensorflow@{DIGEST}") == (
        "tensorflow/tensorflow:sha-abababababab-tfenv"
    )
    text = dockerfile("sha256:1234", "1000:1000", ["ipykernel"], ["--index-url", "https://x"], True)
    lines = text.splitlines()
    assert lines[0] == "FROM sha256:1234"
    assert lines[1] == "USER root"
    assert lines[2] == "COPY ca.pem /etc/jupyter-tfenv-ca.pem"
    assert lines[3].startswith('RUN ["env", "PIP_BREAK_SYSTEM_PACKAGES=1"')
    assert lines[3].endswith('"-m", "pip", "install", "--index-url", "https://x", "ipykernel"]')
    assert lines[4] == "USER 1000:1000"


def _image(ref: str, image_id: str, **facts: Any) -> LocalImage:
    repository, tag = split_repo_tag(ref)
    return LocalImage(ref=ref, id=image_id, repository=repository, tag=tag, size=1, **facts)


def test_kernelspec_plan() -> None:
    images = [
        _image(
            "tensorflow/tensorflow:2.21.0",
            "sha256:a",
            tensorflow_version="2.21.0",
            kernel_ready=False,
        ),
        _image(
            "tensorflow/tensorflow:2.21.0-tfenv",
            "sha256:p",
            tensorflow_version="2.21.0",
            kernel_ready=True,
            prepared_from="sha256:a",
        ),
        _image(
            "tensorflow/tensorflow:2.21.0-gpu-jupyter",
            "sha256:g",
            tensorflow_version="2.21.0",
            kernel_ready=True,
            gpu=True,
        ),
        _image(
            "127.0.0.1:5000/team/tensorflow:2.21.0",
            "sha256:b",
            tensorflow_version="2.21.0",
            kernel_ready=True,
        ),
        _image("team/tensorflow:latest", "sha256:c", kernel_ready=None),
    ]
    specs = plan_kernelspecs(images, gpu_ok=True, gpu_for_cpu_images=False, taken={"python3"})
    names = {name: spec["display_name"] for name, spec in specs.items()}
    hashed = [name for name in names if name.startswith("tfenv-tensorflow-2.21.0-cpu-")]
    assert len(hashed) == 1
    assert names == {
        "tfenv-tensorflow-2.21.0-cpu": (
            "TensorFlow 2.21.0 (Docker CPU, tensorflow/tensorflow:2.21.0)"
        ),
        hashed[0]: "TensorFlow 2.21.0 (Docker CPU, 127.0.0.1:5000/team/tensorflow:2.21.0)",
        "tfenv-tensorflow-2.21.0-gpu-jupyter-cpu": (
            "TensorFlow 2.21.0 (Docker CPU, tensorflow:2.21.0-gpu-jupyter)"
        ),
        "tfenv-tensorflow-2.21.0-gpu-jupyter-gpu": "TensorFlow 2.21.0 (Docker GPU)",
        "tfenv-tensorflow-latest-cpu": "Python (Docker CPU: team/tensorflow:latest)",
    }
    # The source's kernel runs the prepared image; the prepared image has none of its own.
    source = specs["tfenv-tensorflow-2.21.0-cpu"]
    assert source["metadata"]["kernel_provisioner"]["config"]["image"] == (
        "tensorflow/tensorflow:2.21.0-tfenv"
    )
    assert source["metadata"]["tfenv"]["kernel_ready"] is True
    assert specs["tfenv-tensorflow-latest-cpu"]["metadata"]["tfenv"]["kernel_ready"] is None

    # No GPU engine: CPU kernels only; an installed name is left to the installed kernelspec.
    specs = plan_kernelspecs(
        images,
        gpu_ok=False,
        gpu_for_cpu_images=False,
        taken={"tfenv-tensorflow-latest-cpu"},
        auto_prepare=True,
    )
    assert not [name for name in specs if name.endswith("-gpu")]
    assert "tfenv-tensorflow-latest-cpu" not in specs
    assert all(
        spec["metadata"]["kernel_provisioner"]["config"]["auto_prepare"] is True
        for spec in specs.values()
    )
