"""The logit lens: decode any layer with the model's own final norm and unembedding."""

from __future__ import annotations

from torch import Tensor

from lensmap.models.handle import ModelHandle
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
