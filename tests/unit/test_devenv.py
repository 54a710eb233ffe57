"""scripts/devenv.py without an engine: the engine decision, run against a recording fake of
the machine, plus recipe hashes, mirror discovery and the GPU stand-in script."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

DEBIAN = frozenset({"debian"})


@dataclass
class FakeSystem:
    """The machine as devenv sees it; records every side effect."""

    probes: list[Any]
    root: bool = True
    ids: frozenset[str] = DEBIAN
    installed: dict[str, str] = field(default_factory=lambda: {"dockerd": "/usr/sbin/dockerd"})
    dockerds: list[Any] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    alive_dockerd_pids: set[int] = field(default_factory=set)
    exits: dict[int, int] = field(default_factory=dict)
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    clock: float = 0.0
    installs_engine: bool = True
    on_install: Any = None

    def probe(self, url: str, docker_host: str | None) -> Any:
        result = self.probes[0]
        if len(self.probes) > 1:
            self.probes.pop(0)
        return result

    def is_root(self) -> bool:
        return self.root

    def os_ids(self) -> frozenset[str]:
        return self.ids

    def which(self, name: str) -> str | None:
        return self.installed.get(name)

    def dockerd_processes(self) -> list[Any]:
        return list(self.dockerds)

    def pidfile_pid(self, path: str) -> int | None:
        text = self.files.get(path)
        return int(text) if text and text.strip().isdigit() else None

    def is_dockerd(self, pid: int) -> bool:
        return pid in self.alive_dockerd_pids

    def exists(self, path: str) -> bool:
        return path in self.files

    def remove(self, path: str) -> None:
        self.calls.append(("remove", path))
        del self.files[path]

    def run(self, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self.calls.append(("run", tuple(argv), env.get("DEBIAN_FRONTEND")))
        if list(argv[:2]) == ["apt-get", "install"] and self.installs_engine:
            self.installed["dockerd"] = "/usr/sbin/dockerd"
            if self.on_install:
                self.on_install(self)

    def spawn(self, argv: Sequence[str], env: Mapping[str, str], log_file: Path) -> int:
        self.calls.append(("spawn", tuple(argv), env["PATH"]))
        self.alive_dockerd_pids.add(4242)
        return 4242

    def exit_status(self, pid: int) -> int | None:
        return self.exits.get(pid)

    def write_text(self, path: Path, text: str, mode: int) -> None:
        self.calls.append(("write", str(path), mode))
        self.files[str(path)] = text

    def read_text(self, path: Path) -> str | None:
        return self.files.get(str(path))

    def sleep(self, seconds: float) -> None:
        self.clock += seconds

    def monotonic(self) -> float:
        return self.clock


def ok(devenv: ModuleType) -> Any:
    return devenv.Probe(True, version="20.10.24")


def absent(devenv: ModuleType) -> Any:
    return devenv.Probe(False, error_kind="absent", error="no socket")


def manager(devenv: ModuleType, system: FakeSystem) -> Any:
    return devenv.EngineManager(system=system, reporter=devenv.Reporter(stream=io.StringIO()))


def output_of(engine: Any) -> str:
    text: str = engine.reporter._stream.getvalue()
    return text


def spawns(system: FakeSystem) -> list[tuple[Any, ...]]:
    return [call for call in system.calls if call[0] == "spawn"]


def facts(devenv: ModuleType, **changes: Any) -> Any:
    base = devenv.EngineFacts(
        url="unix:///var/run/docker.sock",
        docker_host=None,
        probe=absent(devenv),
        is_root=True,
        os_ids=DEBIAN,
        dockerd_path="/usr/sbin/dockerd",
        dockerd_pids=(),
        pidfile_exists=False,
        own=None,
        gpu_standin=False,
    )
    return replace(base, **changes)


# -- the decision ---------------------------------------------------------------------------


def test_an_answering_engine_is_used_and_never_reconfigured(devenv: ModuleType) -> None:
    plan = devenv.decide_engine(
        facts(devenv, probe=ok(devenv), gpu_standin=True), devenv.EngineConfig()
    )

    assert plan.action == "use"
    assert "not started by devenv" in plan.message
    assert "GPU stand-in requested but not installed" in plan.message


def test_a_silent_remote_docker_host_fails_without_starting_anything(devenv: ModuleType) -> None:
    plan = devenv.decide_engine(
        facts(devenv, docker_host="tcp://127.0.0.1:2375", url="tcp://127.0.0.1:2375"),
        devenv.EngineConfig(),
    )

    assert plan.action == "fail"
    assert "DOCKER_HOST=tcp://127.0.0.1:2375 does not answer (no socket)" in plan.message
    assert "unset DOCKER_HOST" in plan.message


@pytest.mark.parametrize("host", ["unix:///var/run/docker.sock", "unix://var/run/docker.sock"])
def test_docker_host_naming_the_default_socket_counts_as_local(
    devenv: ModuleType, host: str
) -> None:
    plan = devenv.decide_engine(facts(devenv, docker_host=host), devenv.EngineConfig())

    assert plan.action == "start"


def test_permission_denied_says_which_permission_is_missing(devenv: ModuleType) -> None:
    denied = devenv.Probe(False, error_kind="permission", error="permission denied")
    plan = devenv.decide_engine(facts(devenv, probe=denied, is_root=False), devenv.EngineConfig())

    assert plan.action == "fail"
    assert "permission denied on /var/run/docker.sock" in plan.message
    assert "usermod -aG docker" in plan.message


def test_without_root_it_says_what_to_install(devenv: ModuleType) -> None:
    plan = devenv.decide_engine(
        facts(devenv, is_root=False, dockerd_path=None), devenv.EngineConfig()
    )

    assert plan.action == "fail"
    assert "install Docker Engine (Debian/Ubuntu: apt-get install docker.io" in plan.message
    assert "sudo make engine" in plan.message


def test_as_root_on_another_system_it_does_not_install(devenv: ModuleType) -> None:
    plan = devenv.decide_engine(
        facts(devenv, os_ids=frozenset({"fedora"}), dockerd_path=None), devenv.EngineConfig()
    )

    assert plan.action == "fail"
    assert "only on Debian or Ubuntu (this is fedora)" in plan.message


def test_as_root_on_ubuntu_without_dockerd_it_installs_then_starts(devenv: ModuleType) -> None:
    plan = devenv.decide_engine(
        facts(devenv, os_ids=frozenset({"ubuntu", "debian"}), dockerd_path=None),
        devenv.EngineConfig(),
    )

    assert (plan.action, plan.install, plan.remove_stale_pidfile) == ("start", True, False)
    assert "install docker.io and start dockerd" in plan.message


def test_a_stale_pidfile_is_removed_only_when_no_dockerd_runs(devenv: ModuleType) -> None:
    config = devenv.EngineConfig()
    stale = devenv.decide_engine(facts(devenv, pidfile_exists=True), config)
    running = devenv.decide_engine(facts(devenv, pidfile_exists=True, dockerd_pids=(77,)), config)

    assert (stale.action, stale.remove_stale_pidfile) == ("start", True)
    assert (running.action, running.remove_stale_pidfile) == ("wait", False)
    assert "pid 77" in running.message


def test_a_real_nvidia_hook_is_never_shadowed_by_the_standin(devenv: ModuleType) -> None:
    plan = devenv.decide_engine(
        facts(devenv, gpu_standin=True, real_nvidia_hook="/usr/bin/nvidia-container-runtime-hook"),
        devenv.EngineConfig(),
    )

    assert (plan.action, plan.with_standin) == ("start", False)
    assert "a real NVIDIA hook is installed" in plan.message


# -- the executor, on the fake machine --------------------------------------------------------


def test_install_start_with_standin_on_a_fresh_machine(devenv: ModuleType) -> None:
    system = FakeSystem(probes=[absent(devenv), absent(devenv), ok(devenv)], installed={})
    engine = manager(devenv, system)

    engine.ensure(gpu_standin=True)

    runs = [call[1] for call in system.calls if call[0] == "run"]
    assert runs == [("apt-get", "update"), ("apt-get", "install", "-y", "docker.io")]
    assert {call[2] for call in system.calls if call[0] == "run"} == {"noninteractive"}
    hook = "/usr/local/lib/tfenv-gpu-standin/nvidia-container-runtime-hook"
    assert ("write", hook, 0o755) in system.calls
    assert system.files[hook] == devenv.STANDIN_SCRIPT
    [spawn] = spawns(system)
    assert spawn[1] == ("/usr/sbin/dockerd",)
    assert spawn[2].startswith("/usr/local/lib/tfenv-gpu-standin:")
    state = json.loads(system.files["/run/jupyter-tfenv-devenv/dockerd.json"])
    assert (state["pid"], state["gpu_standin"]) == (4242, True)
    out = output_of(engine)
    assert "[devenv] apt-get update: done (" in out
    assert "started dockerd (pid 4242, with the GPU stand-in, Docker 20.10.24)" in out


def test_without_the_flag_dockerd_gets_no_standin(devenv: ModuleType) -> None:
    system = FakeSystem(probes=[absent(devenv), ok(devenv)])

    manager(devenv, system).ensure(gpu_standin=False)

    [spawn] = spawns(system)
    assert "tfenv-gpu-standin" not in spawn[2]
    assert not [call for call in system.calls if call[0] == "write" and "hook" in call[1]]


def test_stale_pidfile_is_removed_then_dockerd_starts(devenv: ModuleType) -> None:
    system = FakeSystem(probes=[absent(devenv), ok(devenv)], files={"/var/run/docker.pid": "999"})
    engine = manager(devenv, system)

    engine.ensure()

    assert system.calls.index(("remove", "/var/run/docker.pid")) < system.calls.index(
        spawns(system)[0]
    )
    assert "removed (it named pid 999, which is not a running dockerd)" in output_of(engine)


def test_pidfile_is_kept_when_a_dockerd_appears_before_removal(devenv: ModuleType) -> None:
    system = FakeSystem(probes=[absent(devenv)], files={"/var/run/docker.pid": "999"})
    engine = manager(devenv, system)
    plan = devenv.decide_engine(engine.gather(None, False), engine.config)
    system.alive_dockerd_pids.add(999)  # a dockerd started between the check and the removal

    with pytest.raises(devenv.DevenvError):
        engine._start(plan)

    assert "/var/run/docker.pid" in system.files
    assert spawns(system) == []
    assert "FAILED remove stale /var/run/docker.pid" in output_of(engine)


def test_a_running_dockerd_is_waited_for_never_replaced(devenv: ModuleType) -> None:
    running = devenv.DockerdProcess(pid=77, pidfile="/var/run/docker.pid")
    probes = [absent(devenv), absent(devenv), ok(devenv)]
    system = FakeSystem(probes=probes, dockerds=[running])
    engine = manager(devenv, system)

    engine.ensure()

    assert spawns(system) == []
    assert [call for call in system.calls if call[0] == "remove"] == []
    assert "engine answers now" in output_of(engine)


def test_a_dockerd_with_another_pidfile_does_not_block_the_start(devenv: ModuleType) -> None:
    private = devenv.DockerdProcess(pid=78, pidfile="/tmp/tfenv-pd-x/docker.pid")
    system = FakeSystem(probes=[absent(devenv), ok(devenv)], dockerds=[private])

    manager(devenv, system).ensure()

    assert len(spawns(system)) == 1


def test_a_dockerd_that_exits_at_start_shows_its_log(devenv: ModuleType) -> None:
    system = FakeSystem(
        probes=[absent(devenv)],
        exits={4242: 1},
        files={"/var/log/jupyter-tfenv-devenv/dockerd.log": 'level=fatal msg="boom"\n'},
    )
    engine = manager(devenv, system)

    with pytest.raises(devenv.DevenvError):
        engine.ensure()

    out = output_of(engine)
    assert "FAILED start dockerd" in out
    assert "dockerd (pid 4242) exited with status 1" in out
    assert 'level=fatal msg="boom"' in out


def test_an_engine_started_by_the_package_is_used_not_doubled(devenv: ModuleType) -> None:
    system = FakeSystem(probes=[absent(devenv), ok(devenv)], installed={})
    engine = manager(devenv, system)

    engine.ensure()

    assert spawns(system) == []
    assert "(started by the docker.io package)" in output_of(engine)


def test_an_engine_devenv_started_is_recognised(devenv: ModuleType) -> None:
    state = {
        "pid": 4242,
        "socket": "/var/run/docker.sock",
        "gpu_standin": False,
        "log_file": "/var/log/x.log",
        "started_at": 0.0,
    }
    system = FakeSystem(
        probes=[ok(devenv)],
        files={"/run/jupyter-tfenv-devenv/dockerd.json": json.dumps(state)},
        alive_dockerd_pids={4242},
    )
    engine = manager(devenv, system)

    engine.ensure(gpu_standin=True)

    out = output_of(engine)
    assert "started by devenv (pid 4242, without GPU stand-in" in out
    assert "scripts/devenv.py stop-engine" in out


def test_stop_engine_leaves_an_engine_it_did_not_start_alone(devenv: ModuleType) -> None:
    system = FakeSystem(probes=[ok(devenv)])

    message = manager(devenv, system).stop_own()

    assert "nothing stopped" in message
    assert system.calls == []


# -- smaller pieces ---------------------------------------------------------------------------


def test_standin_hook_reads_stdin_exits_zero_and_says_what_it_is(
    devenv: ModuleType, tmp_path: Path
) -> None:
    hook = tmp_path / "nvidia-container-runtime-hook"
    hook.write_text(devenv.STANDIN_SCRIPT)
    hook.chmod(0o755)

    done = subprocess.run([str(hook), "prestart"], input=b'{"ociVersion": "1.0.2"}', check=False)

    assert done.returncode == 0
    assert "TEST STAND-IN" in devenv.STANDIN_SCRIPT
    assert "NO GPU is used" in devenv.STANDIN_SCRIPT


def test_connection_errors_are_classified_through_their_causes(devenv: ModuleType) -> None:
    def chained(inner: BaseException) -> BaseException:
        try:
            try:
                raise inner
            except OSError as exc:
                raise RuntimeError("Error while fetching server API version") from exc
        except RuntimeError as outer:
            return outer

    assert devenv.classify_error(chained(FileNotFoundError(2, "x"))) == "absent"
    assert devenv.classify_error(chained(PermissionError(13, "x"))) == "permission"
    assert devenv.classify_error(chained(ConnectionRefusedError(111, "x"))) == "refused"
    assert (
        devenv.classify_error(
            RuntimeError("('Connection aborted.', PermissionError(13, 'Permission denied'))")
        )
        == "permission"
    )


def test_dockerd_pidfile_is_read_from_its_command_line(devenv: ModuleType) -> None:
    assert devenv.parse_dockerd_pidfile([]) == "/var/run/docker.pid"
    assert devenv.parse_dockerd_pidfile(["-H", "fd://", "--pidfile", "/x.pid"]) == "/x.pid"
    assert devenv.parse_dockerd_pidfile(["--pidfile=/y.pid"]) == "/y.pid"
    assert devenv.parse_dockerd_pidfile(["-p", "/z.pid"]) == "/z.pid"


def test_recipe_hash_follows_recipe_files_and_base_only(devenv: ModuleType, tmp_path: Path) -> None:
    recipes = tmp_path / "images"
    shutil.copytree(devenv.RECIPES_DIR, recipes)
    spec = devenv.IMAGES_BY_KEY["tf"]
    first = devenv.recipe_hash(spec, "base-1", recipes)

    assert devenv.recipe_hash(spec, "base-1", recipes) == first
    assert devenv.recipe_hash(spec, "base-2", recipes) != first
    (recipes / "tensorflow" / "host-ca-certificates.crt").unlink(missing_ok=True)
    dockerfile = recipes / "tensorflow" / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "\n# changed\n")
    assert devenv.recipe_hash(spec, "base-1", recipes) != first


def test_each_image_has_its_own_recipe_hash(devenv: ModuleType) -> None:
    hashes = devenv.all_recipe_hashes()

    assert list(hashes) == ["base", "kernel", "tf", "tf-jupyter", "tf-alt", "tf-alt-jupyter"]
    assert len(set(hashes.values())) == len(hashes)


def test_image_names_are_stable_and_official_mode_uses_official_tags(
    devenv: ModuleType,
) -> None:
    names = {spec.key: devenv.image_name(spec.key, "local") for spec in devenv.IMAGES}
    official = {spec.key: devenv.image_name(spec.key, "official") for spec in devenv.IMAGES}

    assert names == {
        "base": "jupyter-tfenv-test/debian:bookworm",
        "kernel": "jupyter-tfenv-test/kernel:py3.11",
        "tf": "jupyter-tfenv-test/tensorflow:2.21.0",
        "tf-jupyter": "jupyter-tfenv-test/tensorflow:2.21.0-jupyter",
        "tf-alt": "jupyter-tfenv-test/tensorflow:2.20.0",
        "tf-alt-jupyter": "jupyter-tfenv-test/tensorflow:2.20.0-jupyter",
    }
    assert official["tf-jupyter"] == "tensorflow/tensorflow:2.21.0-jupyter"
    assert official["tf-alt"] == "tensorflow/tensorflow:2.20.0"
    assert official["kernel"] == names["kernel"]


def test_images_mode_names_a_bad_value_and_the_choices(devenv: ModuleType) -> None:
    assert devenv.images_mode({}) == "local"
    assert devenv.images_mode({"TFENV_TEST_IMAGES": "Official"}) == "official"
    with pytest.raises(devenv.DevenvError) as raised:
        devenv.images_mode({"TFENV_TEST_IMAGES": "dockerhub"})

    message = str(raised.value)
    assert "TFENV_TEST_IMAGES='dockerhub'" in message
    assert "'local'" in message and "'official'" in message


def test_debian_mirror_comes_from_the_bookworm_deb822_stanza(
    devenv: ModuleType, tmp_path: Path
) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n"
        "# http://snapshot.debian.org/archive/debian/20250520T000000Z\n"
        "URIs: http://mirror.example/debian\n"
        "Suites: bookworm bookworm-updates\n"
        "Components: main\n"
        "\n"
        "Types: deb\n"
        "URIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\n"
    )

    assert devenv.debian_mirror({}, tmp_path) == "http://mirror.example/debian"
    assert devenv.debian_mirror({"TFENV_DEBIAN_MIRROR": "http://m/"}, tmp_path) == "http://m/"


def test_debian_mirror_falls_back_to_sources_list_then_default(
    devenv: ModuleType, tmp_path: Path
) -> None:
    (tmp_path / "sources.list").write_text(
        "deb [arch=amd64] http://old.example/debian bookworm main\n"
    )
    ubuntu = tmp_path / "ubuntu"
    (ubuntu / "sources.list.d").mkdir(parents=True)
    (ubuntu / "sources.list.d" / "ubuntu.sources").write_text(
        "Types: deb\nURIs: http://archive.ubuntu.com/ubuntu\nSuites: noble\n"
    )

    assert devenv.debian_mirror({}, tmp_path) == "http://old.example/debian"
    assert devenv.debian_mirror({}, ubuntu) == "http://deb.debian.org/debian"


def test_a_failing_step_says_which_one_and_why(devenv: ModuleType) -> None:
    stream = io.StringIO()
    reporter = devenv.Reporter(stream=stream)

    with reporter.step("first") as outcome:
        outcome.text = "fine"
    with pytest.raises(devenv.DevenvError), reporter.step("second"):
        raise devenv.DevenvError("the reason")

    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("[devenv] first: fine (") and lines[0].endswith(" s)")
    assert lines[1].startswith("[devenv] FAILED second (") and lines[1].endswith("): the reason")


def test_build_args_pass_proxies_and_index_but_nothing_else(devenv: ModuleType) -> None:
    environ = {"HTTPS_PROXY": "http://127.0.0.1:3128", "TFENV_PIP_INDEX_URL": "http://i/", "X": "y"}

    assert devenv.build_args_from_env(environ) == {
        "HTTPS_PROXY": "http://127.0.0.1:3128",
        "PIP_INDEX_URL": "http://i/",
    }


def test_run_label_env_is_exported_for_subprocesses(tfenv_run_label: str) -> None:
    assert os.environ["TFENV_TEST_RUN_LABEL"] == tfenv_run_label
    assert tfenv_run_label.startswith("pytest-")


class FakeImagesApi:
    """The slice of docker's low-level API that ImageBuilder uses for official tags."""

    def __init__(self, pull_events: list[dict[str, Any]]) -> None:
        self.pull_events = pull_events
        self.pulls: list[tuple[str, str]] = []

    def inspect_image(self, name: str) -> dict[str, Any]:
        import docker

        raise docker.errors.ImageNotFound(f"No such image: {name}")

    def pull(self, repository: str, tag: str, stream: bool, decode: bool) -> Any:
        assert (stream, decode) == (True, True)
        self.pulls.append((repository, tag))
        return iter(self.pull_events)


