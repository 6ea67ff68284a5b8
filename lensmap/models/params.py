"""Parameter counts and names of decoder blocks (tied weights counted once)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from lensmap.models.handle import ModelHandle


def layer_prefixes(handle: ModelHandle, layers: Sequence[int]) -> list[str]:
    """Parameter-name prefixes of decoder blocks ``layers`` (e.g. ``model.layers.3.``)."""
    return [f"{handle.adapter.layers}.{int(i)}." for i in sorted(set(layers))]


def matches(name: str, prefixes: Sequence[str]) -> bool:
    """True when parameter ``name`` lies under one of ``prefixes`` (the prefix ``""`` matches every name)."""
    return any(name.startswith(prefix) or name == prefix.rstrip(".") for prefix in prefixes)


def count_parameters(model: nn.Module, prefixes: Sequence[str] | None = None) -> int:
    """Elements of the (unique) parameters whose names match ``prefixes`` (all when None)."""
    return sum(p.numel() for name, p in model.named_parameters() if prefixes is None or matches(name, prefixes))


def block_parameters(handle: ModelHandle) -> list[int]:
    """Parameters of each decoder block, in order."""
    return [sum(p.numel() for p in block.parameters()) for block in handle.blocks]
