"""Fast tier: the exact Docker arguments of a kernel container, and setting validation."""

from __future__ import annotations

from typing import Any

import pytest
from jupyter_client.kernelspec import KernelSpec
from traitlets import TraitError

from jupyter_tfenv.container import (
    CONTAINER_HOME,
    CONTAINER_LIB_DIR,
    CONTAINER_PORTS,
    CONTAINER_RUN_DIR,
    PACKAGE_DIR,
    ContainerPlan,
    build_create_kwargs,
    describe_exit,
    published_ports,
)
from jupyter_tfenv.errors import KernelContainerError, UnsafeMountError
from jupyter_tfenv.gpus import parse_gpus
from jupyter_tfenv.provisioner import DockerProvisioner, check_engine_is_local, check_mountable


def plan(**overrides: Any) -> ContainerPlan:
    values: dict[str, Any] = {
        "image": "tensorflow/tensorflow:2.21.0-jupyter",
        "command": ["python3", "-m", "ipykernel_launcher", "-f", "/tfenv-run/connection.json"],
        "kernel_id": "0123456789abcdef",
        "kernelspec": "tfenv-tensorflow-2.21.0-jupyter-cpu",
        "labels": {"org.jupyter-tfenv.managed": "true"},
        "run_dir": "/run/user/0/jupyter/tfenv-0123",
        "user": "1000:1000",
    }
    values.update(overrides)
    return ContainerPlan(**values)


def test_default_ipc_mode_publishes_no_port_and_keeps_outbound_network() -> None:
    kwargs = build_create_kwargs(plan())
    assert kwargs["network_mode"] == "bridge"
    assert "ports" not in kwargs
    assert kwargs["volumes"]["/run/user/0/jupyter/tfenv-0123"]["mode"] == "rw"


def test_loopback_publishes_every_port_on_127_0_0_1_with_engine_chosen_host_ports() -> None:
    kwargs = build_create_kwargs(plan(network="loopback"))
    assert kwargs["network_mode"] == "bridge"
    assert kwargs["ports"] == {
        f"{port}/tcp": ("127.0.0.1", "") for port in CONTAINER_PORTS.values()
    }


def test_restart_asks_for_the_previous_host_ports() -> None:
    previous = {name: 40000 + i for i, name in enumerate(CONTAINER_PORTS)}
    kwargs = build_create_kwargs(plan(network="loopback", host_ports=previous))
    assert kwargs["ports"]["5555/tcp"] == ("127.0.0.1", "40000")
    assert kwargs["ports"]["5559/tcp"] == ("127.0.0.1", "40004")


@pytest.mark.parametrize(("network", "mode"), [("host", "host"), ("none", "none")])
def test_host_and_none_modes_publish_nothing(network: str, mode: str) -> None:
    kwargs = build_create_kwargs(plan(network=network))
    assert kwargs["network_mode"] == mode
    assert "ports" not in kwargs


def test_run_dir_is_read_only_except_for_ipc_sockets() -> None:
    loopback = build_create_kwargs(plan(network="loopback"))
    assert loopback["volumes"]["/run/user/0/jupyter/tfenv-0123"] == {
        "bind": CONTAINER_RUN_DIR,
        "mode": "ro",
    }
    ipc = build_create_kwargs(plan(network="none"))
    assert ipc["volumes"]["/run/user/0/jupyter/tfenv-0123"]["mode"] == "rw"


def test_safety_options_are_always_set() -> None:
    kwargs = build_create_kwargs(plan())
    assert kwargs["privileged"] is False
    assert kwargs["security_opt"] == ["no-new-privileges"]
    assert kwargs["init"] is True
    assert kwargs["cap_drop"] == ["ALL"]
    assert kwargs["user"] == "1000:1000"
    assert kwargs["entrypoint"] == []
    assert not any("docker.sock" in path for path in kwargs["volumes"])


def test_root_user_keeps_default_capabilities_but_no_extra() -> None:
    kwargs = build_create_kwargs(plan(user="0:0"))
    assert "cap_drop" not in kwargs
    assert "cap_add" not in kwargs


def test_notebook_dir_is_mounted_at_the_same_path_and_is_the_working_dir() -> None:
    kwargs = build_create_kwargs(plan(notebook_dir="/home/ada/project"))
    assert kwargs["volumes"]["/home/ada/project"] == {"bind": "/home/ada/project", "mode": "rw"}
    assert kwargs["working_dir"] == "/home/ada/project"