@dataclass
class FakeClient:
    api: FakeImagesApi


def test_official_mode_pulls_the_official_tag(devenv: ModuleType) -> None:
    events = [
        {"status": "Pulling from tensorflow/tensorflow", "id": "2.21.0"},
        {"status": "Pull complete", "id": "a1"},
        {"status": "Pull complete", "id": "b2"},
        {"status": "Status: Downloaded newer image for tensorflow/tensorflow:2.21.0"},
    ]
    client = FakeClient(FakeImagesApi(events))
    stream = io.StringIO()
    builder = devenv.ImageBuilder(client, devenv.Reporter(stream=stream), mode="official")

    name = builder.ensure("tf")

    assert name == "tensorflow/tensorflow:2.21.0"
    assert client.api.pulls == [("tensorflow/tensorflow", "2.21.0")]
    assert "pull tensorflow/tensorflow:2.21.0: pulled (2 layers) (" in stream.getvalue()


def test_a_failed_pull_says_how_to_do_without_a_registry(devenv: ModuleType) -> None:
    client = FakeClient(FakeImagesApi([{"error": "dial tcp: lookup registry-1.docker.io"}]))
    stream = io.StringIO()
    builder = devenv.ImageBuilder(client, devenv.Reporter(stream=stream), mode="official")

    with pytest.raises(devenv.DevenvError):
        builder.ensure("tf-jupyter")

    out = stream.getvalue()
    assert "FAILED pull tensorflow/tensorflow:2.21.0-jupyter" in out
    assert "lookup registry-1.docker.io" in out
    assert "unset TFENV_TEST_IMAGES" in out


