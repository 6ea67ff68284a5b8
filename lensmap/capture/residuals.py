"""Residual-stream capture: one forward pass, the residual stream at the selected rows.

Only the selected positions are kept, so a capture costs ``[layers, selected rows, d_model]``,
never ``[layers, seq, d]``. Layer numbering: :func:`lensmap.models.handle.residual_site`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lensmap.capture.hooks import StopForward, residual_hooks
from lensmap.capture.inputs import PositionSpec, accepts_position_ids, position_ids_for, prepare_inputs
from lensmap.errors import LensmapError
from lensmap.models.handle import ModelHandle


@dataclass
class Residuals:
    """Residual-stream vectors at selected positions.

    Attributes:
        layers: the residual layer indices captured, in order.
        hidden: ``[len(layers), n_rows, d_model]`` vectors, in the model's dtype.
        rows: ``[n_rows, 2]`` long tensor of ``(batch index, token position)`` for each row,
            in row-major order (batch first, then position).
    """

    layers: list[int]
    hidden: Tensor
    rows: Tensor

    def layer(self, layer: int) -> Tensor:
        """``[n_rows, d_model]`` vectors of one residual layer."""
        return self.hidden[self.layers.index(layer)]


def run_forward(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, **kwargs) -> object | None:
    """Run the model in eval mode without gradients; return its output, or None if a hook stopped it.

    Position ids are derived from the attention mask when the model takes them (models with
    absolute position embeddings, such as GPT-2, would otherwise read left-padded rows at
    shifted positions).
    """
    model.eval()
    if "position_ids" not in kwargs and accepts_position_ids(model):
        kwargs["position_ids"] = position_ids_for(attention_mask)
    with torch.no_grad():
        try:
            return model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs)
        except StopForward:
            return None


def residuals_from(store: dict[int, Tensor], layers: list[int], mask: Tensor, device, backend: str = "native") -> Residuals:
    """Stack what the hooks stored into :class:`Residuals`; a layer the forward never reached is an error."""
    missing = [layer for layer in layers if layer not in store]
    if missing:
        raise LensmapError(f"the {backend} forward pass never reached residual layers {missing}")
    hidden = torch.stack([store[layer].to(device) for layer in layers])
    return Residuals(layers=layers, hidden=hidden, rows=mask.nonzero())


def capture_residuals(
    handle: ModelHandle,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    *,
    positions: PositionSpec = "last",
    layers: Sequence[int] | None = None,
) -> Residuals:
    """Run one forward pass and return the residual stream at the selected positions.

    Args:
        input_ids: ``[batch, seq]`` token ids (left or right padded).
        attention_mask: ``[batch, seq]``, 1 for real tokens; all ones if omitted.
        positions: ``"last"``, ``"all"`` or a bool ``[batch, seq]`` mask.
        layers: residual layers to keep (default all, ``0..n_layers``).
    """
    inputs = prepare_inputs(input_ids, attention_mask, positions=positions, layers=layers, n_layers=handle.n_layers,
                            device=handle.device, with_position_ids=False)
    with residual_hooks(handle, inputs.layers, inputs.mask, stop_after_last=True) as store:
        run_forward(handle.model, inputs.kwargs["input_ids"], inputs.kwargs["attention_mask"])
    return residuals_from(store, inputs.layers, inputs.mask, handle.device)
