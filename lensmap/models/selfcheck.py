"""The load-time self-check: the adapter's read-out of the last layer must be the model's own logits.

One forward pass over a short fixed sequence; a hook on the last decoder block keeps its
output, :meth:`~lensmap.models.handle.ModelHandle.head` decodes it (what the logit lens runs),
and the result is compared with the model's logits. A difference beyond the dtype's tolerance
means the adapter points at the wrong final norm or unembedding.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lensmap.errors import AdapterCheckError
from lensmap.models.handle import ModelHandle, block_output


def check_last_layer_lens(handle: ModelHandle, input_ids: Tensor | None = None) -> float:
    """Confirm that the logit lens of the last layer reproduces the model's own logits.

    Runs one forward pass over ``input_ids`` (``[batch, seq]``; a short fixed sequence by
    default) and returns the largest absolute difference. Raises AdapterCheckError when it is
    beyond the model dtype's tolerance, which means the adapter points at the wrong modules.
    """
    if input_ids is None:
        vocab = min(handle.vocab_size, 1000)
        input_ids = (torch.arange(12).unsqueeze(0) * 37 + 11) % vocab
    input_ids = input_ids.to(handle.device)
    model = handle.model
    kept: list[Tensor] = []
    hook = handle.blocks[-1].register_forward_hook(lambda module, args, output: kept.append(block_output(output)))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            output = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=False)
            lens_logits = handle.head(kept[-1]).float()
    finally:
        hook.remove()
        model.train(was_training)
    model_logits = output.logits.float().to(lens_logits.device)
    diff = (lens_logits - model_logits).abs().max().item()
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