def test_home_is_a_named_volume_or_a_private_tmpfs() -> None:
    with_volume = build_create_kwargs(plan(home_volume="tfenv-home-x"))
    assert with_volume["volumes"]["tfenv-home-x"] == {"bind": CONTAINER_HOME, "mode": "rw"}
    assert with_volume["environment"]["HOME"] == CONTAINER_HOME
    without = build_create_kwargs(plan(home_volume=""))
    assert without["tmpfs"] == {CONTAINER_HOME: "uid=1000,gid=1000,mode=0700"}


def test_package_is_mounted_read_only_and_extends_the_image_pythonpath() -> None:
    kwargs = build_create_kwargs(plan(image_pythonpath="/opt/extra"))
    assert kwargs["volumes"][PACKAGE_DIR] == {
        "bind": f"{CONTAINER_LIB_DIR}/jupyter_tfenv",
        "mode": "ro",
    }
    assert kwargs["environment"]["PYTHONPATH"] == f"/opt/extra:{CONTAINER_LIB_DIR}"


def test_gpu_requests_and_resource_limits_pass_through() -> None:
    request = parse_gpus("device=0,GPU-3a5c1f2e")
    kwargs = build_create_kwargs(
        plan(
            device_requests=request.device_requests(),
            gpus_label=request.describe(),
            mem_limit="8g",
            nano_cpus=1_500_000_000,
            shm_size="2g",
        )
    )
    [device_request] = kwargs["device_requests"]
    assert device_request["DeviceIDs"] == ["0", "GPU-3a5c1f2e"]
    assert device_request["Capabilities"] == [["gpu"]]
    assert kwargs["labels"]["org.jupyter-tfenv.gpus"] == "device=0,GPU-3a5c1f2e"
    assert (kwargs["mem_limit"], kwargs["nano_cpus"], kwargs["shm_size"]) == (
        "8g",
        1_500_000_000,
        "2g",
    )


def test_published_ports_reads_loopback_bindings_only() -> None:
    attrs = {
        "NetworkSettings": {
            "Ports": {
                f"{port}/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(49000 + port)}]
                for port in CONTAINER_PORTS.values()
            }
        }
    }
    assert published_ports(attrs)["shell_port"] == 49000 + 5555
    attrs["NetworkSettings"]["Ports"]["5555/tcp"] = [{"HostIp": "0.0.0.0", "HostPort": "1"}]
    assert "shell_port" not in published_ports(attrs)


def test_exit_description_names_oom_and_the_log_tail() -> None:
    text = describe_exit(
        {"State": {"ExitCode": 137, "OOMKilled": True}, "HostConfig": {"Memory": 256 << 20}},
        "Epoch 1/5\nKilled\n",
    )
    assert "exited with code 137" in text
    assert "ran out of memory" in text and "256 MiB" in text
    assert text.endswith("Epoch 1/5\nKilled")


# -- settings validation --------------------------------------------------------------------


def spec() -> KernelSpec:
    return KernelSpec(argv=["x"], display_name="t", language="python")


@pytest.mark.parametrize(
    ("setting", "value", "expected"),
    [
        ("gpus", "two", "Invalid GPU spec 'two'"),
        ("gpus", "device=0,x y", "neither a GPU index"),
        ("gpus", -3, "cannot be negative"),
        ("mem_limit", "lots", "Invalid mem_limit 'lots'"),
        ("mem_limit", "-1g", "Invalid mem_limit"),
        ("shm_size", "1 gig", "Invalid shm_size"),
        ("cpus", -1, "Invalid cpus"),
        ("cpus", 10_000, "this machine has"),
        ("container_user", "ada", "Invalid container_user 'ada'"),
        ("image", "--privileged", "looks like a command-line option"),
        ("image", "tf;rm -rf /", "cannot appear in an image name"),
        ("network", "bridge", "network"),
    ],
)
def test_bad_settings_are_refused_with_the_value_named(
    setting: str, value: Any, expected: str
) -> None:
    with pytest.raises(TraitError, match=expected.replace("(", r"\(")):
        DockerProvisioner(kernel_id="k", kernel_spec=spec(), **{setting: value})


