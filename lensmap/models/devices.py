"""Check a ``device`` / ``device_map`` against what this machine has, before loading anything."""

from __future__ import annotations

import re
from typing import Any

import torch

from lensmap.errors import DeviceError

__all__ = ["available_devices", "placement", "validate_device", "validate_device_map"]

#: ``device_map`` strings that ask accelerate to place the model on whatever is available.
PLACEMENT_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


def available_devices() -> list[str]:
    """The devices torch can use here: ``cpu``, then ``cuda:N`` for each GPU, ``mps``, ``xpu:N``."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        found += [f"xpu:{i}" for i in range(xpu.device_count())]
    return found


def _have() -> str:
    return "this machine has: " + ", ".join(available_devices())


def _why_no_cuda() -> str:
    if getattr(torch.version, "cuda", None) is None:
        return f"this torch ({torch.__version__}) is a CPU-only build"
    return "torch finds no CUDA GPU (driver missing, or CUDA_VISIBLE_DEVICES hides them)"


def validate_device(device: Any, device_map: Any = None) -> str:
    """Return ``device`` as a torch device string, or raise a DeviceError listing this machine's devices.

    Accepts ``cpu``, ``cuda``, ``cuda:N``, ``mps``, ``xpu:N`` (strings or ``torch.device``; an
    int N means ``cuda:N``; None means ``cpu``). Refuses names torch does not know (``gpu0``,
    ``GPU``), CUDA without a GPU, a GPU index beyond the last one, ``mps`` where it is not
    available, and ``meta`` (it holds no weights). ``device_map`` (passed to ``from_pretrained``
    to spread a model over devices) is checked too: see :func:`validate_device_map`.
    """
    if device_map is not None:
        validate_device_map(device_map)
    if device is None:
        return "cpu"
    if isinstance(device, bool):
        raise DeviceError(f"device must be a name such as 'cpu' or 'cuda:0', got {device!r}; {_have()}")
    if isinstance(device, int):
        device = f"cuda:{device}"
    text = str(device).strip()
    try:
        parsed = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        hint = ""
        match = re.fullmatch(r"(?:gpu|cuda|nvidia)\s*[:_-]?\s*(\d*)", text.lower())
        if match and text.lower() != "cuda":
            hint = f" For an NVIDIA GPU write cuda:{match.group(1) or 0}."
        raise DeviceError(
            f"device {text!r} is not a device name torch knows.{hint} Use one of the devices "
            f"{_have()} (e.g. device: cpu)"
        ) from None
    kind, index = parsed.type, parsed.index
    if kind == "cpu":
        return "cpu"
    if kind == "meta":
        raise DeviceError(f"device 'meta' holds no weights, so a model cannot be analysed there; {_have()}")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {text!r} needs a CUDA GPU, but {_why_no_cuda()}; {_have()}. "
                              "Use device: cpu")
        count = torch.cuda.device_count()
        if index is not None and index >= count:
            raise DeviceError(f"device {text!r} does not exist: there {'is' if count == 1 else 'are'} {count} "
                              f"GPU{'s' if count != 1 else ''} (cuda:0 to cuda:{count - 1}); {_have()}")
        return str(parsed)
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DeviceError(f"device 'mps' (Apple GPU) is not available here; {_have()}. Use device: cpu")
        return "mps"
    backend = getattr(torch, kind, None)
    is_available = getattr(backend, "is_available", None)
    if not callable(is_available) or not is_available():
        raise DeviceError(f"device {text!r} is not available on this machine; {_have()}")
    count = getattr(backend, "device_count", lambda: 1)()
    if index is not None and index >= count:
        raise DeviceError(f"device {text!r} does not exist ({count} {kind} device(s)); {_have()}")
    return str(parsed)


def placement(device_map: Any = None, max_memory: dict[Any, str] | None = None,
              offload_folder: str | None = None) -> dict[str, Any] | None:
    """The ``from_pretrained`` keywords that spread a model over devices, checked; None = one device.

    ``max_memory`` caps each device (``{"cuda:0": "20GiB", "cpu": "60GiB"}``; GPU names become
    the indices accelerate expects); what fits nowhere goes to ``disk``, which needs
    ``offload_folder``. Both only mean something with a ``device_map``.
    """
    if device_map is None or device_map == "":
        if max_memory or offload_folder:
            raise DeviceError("max_memory and offload_folder place a model over several devices, so they need a "
                              "device_map too (e.g. device_map: auto)")
        return None
    validate_device_map(device_map)
    kwargs: dict[str, Any] = {"device_map": device_map}
    if max_memory:
        caps: dict[Any, str] = {}
        for name, size in max_memory.items():
            if str(name) in ("cpu", "disk", "mps"):
                caps[str(name)] = size
                continue
            try:
                device = torch.device(validate_device(name))
            except DeviceError as error:
                raise DeviceError(f"max_memory entry {name!r}: {error}") from None
            caps[(device.index or 0) if device.type == "cuda" else str(device)] = size
        kwargs["max_memory"] = caps
    if offload_folder:
        kwargs["offload_folder"] = str(offload_folder)
    return kwargs


def validate_device_map(device_map: Any) -> None:
    """Check a ``device_map``: a placement strategy (``auto``, ``balanced``, ``balanced_low_0``,
    ``sequential``), one device, or ``{module: device}`` whose devices are ``cpu``, ``disk``, a GPU
    index or a device name this machine has."""
    if isinstance(device_map, str):
        if device_map in PLACEMENT_STRATEGIES:
            return
        validate_device(device_map)
        return
    if isinstance(device_map, (int, torch.device)):
        validate_device(device_map)
        return
    if isinstance(device_map, dict):
        for module, target in device_map.items():
            if target == "disk":
                continue
            try:
                validate_device(target)
            except DeviceError as error:
                raise DeviceError(f"device_map entry {module!r}: {error}") from None
        return
    raise DeviceError(f"device_map must be one of {', '.join(PLACEMENT_STRATEGIES)}, a device name or a "
                      f"{{module: device}} mapping; got {type(device_map).__name__} {device_map!r}")
