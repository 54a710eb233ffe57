"""Fast checks of the reporting pieces the fault tests rely on (no engine needed)."""

from __future__ import annotations

import logging

import pytest
from tornado import web

from jupyter_tfenv.container import ContainerPlan, build_create_kwargs, describe_exit
from jupyter_tfenv.errors import (
    EngineUnavailableError,
    GpuUnavailableError,
    ImageNotFoundError,
    KernelContainerError,
)
from jupyter_tfenv.provisioner import DockerProvisioner, shown_to_clients, visible_gpu_ids

BANNER = """NOTE: When using the `ipython kernel` entry point, Ctrl-C will not work.

To exit, you will have to explicitly quit this process, by either sending
"quit" from a client, or using Ctrl-\\ in UNIX-like environments.

To read more about this, see https://github.com/ipython/ipython/issues/2049


To connect another client to this kernel, use:
    --existing /tfenv-run/connection.json
"""


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ImageNotFoundError("Image 'x:1' is not on this Docker engine."), 400),
        (ValueError("Unknown tfenv-docker-provisioner setting(s) 'mem_limt'"), 400),
        (EngineUnavailableError("No Docker engine socket at unix:///x."), 503),
        (GpuUnavailableError("GPUs were requested (gpus='all') but ..."), 503),
        (KernelContainerError("The kernel stopped right after starting."), 500),
    ],
)
def test_start_errors_keep_their_class_and_message_and_carry_a_status(
    error: Exception, status: int
) -> None:
    shown = shown_to_clients(error)
    assert isinstance(shown, type(error))
    assert isinstance(shown, web.HTTPError)
    assert shown.status_code == status
    assert str(shown) == str(error)
    assert shown.log_message == str(error)
    assert shown_to_clients(shown) is shown


def test_a_percent_sign_in_a_start_error_does_not_break_tornados_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    shown = shown_to_clients(KernelContainerError("disk 100% full"))
    assert isinstance(shown, web.HTTPError)
    # How tornado logs an HTTPError (RequestHandler.log_exception).
    with caplog.at_level(logging.WARNING):
        logging.getLogger("tornado.general").warning(
            "%d %s: " + str(shown.log_message), shown.status_code, "POST /api/kernels", *shown.args
        )
    assert "500 POST /api/kernels: disk 100% full" in caplog.text


def test_unknown_kernelspec_setting_is_shown_to_clients_as_a_bad_request() -> None:
    with pytest.raises(ValueError, match="did you mean 'mem_limit'") as caught:
        DockerProvisioner(kernel_id="k", mem_limt="1g")
    assert isinstance(caught.value, web.HTTPError)
    assert caught.value.status_code == 400


@pytest.mark.parametrize(
    ("spec", "ids"),
    [
        ("none", frozenset()),
        ("all", None),
        ("1", frozenset({"0"})),
        ("3", frozenset({"0", "1", "2"})),
        ("device=1,GPU-ab", frozenset({"1", "GPU-ab"})),
        ("not a spec", frozenset()),
    ],
)
def test_visible_gpu_ids_follow_dockers_nvidia_driver(
    spec: str, ids: frozenset[str] | None
) -> None:
    assert visible_gpu_ids(spec) == ids


def test_exit_reason_drops_the_ipykernel_banner_and_keeps_the_real_last_lines() -> None:
    text = describe_exit({"State": {"ExitCode": 137}}, BANNER + "MemoryError: boom\n")
    assert "Ctrl-C will not work" not in text
    assert "--existing" not in text
    assert text.endswith("Last lines of its log:\nMemoryError: boom")
    assert "the kernel process killed inside its container" in text
    assert "`docker stop`" in describe_exit({"State": {"ExitCode": 143}}, BANNER)


def test_signals_reach_the_kernels_process_group() -> None:
    plan = ContainerPlan(
        image="img:1", command=["python3"], kernel_id="k", kernelspec="s", labels={}, run_dir="/r"
    )
    assert build_create_kwargs(plan)["environment"]["TINI_KILL_PROCESS_GROUP"] == "1"
