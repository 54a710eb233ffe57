"""Fast tier: GPU specs, image names and kernelspec naming as users write them."""

from __future__ import annotations

from typing import Any

import pytest

from jupyter_tfenv.gpus import parse_gpus
from jupyter_tfenv.imagename import check_image_reference
from jupyter_tfenv.kernelspecs import display_name_for, kernel_name_for


@pytest.mark.parametrize(
    ("spec", "count", "ids", "described"),
    [
        (None, 0, (), "none"),
        ("none", 0, (), "none"),
        ("", 0, (), "none"),
        (0, 0, (), "none"),
        ("all", -1, (), "all"),
        (-1, -1, (), "all"),
        (2, 2, (), "2"),
        ("1", 1, (), "1"),
        ("device=0,1", 0, ("0", "1"), "device=0,1"),
        ("device=GPU-3a5c1f2e-77aa", 0, ("GPU-3a5c1f2e-77aa",), "device=GPU-3a5c1f2e-77aa"),
        (["1", "MIG-abc"], 0, ("1", "MIG-abc"), "device=1,MIG-abc"),
    ],
)
def test_gpu_specs_follow_docker_run_gpus(
    spec: Any, count: int, ids: tuple[str, ...], described: str
) -> None:
    request = parse_gpus(spec)
    assert (request.count, request.device_ids, request.describe()) == (count, ids, described)


@pytest.mark.parametrize(
    "spec", ["two", "device=", "device=0,0", "device=../x", True, -2, 1.5, {"count": 1}]
)
def test_invalid_gpu_specs_name_the_value_and_the_accepted_forms(spec: Any) -> None:
    with pytest.raises(ValueError, match=r"Invalid GPU spec .*Accepted GPU specs"):
        parse_gpus(spec)


@pytest.mark.parametrize(
    "name",
    [
        "tensorflow/tensorflow:2.21.0",
        "tensorflow/tensorflow:2.21.0-gpu-jupyter",
        "127.0.0.1:5000/team/tf:latest",
        "localhost/tf",
        "ubuntu@sha256:" + "a" * 64,
    ],
)
def test_valid_image_names(name: str) -> None:
    assert check_image_reference(name) is not None


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("--rm", "looks like a command-line option"),
        ("-v/:/host", "looks like a command-line option"),
        ("tf; rm -rf ~", "cannot appear in an image name"),
        ("tf$(id)", "cannot appear in an image name"),
        ("tf`id`", "cannot appear in an image name"),
        ("TensorFlow/tf", "must be lower-case"),
        ("tf:a:b", "Invalid image name"),
        ("", "Empty image name"),
    ],
)
def test_malformed_image_names_are_refused_with_an_example(name: str, expected: str) -> None:
    with pytest.raises(ValueError, match=expected) as caught:
        check_image_reference(name)
    assert "tensorflow/tensorflow:2.21.0" in str(caught.value)


def test_kernelspec_names_and_display_names_come_from_the_image() -> None:
    image = "tensorflow/tensorflow:2.21.0-gpu-jupyter"
    assert kernel_name_for(image, "all") == "tfenv-tensorflow-2.21.0-gpu-jupyter-gpu"
    assert display_name_for(image, "2.21.0", "all") == "TensorFlow 2.21.0 (Docker GPU)"
    assert display_name_for(image, "2.21.0", "none") == "TensorFlow 2.21.0 (Docker CPU)"
    assert display_name_for("python:3.11", None, 0) == "Python (Docker CPU: python:3.11)"