def test_unknown_kernelspec_settings_are_named_with_a_suggestion() -> None:
    with pytest.raises(ValueError, match=r"'mem_limt' \(did you mean 'mem_limit'\?\)"):
        DockerProvisioner(kernel_id="k", kernel_spec=spec(), mem_limt="8g")


def test_container_env_passes_only_the_allowlist_kernelspec_env_and_our_own() -> None:
    kernel_spec = KernelSpec(
        argv=["x"], display_name="t", language="python", env={"DATA": "${HOME}/data"}
    )
    provisioner = DockerProvisioner(
        kernel_id="k1", kernel_spec=kernel_spec, image="img:1", env={"EXTRA": "1"}
    )
    server_env = {
        "HOME": "/home/ada",
        "JUPYTER_TOKEN": "secret-token",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "JPY_SESSION_NAME": "/home/ada/nb.ipynb",
    }
    env = provisioner.container_env(server_env)
    assert env["DATA"] == "/home/ada/data"
    assert env["TF_CPP_MIN_LOG_LEVEL"] == "2"
    assert env["EXTRA"] == "1"
    assert env["TFENV_IMAGE"] == "img:1"
    assert env["JPY_SESSION_NAME"] == "/home/ada/nb.ipynb"
    assert "JUPYTER_TOKEN" not in env
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert not any("secret" in value for value in env.values())


@pytest.mark.parametrize(
    "docker_host", ["", "unix:///var/run/docker.sock", "tcp://127.0.0.1:2375", "ssh://me@localhost"]
)
def test_local_engines_are_accepted(docker_host: str) -> None:
    check_engine_is_local(docker_host)


@pytest.mark.parametrize("docker_host", ["ssh://me@gpu-box", "tcp://10.1.2.3:2376"])
def test_remote_engines_are_refused_at_once_with_the_reason(docker_host: str) -> None:
    with pytest.raises(KernelContainerError, match="on another machine"):
        check_engine_is_local(docker_host)


@pytest.mark.parametrize(
    "path",
    ["/", "/etc", "/etc/ssh", "/run", "/var/run", "/var/lib/docker/volumes", "/proc/1", "/usr"],
)
def test_system_folders_are_never_mounted(path: str) -> None:
    with pytest.raises(UnsafeMountError, match="Refusing to mount"):
        check_mountable(path)


@pytest.mark.parametrize("path", ["/home/ada/project", "/root", "/tmp/work", "/srv/notebooks"])
def test_project_folders_are_mounted(path: str) -> None:
    check_mountable(path)


def test_the_notebook_dir_never_leaves_the_server_root(tmp_path: Any) -> None:
    """jupyter_server builds cwd from the notebook path without resolving '..'."""

    from jupyter_client.manager import KernelManager
    from traitlets.config import LoggingConfigurable

    class Server(LoggingConfigurable):  # type: ignore[misc]
        root_dir = str(tmp_path)

    manager = KernelManager(parent=Server())
    provisioner = DockerProvisioner(
        kernel_id="k", kernel_spec=spec(), image="img:1", parent=manager
    )
    (tmp_path / "sub").mkdir()
    assert provisioner._notebook_dir(str(tmp_path / "sub")) == str(tmp_path / "sub")
    assert provisioner._notebook_dir(f"{tmp_path}/sub/../../../../run") == str(tmp_path)
    assert provisioner._notebook_dir(None) == str(tmp_path)


def test_oversized_image_names_are_cut_short_in_the_message() -> None:
    with pytest.raises(TraitError, match=r"at most 255 characters") as caught:
        DockerProvisioner(kernel_id="k", kernel_spec=spec(), image="a" * 100_000)
    assert len(str(caught.value)) < 600


def test_mem_limit_below_dockers_minimum_is_refused_with_it() -> None:
    with pytest.raises(TraitError, match="smallest memory limit is 6m"):
        DockerProvisioner(kernel_id="k", kernel_spec=spec(), mem_limit="1k")


def test_home_volume_is_per_jupyter_user_and_kernelspec(tmp_path: Any) -> None:
    import os

    provisioner = DockerProvisioner(kernel_id="k", kernel_spec=spec(), image="img:1")
    provisioner._run_dir = tmp_path
    plan = provisioner.container_plan(["python3"], {"env": {}})
    assert plan.home_volume == f"tfenv-home-{os.getuid()}-tfenv"