def test_a_failed_build_names_the_dockerfile_step(devenv: ModuleType) -> None:
    events = [
        {"stream": "Step 1/3 : FROM base\n"},
        {"stream": "Step 2/3 : RUN pip install tensorflow-cpu==9.9\n"},
        {"stream": "ERROR: No matching distribution found for tensorflow-cpu==9.9\n"},
        {"error": "The command returned a non-zero code: 1", "errorDetail": {"message": "code 1"}},
    ]
    builder = devenv.ImageBuilder(FakeClient(FakeImagesApi([])), devenv.Reporter(io.StringIO()))

    with pytest.raises(devenv.DevenvError) as raised:
        builder._follow_build(iter(events))

    message = str(raised.value)
    assert "failed at 'Step 2/3 : RUN pip install tensorflow-cpu==9.9': code 1" in message
    assert "No matching distribution found" in message


def test_an_engine_the_package_is_still_starting_is_waited_for(devenv: ModuleType) -> None:
    def package_starts_dockerd(system: FakeSystem) -> None:
        # Without policy-rc.d, docker.io's postinst starts dockerd through its init script.
        system.dockerds.append(devenv.DockerdProcess(pid=55, pidfile="/var/run/docker.pid"))

    probes = [absent(devenv), absent(devenv), absent(devenv), ok(devenv)]
    system = FakeSystem(probes=probes, installed={}, on_install=package_starts_dockerd)
    engine = manager(devenv, system)

    engine.ensure()

    assert spawns(system) == []
    assert "(started by the docker.io package)" in output_of(engine)
