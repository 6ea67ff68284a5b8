"""The one input path of every capture: check the inputs, place them, pick the rows to keep.

Every backend and every hook-based reader goes through :func:`prepare_inputs`, so a bad mask,
a padded row without real tokens or an out-of-range layer gets the same clear error whatever
library runs the forward pass, and left padding never shifts position ids.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lensmap.errors import LensmapError

PositionSpec = Literal["last", "all"] | Tensor


def select_positions(attention_mask: Tensor, positions: PositionSpec = "last") -> Tensor:
    """Turn a position spec into a boolean ``[batch, seq]`` mask of the rows to keep.

    ``"last"`` keeps each sequence's last real token (works with left or right padding),
    ``"all"`` every real token, and a boolean ``[batch, seq]`` tensor exactly those positions
    (which must be real tokens, not padding).
    """
    real = attention_mask.bool()
    if isinstance(positions, Tensor):
        if positions.shape != real.shape or positions.dtype != torch.bool:
            raise LensmapError(
                f"a position mask must be a bool tensor of shape {tuple(real.shape)} (batch, seq); "
                f"got {positions.dtype} {tuple(positions.shape)}"
            )
        if (positions & ~real).any():
            raise LensmapError("the position mask selects padding tokens; select only real tokens")
        return positions
    if positions == "all":
        return real
    if positions == "last":
        if not real.any(dim=1).all():
            raise LensmapError("a sequence in the batch has no real tokens (its attention mask is all zero)")
        seq = real.shape[1]
        index = torch.arange(seq, device=real.device).expand_as(real)
        last = torch.where(real, index, torch.full_like(index, -1)).argmax(dim=1)
        mask = torch.zeros_like(real)
        mask[torch.arange(real.shape[0], device=real.device), last] = True
        return mask
    raise LensmapError(f"positions must be 'last', 'all' or a bool mask tensor; got {positions!r}")


def position_ids_for(attention_mask: Tensor) -> Tensor:
    """``[batch, seq]`` positions counted over real tokens only, so left padding does not shift them."""
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)


def accepts_position_ids(model: nn.Module) -> bool:
    """True when the model's ``forward`` takes ``position_ids``."""
    try:
        return "position_ids" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def check_layers(layers: Sequence[int] | None, n_layers: int) -> list[int]:
    """Sorted unique residual layers (default all, ``0..n_layers``); a clear error for bad ones."""
    if layers is None:
        return list(range(n_layers + 1))
    try:
        wanted = sorted({int(x) for x in layers})
    except (TypeError, ValueError):
        raise LensmapError(f"layers must be integers (residual layers 0..{n_layers}); got {layers!r}") from None
    bad = [layer for layer in wanted if not 0 <= layer <= n_layers]
    if bad:
        raise LensmapError(f"layer indices {bad} out of range: this model has residual layers 0..{n_layers}")
    if not wanted:
        raise LensmapError(f"no residual layers requested; give at least one of 0..{n_layers} (or layers=None for all)")
    return wanted


def check_batch(input_ids: Any, attention_mask: Any) -> tuple[Tensor, Tensor]:
    """``(input_ids, attention_mask)`` as ``[batch, seq]`` tensors; a clear error naming the expected shapes."""
    if not isinstance(input_ids, Tensor) or input_ids.dim() != 2 or input_ids.dtype in (torch.bool,) \
            or input_ids.is_floating_point():
        got = f"{input_ids.dtype} {tuple(input_ids.shape)}" if isinstance(input_ids, Tensor) else type(input_ids).__name__
        raise LensmapError(f"input_ids must be an integer tensor of shape [batch, seq]; got {got}")
    if attention_mask is None:
        return input_ids, torch.ones_like(input_ids)
    if not isinstance(attention_mask, Tensor) or attention_mask.shape != input_ids.shape:
        got = tuple(attention_mask.shape) if isinstance(attention_mask, Tensor) else type(attention_mask).__name__
        raise LensmapError(f"attention_mask must have the shape of input_ids, {tuple(input_ids.shape)} "
                           f"(batch, seq), with 1 for real tokens and 0 for padding; got {got}")
    if attention_mask.is_floating_point() and not ((attention_mask == 0) | (attention_mask == 1)).all():
        raise LensmapError("attention_mask must hold only 0 (padding) and 1 (real token)")
    return input_ids, attention_mask


@dataclass
class Inputs:
    """Checked inputs of one forward pass.

    Attributes:
        mask: ``[batch, seq]`` bool selection of the rows to keep.
        layers: sorted residual layers to read.
        kwargs: the forward call's keyword arguments: ``input_ids``, ``attention_mask``,
            ``use_cache=False`` and, when the model takes them, position ids counted over real
            tokens only (so left padding does not shift GPT-2's absolute positions).
    """

    mask: Tensor
    layers: list[int]
    kwargs: dict[str, Any]


def prepare_inputs(
    input_ids: Tensor,
    attention_mask: Tensor | None,
    *,
    positions: PositionSpec,
    layers: Sequence[int] | None,
    n_layers: int,
    device: Any,
    with_position_ids: bool,
) -> Inputs:
    """Check and place the inputs of a capture exactly as every backend does."""
    input_ids, attention_mask = check_batch(input_ids, attention_mask)
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    mask = select_positions(attention_mask, positions)
    kwargs: dict[str, Any] = dict(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    if with_position_ids:
        kwargs["position_ids"] = position_ids_for(attention_mask)
    return Inputs(mask, check_layers(layers, n_layers), kwargs)
