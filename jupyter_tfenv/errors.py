"""The errors users see. Each message names the offending value and says how to fix it."""

from __future__ import annotations


class TfenvError(RuntimeError):
    """Base of every error jupyter-tfenv reports to users on purpose."""


class EngineUnavailableError(TfenvError):
    """No Docker engine answers, or this user may not use it."""


class ImageNotFoundError(TfenvError):
    """The image is not on the engine (and was not pulled)."""


class ImageNotKernelReadyError(TfenvError):
    """The image has Python but no ipykernel, so no kernel can start in it."""


class ImageWithoutPythonError(TfenvError):
    """The image has no Python interpreter on its PATH."""


class GpuUnavailableError(TfenvError):
    """GPUs were requested but the engine cannot serve them."""


class KernelContainerError(TfenvError):
    """The kernel's container could not be created or started."""


class EngineRefusedError(TfenvError):
    """The engine refused the container's settings (a client error): the user can fix them."""


class UnsafeMountError(TfenvError):
    """The notebook's folder is a system folder (or holds the Docker socket): not mounted."""
