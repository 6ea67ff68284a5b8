"""The logit lens: decode any layer with the model's own final norm and unembedding."""

from __future__ import annotations

from torch import Tensor

from lensmap.lenses.base import HeadInputs, plain_linear
from lensmap.models.handle import ModelHandle, execution_device
from lensmap.models.selfcheck import check_last_layer_lens  # noqa: F401  (lensmap.lenses.logit.check_last_layer_lens)


class LogitLens:
    """``logits = unembed(final_norm(h))`` (then the model's soft-cap, if it has one).

    Uses the model's own modules, so tied embeddings, Gemma's ``(1 + w)`` RMSNorm and the
    LayerNorms of BLOOM and GPT-2 are all exactly what the model itself runs.
    """

    name = "logit"

    def __init__(self, handle: ModelHandle):
        self.handle = handle

    def decode(self, hidden: Tensor, layer: int | None = None) -> Tensor:
        """``[..., d_model]`` → ``[..., vocab]`` logits (``layer`` is ignored by this lens)."""
        return self.handle.head(hidden)

    def head_inputs(self, hidden: Tensor, layer: int | None = None) -> HeadInputs | None:
        """``[rows, d_model]`` → the normed rows and the unembedding, so the reduction can tile
        the vocabulary itself (:mod:`lensmap.metrics.fused`); None when the unembedding is not a
        plain linear layer (then callers use :meth:`decode`)."""
        return head_inputs(self.handle, hidden)


def head_inputs(handle: ModelHandle, hidden: Tensor) -> HeadInputs | None:
    """``handle.head(hidden)`` split into ``final_norm(hidden)`` and the linear read-out after it."""
    unembed = handle.unembed
    if not plain_linear(unembed):
        return None
    normed = handle.final_norm(hidden.to(execution_device(handle.final_norm))).to(unembed.weight.device)
    return HeadInputs(normed, unembed.weight, unembed.bias, handle.logit_softcap)
