"""Residual-stream capture with scoped forward hooks.

Hooks live inside :func:`residual_hooks`, a context manager that removes exactly the
handles it registered, on normal exit and on error, and puts the model back as it came in
(train/eval mode, every parameter's ``requires_grad``). Only the selected positions are
kept, so a capture costs ``[layers, selected rows, d_model]``, never ``[layers, seq, d]``.

Layer numbering follows Hugging Face's ``hidden_states``: layer 0 is the residual stream
entering block 0 (taken with a forward *pre*-hook, so it is right for models that normalise
or add position embeddings before the first block), layer ``l >= 1`` is block ``l-1``'s output.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from lensmap.errors import LensmapError
from lensmap.models.handle import ModelHandle

PositionSpec = Literal["last", "all"] | Tensor


class _StopForward(Exception):
    """Raised by the last needed hook to skip the rest of the forward pass."""


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


@contextlib.contextmanager
def preserved_state(model: nn.Module) -> Iterator[None]:
    """Restore the model's train/eval mode of every module and each parameter's requires_grad on exit."""
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
        for param, flag in grads:
            param.requires_grad_(flag)


def _block_output(output: object) -> Tensor:
    # transformers 5 blocks return a Tensor (Qwen, Llama, GPT-2) or a tuple whose first item is
    # the hidden states (BLOOM). Anything else is a structure we do not understand.
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise LensmapError(f"unexpected decoder-block output of type {type(output).__name__}")


@contextlib.contextmanager
def residual_hooks(
    handle: ModelHandle,
    layers: Sequence[int],
    mask: Tensor,
    *,
    stop_after_last: bool = False,
) -> Iterator[dict[int, Tensor]]:
    """Register hooks that store ``hidden[mask]`` (``[n_rows, d_model]``) for each residual layer.

    Yields a dict that fills with ``{layer: tensor}`` as the forward pass runs. With
    ``stop_after_last`` the hook of the deepest requested layer aborts the forward pass (the
    caller must use :func:`run_forward`, which swallows that signal), skipping the final norm and
    the ``[seq, vocab]`` unembedding the analysis does not need.
    """
    n = handle.n_layers
    bad = [layer for layer in layers if not 0 <= layer <= n]
    if bad:
        raise LensmapError(f"layer indices {bad} out of range: this model has residual layers 0..{n}")
    wanted = sorted(set(layers))
    deepest = wanted[-1] if wanted else -1
    store: dict[int, Tensor] = {}
    blocks = handle.blocks
    handles: list[torch.utils.hooks.RemovableHandle] = []

    def keep(layer: int, hidden: Tensor) -> None:
        store[layer] = hidden[mask.to(hidden.device)].detach()
        if stop_after_last and layer == deepest:
            raise _StopForward

    def pre_hook(module, args, kwargs):
        hidden = args[0] if args else kwargs.get("hidden_states")
        if not isinstance(hidden, Tensor):
            raise LensmapError("could not find the hidden states entering the first decoder block")
        keep(0, hidden)

    def make_post_hook(layer: int):
        def post_hook(module, args, output):
            keep(layer, _block_output(output))
        return post_hook

    try:
        if 0 in wanted:
            handles.append(blocks[0].register_forward_pre_hook(pre_hook, with_kwargs=True))
        for layer in wanted:
            if layer >= 1:
                handles.append(blocks[layer - 1].register_forward_hook(make_post_hook(layer)))
        with preserved_state(handle.model):
            yield store
    finally:
        for h in handles:
            h.remove()


def position_ids_for(attention_mask: Tensor) -> Tensor:
    """``[batch, seq]`` positions counted over real tokens only, so left padding does not shift them."""
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)


def _accepts_position_ids(model: nn.Module) -> bool:
    return "position_ids" in inspect.signature(model.forward).parameters


def run_forward(model: nn.Module, input_ids: Tensor, attention_mask: Tensor) -> object | None:
    """Run the model in eval mode without gradients; return its output, or None if a hook stopped it.

    Position ids are derived from the attention mask (models with absolute position embeddings,
    such as GPT-2, would otherwise read left-padded rows at shifted positions).
    """
    model.eval()
    kwargs = {}
    if _accepts_position_ids(model):
        kwargs["position_ids"] = position_ids_for(attention_mask)
    with torch.no_grad():
        try:
            return model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs)
        except _StopForward:
            return None


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
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    device = handle.device
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    mask = select_positions(attention_mask, positions)
    layers = list(range(handle.n_layers + 1)) if layers is None else sorted(set(layers))
    with residual_hooks(handle, layers, mask, stop_after_last=True) as store:
        run_forward(handle.model, input_ids, attention_mask)
    missing = [layer for layer in layers if layer not in store]
    if missing:
        raise LensmapError(f"the forward pass never reached residual layers {missing}")
    hidden = torch.stack([store[layer].to(device) for layer in layers])
    return Residuals(layers=layers, hidden=hidden, rows=mask.nonzero())
