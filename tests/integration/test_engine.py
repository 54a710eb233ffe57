"""The engine the suite runs against: it answers, GPU requests behave as reported, and the
run-label sweep removes this run's resources and nothing else."""

from __future__ import annotations

import contextlib
from typing import Any

import docker
import pytest

pytestmark = pytest.mark.engine


def test_engine_answers_with_its_version(docker_client: Any) -> None:
    version = docker_client.version()

    assert docker_client.ping() is True
    assert version["Version"]
    assert version["ApiVersion"]


def test_gpu_requests_reach_the_standin_or_fail_clearly(gpu_support: Any) -> None:
    # Under `make test` on a machine where devenv starts dockerd, the stand-in hook is active
    # and requests succeed; no GPU is used.  On an engine devenv did not start (a developer's
    # own), requests fail with the driver error the product must turn into a clear message.
    print(gpu_support.detail)
    if gpu_support.accepted:
        assert gpu_support.visible_devices == "all"
        assert ("stand-in" in gpu_support.detail) is gpu_support.standin
    else:
        assert gpu_support.standin is False
        assert 'could not select device driver "" with capabilities: [[gpu]]' in (
            gpu_support.detail
        )


def test_sweep_removes_this_runs_resources_and_nothing_else(
    docker_client: Any,
    container_sweeper: Any,
    kernel_image: str,
    tfenv_run_label: str,
    test_labels: dict[str, str],
) -> None:
    owner_labels = {"org.jupyter-tfenv.managed": "true", "org.jupyter-tfenv.owner": tfenv_run_label}
    # Another value this test owns, standing for a concurrent run on the shared engine.
    other_value = f"{tfenv_run_label}-bystander"
    bystander_labels = {"org.jupyter-tfenv.owner": other_value}
    before = container_sweeper.snapshot()

    ours = [
        docker_client.containers.create(kernel_image, ["true"], labels=test_labels).id,
        docker_client.containers.create(kernel_image, ["true"], labels=owner_labels).id,
    ]
    network = docker_client.networks.create(f"tfenv-{tfenv_run_label}", labels=owner_labels)
    volume = docker_client.volumes.create(labels=test_labels)
    bystander = docker_client.containers.create(kernel_image, ["true"], labels=bystander_labels)
    try:
        removed = container_sweeper.sweep(keep=before)

        assert sorted(removed) == sorted(
            [f"container {ident[:12]}" for ident in ours]
            + [f"network {network.id[:12]}", f"volume {volume.name}"]
        )
        assert container_sweeper.snapshot() == before
        bystander.reload()
        assert bystander.labels["org.jupyter-tfenv.owner"] == other_value
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            bystander.remove(force=True)
