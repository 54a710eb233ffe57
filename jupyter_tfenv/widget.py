"""The notebook's TensorFlow environment switcher, kernel side.

This module runs inside the kernel's container, in whatever image the user picked, so it uses
only the standard library, IPython and the kernel's comm machinery (the ``comm`` package, or
``ipykernel.comm`` on kernels older than ipykernel 6.18). It does not need ipywidgets: it speaks
the Jupyter widget comm protocol (version 2) itself for one custom model,
``TfenvSwitcherModel``, whose view the jupyter-tfenv JupyterLab extension draws. The view does
all the work (listing images, pulling, switching) through the server's REST API, so the kernel
only says which kernel it is and what it runs, and a container without network works too.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Callable
from typing import Any

from ._version import __version__

WIDGET_TARGET = "jupyter.widget"
# Widget message protocol spoken by ipywidgets 8 and JupyterLab's widget manager 5.
WIDGET_PROTOCOL_VERSION = "2.1.0"
VIEW_MIMETYPE = "application/vnd.jupyter.widget-view+json"
MODULE_NAME = "jupyter-tfenv"
# The switcher model's own version, independent of the package version: the front end
# registers 1.0.0, and any 1.x model state keeps working with it.
MODULE_VERSION = "^1.0.0"
MODEL_NAME = "TfenvSwitcherModel"
VIEW_NAME = "TfenvSwitcherView"
# jupyter-tfenv requires ipywidgets>=8 on the Jupyter server, so JupyterLab's widget manager
# there renders ipywidgets 8 models only.
HOST_IPYWIDGETS_MAJOR = 8
# Distributions that provide the `tensorflow` module, in the order images usually have them.
TENSORFLOW_DISTRIBUTIONS = (
    "tensorflow",
    "tensorflow-cpu",
    "tensorflow-gpu",
    "tf-nightly",
    "tf-nightly-cpu",
    "tensorflow-intel",
    "tensorflow-macos",
)


def _distribution_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def tensorflow_version() -> str | None:
    """TensorFlow's version in this kernel, read without importing it (that takes seconds)."""
    module = sys.modules.get("tensorflow")
    imported = getattr(module, "__version__", None)
    if isinstance(imported, str):
        return imported
    for name in TENSORFLOW_DISTRIBUTIONS:
        version = _distribution_version(name)
        if version:
            return version
    return None


def ipywidgets_version() -> str | None:
    """The image's ipywidgets version, or None when the image has none."""
    return _distribution_version("ipywidgets")


def widgets_compatibility_message(version: str | None) -> str | None:
    """What to tell the user when the image's ipywidgets cannot render in this JupyterLab.

    None when the image has no ipywidgets (nothing to break) or a compatible one.
    """
    if version is None:
        return None
    major_text = version.split(".", 1)[0]
    if major_text.isdigit() and int(major_text) == HOST_IPYWIDGETS_MAJOR:
        return None
    return (
        f"This image has ipywidgets {version}, but JupyterLab here renders ipywidgets "
        f"{HOST_IPYWIDGETS_MAJOR} widgets only: sliders, progress bars and other widgets made "
        "in this kernel will show an error instead of the widget. The TensorFlow switcher "
        f"below is not affected. To fix it, run %pip install 'ipywidgets>={HOST_IPYWIDGETS_MAJOR}'"
        " in this notebook (or add it to the image) and restart the kernel, or switch to a "
        "newer image."
    )


def environment_facts() -> dict[str, Any]:
    """What this kernel runs in, as the provisioner told it (TFENV_*) and as it can see."""
    return {
        "kernel_id": os.environ.get("TFENV_KERNEL_ID", ""),
        "image": os.environ.get("TFENV_IMAGE", ""),
        "gpus": os.environ.get("TFENV_GPUS", "none"),
        "tensorflow_version": tensorflow_version(),
        "python_version": platform.python_version(),
        "ipywidgets_version": ipywidgets_version(),
        "kernel_package_version": __version__,
    }


def describe_device(gpus: str) -> str:
    """Describe a TFENV_GPUS value: "CPU", "GPU (all)" or "GPU (device=0)"."""
    if gpus in ("", "none", "0"):
        return "CPU"
    return f"GPU ({gpus})"


def _comm_factory() -> Callable[..., Any]:
    """The kernel's way of opening a comm.

    ipykernel 6.18 and later install their own ``comm.create_comm``; the ``comm`` package's
    unpatched default only makes inert placeholders, so older kernels use ipykernel's Comm.
    """
    try:
        import comm
    except ImportError:
        pass
    else:
        create: Callable[..., Any] = comm.create_comm
        if getattr(create, "__module__", "comm") != "comm":
            return create
    from ipykernel.comm import Comm

    factory: Callable[..., Any] = Comm
    return factory


class TfenvSwitcher:
    """One switcher widget: a comm to the front end's model, shown by a widget-view output."""

    def __init__(self, facts: dict[str, Any] | None = None) -> None:
        self.facts = dict(facts if facts is not None else environment_facts())
        self.comm = _comm_factory()(
            target_name=WIDGET_TARGET,
            data={"state": self.state(), "buffer_paths": []},
            metadata={"version": WIDGET_PROTOCOL_VERSION},
        )
        self.comm.on_msg(self._handle_message)

    @property
    def model_id(self) -> str:
        return str(self.comm.comm_id)

    def state(self) -> dict[str, Any]:
        """The model state: the widget protocol's naming keys, then what this kernel runs."""
        return {
            "_model_module": MODULE_NAME,
            "_model_module_version": MODULE_VERSION,
            "_model_name": MODEL_NAME,
            "_view_module": MODULE_NAME,
            "_view_module_version": MODULE_VERSION,
            "_view_name": VIEW_NAME,
            "_view_count": None,
            "_dom_classes": [],
            "tabbable": None,
            "tooltip": None,
            **self.facts,
        }

    def summary(self) -> str:
        """The plain-text stand-in, for front ends that cannot draw the widget."""
        facts = self.facts
        tensorflow = facts.get("tensorflow_version") or "not installed"
        image = facts.get("image") or "an unknown image (not started by jupyter-tfenv)"
        return (
            f"TensorFlow {tensorflow} on {describe_device(str(facts.get('gpus', 'none')))} "
            f"in {image}. Open this notebook in JupyterLab with jupyter-tfenv installed to "
            "switch versions."
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        return {
            "text/plain": self.summary(),
            VIEW_MIMETYPE: {"version_major": 2, "version_minor": 1, "model_id": self.model_id},
        }

    def _handle_message(self, message: dict[str, Any]) -> None:
        data = message.get("content", {}).get("data", {})
        # A reloaded page asks every live widget for its state before drawing it again.
        if data.get("method") == "request_state":
            self.comm.send({"method": "update", "state": self.state(), "buffer_paths": []})

    def close(self) -> None:
        """Close the comm; the view then shows itself as disconnected."""
        self.comm.close()


def switcher() -> None:
    """Show the switcher in the notebook, first warning when the image's ipywidgets won't render.

    Called by ``jupyter_tfenv.switcher()`` and the ``%tfenv`` magic. It returns nothing, so a
    call at the end of a cell does not display the widget a second time.
    """
    from IPython.display import display

    widget = TfenvSwitcher()
    warning = widgets_compatibility_message(widget.facts.get("ipywidgets_version"))
    if warning:
        print(warning, file=sys.stderr)
    display(widget)  # type: ignore[no-untyped-call]
