"""jupyter-tfenv: Jupyter kernels in TensorFlow Docker containers, CPU or GPU, per notebook."""

from __future__ import annotations

from typing import Any

from ._version import __version__

__all__ = ["__version__"]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext jupyter_tfenv`` (done automatically in tfenv kernels): the ``%tfenv`` magic."""
    from .kernel_ext import load_ipython_extension as load

    load(ipython)


def switcher() -> Any:
    """Show the image/device switcher widget in a notebook running on a tfenv kernel."""
    from .widget import switcher as show

    return show()


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    """Entry point jupyter_server uses to find the extension (enabled by an installed config)."""
    from .serverext.app import TfenvExtensionApp

    return [{"module": "jupyter_tfenv.serverext.app", "app": TfenvExtensionApp}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where JupyterLab finds the prebuilt front end shipped in this package."""
    return [{"src": "labextension", "dest": "jupyter-tfenv"}]
