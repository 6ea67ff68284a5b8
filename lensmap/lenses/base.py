"""The small protocol every lens follows."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class Lens(Protocol):
    """Maps residual vectors of one layer to vocabulary logits.

    ``decode(hidden, layer)`` takes ``[..., d_model]`` vectors from residual layer ``layer``
    and returns ``[..., vocab]`` logits in the model's dtype (callers softmax in float32).
    """

    name: str

    def decode(self, hidden: Tensor, layer: int) -> Tensor: ...
