"""The logit lens: decode any layer with the model's own final norm and unembedding."""

from __future__ import annotations

import torch
from torch import Tensor

from lensmap.errors import AdapterCheckError
from lensmap.models.handle import ModelHandle


class LogitLens:
    """``logits = unembed(final_norm(h))`` (then the model's soft-cap, if it has one).

    Uses the model's own modules, so tied embeddings, Gemma's ``(1 + w)`` RMSNorm and the
    LayerNorms of BLOOM and GPT-2 are all exactly what the model itself runs.
    """

    name = "logit"

    def __init__(self, handle: ModelHandle):
        self.handle = handle
        self._norm = handle.final_norm
        self._unembed = handle.unembed
        self._softcap = handle.logit_softcap

    def decode(self, hidden: Tensor, layer: int | None = None) -> Tensor:
        """``[..., d_model]`` → ``[..., vocab]`` logits (``layer`` is ignored by this lens)."""
        device = self._unembed.weight.device
        logits = self._unembed(self._norm(hidden.to(device)))
        if self._softcap is not None:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        return logits


def check_last_layer_lens(handle: ModelHandle, input_ids: Tensor | None = None) -> float:
    """Confirm that the logit lens of the last layer reproduces the model's own logits.

    Runs one forward pass over ``input_ids`` (``[batch, seq]``; a short fixed sequence by
    default) and returns the largest absolute difference. Raises AdapterCheckError when it is
    beyond the model dtype's tolerance, which means the adapter points at the wrong modules.
    """
    from lensmap.capture import residual_hooks, run_forward, select_positions

    if input_ids is None:
        vocab = min(handle.vocab_size, 1000)
        input_ids = (torch.arange(12).unsqueeze(0) * 37 + 11) % vocab
    input_ids = input_ids.to(handle.device)
    attention_mask = torch.ones_like(input_ids)
    mask = select_positions(attention_mask, "all")
    last = handle.n_layers
    with residual_hooks(handle, [last], mask) as store:
        output = run_forward(handle.model, input_ids, attention_mask)
        with torch.no_grad():
            lens_logits = LogitLens(handle).decode(store[last]).float()
    model_logits = output.logits[mask.to(output.logits.device)].float()
    diff = (lens_logits - model_logits.to(lens_logits.device)).abs().max().item()
    scale = model_logits.abs().max().item()
    tolerance = (1e-4 if handle.dtype == torch.float32 else 2e-2) * max(1.0, scale)
    if not diff <= tolerance:
        raise AdapterCheckError(
            f"self-check failed for {handle.name} ({handle.adapter.family} adapter): the logit lens of "
            f"the last layer differs from the model's logits by {diff:.3g} (tolerance {tolerance:.3g}). "
            "The adapter's final norm or unembedding path is wrong for this model, or the model was "
            "patched; fix the entry in lensmap.models.adapters.ADAPTERS."
        )
    return diff
