"""GPU specs, as users write them, turned into Docker device requests.

The accepted forms follow the ``docker run --gpus`` flag, so nothing new has to be learnt:

- ``"none"``, ``""``, ``0`` or ``None``: no GPU (a CPU kernel);
- ``"all"`` or ``-1``: every GPU of the engine;
- a positive count, ``2`` or ``"2"``: that many GPUs, chosen by the engine;
- ``"device=0,1"``, ``"device=GPU-3a5c..."`` or a list ``["0", "GPU-3a5c..."]``: those GPUs, by
  index or UUID (``GPU-...``/``MIG-...``), as ``nvidia-smi -L`` prints them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from docker.types import DeviceRequest

_DEVICE_ID = re.compile(r"^(\d+|(GPU|MIG)-[0-9A-Za-z][0-9A-Za-z/-]*)$")

GPU_SPEC_HELP = (
    'Accepted GPU specs: "none" (CPU only), "all", a count such as 1 or "2", '
    '"device=0,1" or "device=GPU-<uuid>" (ids as `nvidia-smi -L` prints them), '
    "or a list of such ids."
)


@dataclass(frozen=True)
class GpuRequest:
    """What the user asked for: a count (-1 for all) or explicit device ids."""

    count: int = 0
    device_ids: tuple[str, ...] = ()

    @property
    def wants_gpu(self) -> bool:
        return self.count != 0 or bool(self.device_ids)

    def describe(self) -> str:
        """Short text for labels and display names: "none", "all", "2" or "device=0,1"."""
        if self.device_ids:
            return "device=" + ",".join(self.device_ids)
        if self.count == -1:
            return "all"
        return str(self.count) if self.count else "none"

    def device_requests(self) -> list[DeviceRequest]:
        """The ``device_requests`` argument of ``containers.create``."""
        if self.device_ids:
            return [DeviceRequest(device_ids=list(self.device_ids), capabilities=[["gpu"]])]
        if self.count:
            return [DeviceRequest(count=self.count, capabilities=[["gpu"]])]
        return []


def _bad(value: Any, why: str) -> ValueError:
    return ValueError(f"Invalid GPU spec {value!r}: {why}. {GPU_SPEC_HELP}")


def _parse_ids(value: Any, ids: list[str]) -> GpuRequest:
    cleaned = [item.strip() for item in ids]
    if not cleaned or any(not item for item in cleaned):
        raise _bad(value, "an empty device id")
    for item in cleaned:
        if not _DEVICE_ID.match(item):
            raise _bad(value, f"{item!r} is neither a GPU index nor a GPU-/MIG- UUID")
    if len(set(cleaned)) != len(cleaned):
        raise _bad(value, "a device id is listed twice")
    return GpuRequest(device_ids=tuple(cleaned))


def parse_gpus(value: Any) -> GpuRequest:
    """Parse a GPU spec (see the module doc); raise ValueError naming the bad value."""
    if value is None or value is False:
        return GpuRequest()
    if isinstance(value, bool):
        raise _bad(value, 'true is ambiguous; write "all" or a count')
    if isinstance(value, int):
        if value == -1:
            return GpuRequest(count=-1)
        if value < 0:
            raise _bad(value, 'a count cannot be negative (use -1 or "all" for every GPU)')
        return GpuRequest(count=value)
    if isinstance(value, (list, tuple)):
        if not all(isinstance(item, (str, int)) and not isinstance(item, bool) for item in value):
            raise _bad(value, "list items must be GPU indexes or UUIDs")
        if not value:
            return GpuRequest()
        return _parse_ids(value, [str(item) for item in value])
    if not isinstance(value, str):
        raise _bad(value, f"a {type(value).__name__} is not a GPU spec")
    text = value.strip()
    lowered = text.lower()
    if lowered in ("", "none", "cpu"):
        return GpuRequest()
    if lowered == "all":
        return GpuRequest(count=-1)
    if re.fullmatch(r"-?\d+", text):
        return parse_gpus(int(text))
    if lowered.startswith("device="):
        return _parse_ids(value, text.split("=", 1)[1].split(","))
    raise _bad(value, 'not a count, "all", "none" or "device=..."')


def is_gpu_driver_error(message: str) -> bool:
    """True when an engine error says it has no GPU device driver (no NVIDIA toolkit)."""
    return "could not select device driver" in message and "gpu" in message
