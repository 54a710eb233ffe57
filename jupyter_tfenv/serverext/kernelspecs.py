"""A kernelspec manager that adds one kernel per local TensorFlow image to the installed ones.

Enabled by the config jupyter-tfenv installs (``ServerApp.kernel_spec_manager_class``). The
dynamic kernelspecs are files the server extension's image catalog writes into a private
directory; this manager lists that directory after every installed one, so an installed
kernelspec of the same name wins, and asks the catalog to refresh when its list is old.
"""

from __future__ import annotations

from typing import Any

from jupyter_client.kernelspec import KernelSpecManager
from traitlets import Bool

from .catalog import list_kernel_names


class TfenvKernelSpecManager(KernelSpecManager):  # type: ignore[misc]
    """Installed kernelspecs plus "TensorFlow X.Y.Z (Docker CPU/GPU)" for each local image."""

    dynamic_kernelspecs = Bool(
        True,
        config=True,
        help="""Offer every local TensorFlow image as a kernel (CPU, and GPU where the engine
        serves GPUs), without `jupyter tfenv install`. Needs the jupyter_tfenv server extension,
        which keeps the list current. False: installed kernelspecs only.""",
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._dynamic_dir: str | None = None
        self._catalog: Any = None

    def attach_catalog(self, catalog: Any, directory: str) -> None:
        """Called by the server extension: list ``directory`` last, refresh through ``catalog``."""
        if not self.dynamic_kernelspecs:
            return
        self._catalog = catalog
        self._dynamic_dir = directory
        if directory not in self.kernel_dirs:
            self.kernel_dirs = [*self.kernel_dirs, directory]

    def installed_kernel_names(self) -> set[str]:
        """Names of the kernelspecs found outside the dynamic directory."""
        return list_kernel_names([d for d in self.kernel_dirs if d != self._dynamic_dir])

    def find_kernel_specs(self) -> dict[str, str]:
        """Installed kernelspecs first, then the dynamic ones; a stale list is refreshed soon."""
        if self._catalog is not None:
            self._catalog.touch()
        specs: dict[str, str] = super().find_kernel_specs()
        return specs
