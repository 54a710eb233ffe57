"""The prebuilt JupyterLab extension shipped in the Python package is complete and current."""

from __future__ import annotations

import json
from pathlib import Path

import jupyter_tfenv

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCE = REPO_ROOT / "labextension"
BUILT = Path(jupyter_tfenv.__file__).parent / "labextension"


def test_labextension_path_points_at_the_built_extension() -> None:
    [entry] = jupyter_tfenv._jupyter_labextension_paths()
    assert entry["dest"] == "jupyter-tfenv"
    assert (Path(jupyter_tfenv.__file__).parent / entry["src"]) == BUILT
    built = json.loads((BUILT / "package.json").read_text())
    assert built["name"] == "jupyter-tfenv"
    assert (BUILT / built["jupyterlab"]["_build"]["load"]).is_file()


def test_versions_agree_so_the_front_end_check_passes() -> None:
    source = json.loads((SOURCE / "package.json").read_text())
    built = json.loads((BUILT / "package.json").read_text())
    assert source["version"] == jupyter_tfenv.__version__
    assert built["version"] == jupyter_tfenv.__version__, (
        "jupyter_tfenv/labextension is stale: run scripts/build_labextension.sh"
    )


def test_menu_schema_is_shipped() -> None:
    schema = json.loads((BUILT / "schemas" / "jupyter-tfenv" / "plugin.json").read_text())
    [menu] = schema["jupyter.lab.menus"]["main"]
    assert menu["label"] == "TensorFlow"
    assert [item.get("command") for item in menu["items"]] == [
        "tfenv:switch",
        None,
        "tfenv:use-cpu",
        "tfenv:use-gpu",
    ]


def test_widget_base_is_shared_with_jupyterlab_widgets() -> None:
    # A bundled copy would register the switcher with a registry nobody reads.
    source = json.loads((SOURCE / "package.json").read_text())
    shared = source["jupyterlab"]["sharedPackages"]["@jupyter-widgets/base"]
    assert shared == {"bundled": False, "singleton": True}


def test_offline_build_setup_is_committed() -> None:
    source = json.loads((SOURCE / "package.json").read_text())
    assert "@jupyterlab/core-meta" in source["devDependencies"]
    assert "@jupyterlab/builder" in source["devDependencies"]
    assert "nodeLinker: node-modules" in (SOURCE / ".yarnrc.yml").read_text()
    assert (SOURCE / "yarn.lock").stat().st_size > 0
