"""IPython extension loaded in every tfenv kernel: the ``%tfenv`` magic.

The provisioner mounts this package into the kernel's container and loads it with
``--ext jupyter_tfenv``; ``jupyter_tfenv.load_ipython_extension`` lands here. Like
:mod:`jupyter_tfenv.widget`, it must import nothing beyond the standard library and IPython
at load time, because the image may have nothing else.
"""

from __future__ import annotations

from typing import Any

USAGE = "Usage: %tfenv  (shows which TensorFlow image this kernel runs in, and switches it)"


def tfenv_magic(line: str = "") -> None:
    """%tfenv: show the TensorFlow environment switcher below the cell."""
    if line.strip():
        print(f"%tfenv takes no arguments, got {line.strip()!r}. {USAGE}")
        return
    from .widget import switcher

    switcher()


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%tfenv``; called once per kernel by IPython's extension manager."""
    ipython.register_magic_function(tfenv_magic, magic_kind="line", magic_name="tfenv")
