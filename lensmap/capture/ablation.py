"""Layer interventions in scoped hooks, and the cached forward pass a sweep replays.

An :class:`Intervention` names what happens to a set of decoder blocks:

* ``skip`` — the block returns its input (identity on the residual stream);
* ``zero`` / ``mean`` — the output of the block's attention or MLP sub-module (``part``) is
  replaced by zeros or by its mean over a reference text (:func:`part_means`), so the block
  adds nothing, or only its average contribution, to the residual stream;
* ``revert`` — the block's weights are swapped for another checkpoint's (:class:`RevertSource`,
  e.g. the base model's values of the tensors a ``lensmap sft`` delta changed) for the block.

:func:`intervene` applies one for a ``with`` block through :func:`~lensmap.capture.hooks.scoped_hooks`
(removed on exit and on error; swapped weights are put back in a ``finally``), so it works for
any forward pass, including ``generate``.

Shared work: an intervention on blocks ``j..`` leaves everything below block ``j`` as it was.
:func:`cache_blocks` runs the model once and keeps, for every block, the hidden states it
received and the other arguments it was called with (masks, rotary position embeddings);
:func:`replay` then runs only blocks ``j..L-1`` from that cache. The output side of a skip
sweep needs no block at all: skipping the last ``k`` blocks leaves the residual of layer
``L - k``, so its logits are the logit lens there (:func:`intervened_residual`).

BLOOM's attention and MLP add the residual inside the sub-module, so ``zero`` / ``mean``
there would delete the residual stream too: they are refused for that family.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from lensmap.capture.hooks import hidden_entering, model_lock, preserved_state, scoped_hooks
from lensmap.capture.inputs import accepts_position_ids, position_ids_for
from lensmap.errors import LensmapError
from lensmap.models.handle import ModelHandle, block_output

KINDS = ("skip", "zero", "mean", "revert")
PARTS = ("block", "attention", "mlp")
RESIDUAL_INSIDE_PARTS = frozenset({"bloom"})  # families whose sub-modules add the residual themselves


@dataclass(frozen=True)
class RevertSource:
    """Another checkpoint's values of some parameters: ``{parameter name: tensor}`` (only those that differ).

    Built by :func:`revert_source_from_delta` from a ``lensmap sft`` delta (the base values of the
    tensors it changed), so reverting never needs a second full model in memory.
    """

    tensors: Mapping[str, Tensor]
    name: str = "other checkpoint"


@dataclass(frozen=True)
class Intervention:
    """What to do to which decoder blocks (0-based). ``blocks=()`` is the unchanged model."""

    kind: str
    blocks: tuple[int, ...] = ()
    part: str = "block"
    means: Mapping[tuple[int, str], Tensor] | None = field(default=None, compare=False, repr=False)
    source: RevertSource | None = field(default=None, compare=False, repr=False)

    @property
    def label(self) -> str:
        """``skip``, ``zero-mlp``, ``mean-attention``, ``revert``: the name written to sweep.csv."""
        return self.kind if self.part == "block" else f"{self.kind}-{self.part}"


def check_intervention(handle: ModelHandle, intervention: Intervention) -> None:
    """A clear error for an unknown kind or part, blocks out of range, or missing means / source."""
    kind, part = intervention.kind, intervention.part
    if kind not in KINDS:
        raise LensmapError(f"unknown intervention {kind!r}; choose from {', '.join(KINDS)}")
    if part not in PARTS:
        raise LensmapError(f"unknown part {part!r}; choose from {', '.join(PARTS)}")
    if kind in ("zero", "mean") and part == "block":
        raise LensmapError(f"{kind} ablation needs part: attention or part: mlp (use skip to remove a whole block)")
    if kind in ("skip", "revert") and part != "block":
        raise LensmapError(f"{kind} acts on whole blocks; leave part at 'block' (got {part!r})")
    if kind in ("zero", "mean") and handle.adapter.family in RESIDUAL_INSIDE_PARTS:
        raise LensmapError(f"{handle.adapter.family}'s attention and MLP add the residual stream inside the "
                           f"sub-module, so {kind} ablation would delete it; use skip or revert")
    bad = [b for b in intervention.blocks if not 0 <= b < handle.n_layers]
    if bad:
        raise LensmapError(f"blocks {bad} out of range: this model has blocks 0..{handle.n_layers - 1}")
    if kind == "mean":
        missing = [b for b in intervention.blocks if intervention.means is None or (b, part) not in intervention.means]
        if missing:
            raise LensmapError(f"mean ablation of blocks {missing} needs their {part} means: compute them with "
                               "lensmap.capture.ablation.part_means on a reference text")
    if kind == "revert" and intervention.source is None:
        raise LensmapError("revert needs a RevertSource (the other checkpoint's weights), e.g. "
                           "revert_source_from_delta(handle, DELTA_DIR)")


def _replace_first(output: object, value: Tensor) -> object:
    """``output`` with its hidden states (a Tensor, or a tuple's first item) replaced by ``value``."""
    if isinstance(output, Tensor):
        return value
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return type(output)((value, *output[1:]))
    raise LensmapError(f"unexpected sub-module output of type {type(output).__name__}")


def _skip_specs(handle: ModelHandle, blocks: Sequence[int]) -> list:
    """A pre-hook keeps what block ``b`` receives; its forward hook returns exactly that."""
    specs = []
    for b in blocks:
        seen: dict[str, Tensor] = {}

        def keep(module, args, kwargs, seen=seen):
            seen["hidden"] = hidden_entering(args, kwargs)

        def identity(module, args, output, seen=seen):
            return _replace_first(output, seen.pop("hidden"))

        specs += [(handle.blocks[b], "pre", keep), (handle.blocks[b], "forward", identity)]
    return specs


def _part_module(handle: ModelHandle, block: int, part: str):
    return handle.attention(block) if part == "attention" else handle.mlp(block)


def _ablate_specs(handle: ModelHandle, intervention: Intervention) -> list:
    specs = []
    for b in intervention.blocks:
        mean = intervention.means[(b, intervention.part)] if intervention.kind == "mean" else None

        def ablate(module, args, output, mean=mean):
            hidden = block_output(output)
            value = torch.zeros_like(hidden) if mean is None else mean.to(hidden.device, hidden.dtype).expand_as(hidden)
            return _replace_first(output, value)

        specs.append((_part_module(handle, b, intervention.part), "forward", ablate))
    return specs


def _block_prefixes(handle: ModelHandle, blocks: Sequence[int]) -> dict[int, str]:
    """Parameter-name prefix of each block, ``model.layers.3.``."""
    named = {id(m): name for name, m in handle.model.named_modules()}
    return {b: named[id(handle.blocks[b])] + "." for b in blocks}


@contextlib.contextmanager
def _swapped_weights(handle: ModelHandle, intervention: Intervention) -> Iterator[None]:
    """Copy the source's values into the blocks' parameters; copy the originals back on exit and on error."""
    prefixes = tuple(_block_prefixes(handle, intervention.blocks).values())
    params = dict(handle.model.named_parameters(remove_duplicate=False))
    chosen = {name: value for name, value in intervention.source.tensors.items() if name.startswith(prefixes)}
    unknown = [name for name in chosen if name not in params]
    if unknown:
        raise LensmapError(f"the revert source names parameters this model lacks: {unknown[:3]}")
    saved = {name: params[name].detach().clone() for name in chosen}
    try:
        with torch.no_grad():
            for name, value in chosen.items():
                params[name].copy_(value.to(params[name].device, params[name].dtype))
        yield
    finally:
        with torch.no_grad():
            for name, value in saved.items():
                params[name].copy_(value)


@contextlib.contextmanager
def intervene(handle: ModelHandle, intervention: Intervention) -> Iterator[None]:
    """Apply ``intervention`` to ``handle``'s model for the block; the model is unchanged afterwards."""
    check_intervention(handle, intervention)
    if not intervention.blocks:
        with scoped_hooks(handle.model, []):
            yield
        return
    if intervention.kind == "revert":
        with model_lock(handle.model), preserved_state(handle.model), _swapped_weights(handle, intervention):
            yield
        return
    specs = _skip_specs(handle, intervention.blocks) if intervention.kind == "skip" else _ablate_specs(handle, intervention)
    with scoped_hooks(handle.model, specs):
        yield


# --------------------------------------------------------------------------- mean outputs


def part_means(handle: ModelHandle, blocks: Sequence[int], part: str, input_ids: Tensor,
               attention_mask: Tensor) -> dict[tuple[int, str], Tensor]:
    """Mean ``[d_model]`` output of each block's ``part`` over the real tokens of a reference batch.

    ``input_ids`` / ``attention_mask``: ``[batch, seq]``; padding positions are left out of the mean.
    """
    if part not in ("attention", "mlp"):
        raise LensmapError(f"means are taken of part attention or mlp; got {part!r}")
    real = attention_mask.bool().to(handle.device)
    sums: dict[tuple[int, str], Tensor] = {}

    def make(b: int):
        def hook(module, args, output):
            sums[(b, part)] = block_output(output)[real].float().sum(dim=0)
        return hook

    specs = [(_part_module(handle, b, part), "forward", make(b)) for b in blocks]
    with scoped_hooks(handle.model, specs):
        _forward(handle, input_ids.to(handle.device), attention_mask.to(handle.device))
    missing = [b for b in blocks if (b, part) not in sums]
    if missing:
        raise LensmapError(f"the forward pass never reached the {part} of blocks {missing}")
    count = real.sum().clamp(min=1)
    return {key: value / count for key, value in sums.items()}


def _forward(handle: ModelHandle, input_ids: Tensor, attention_mask: Tensor) -> Any:
    kwargs: dict[str, Any] = {}
    if accepts_position_ids(handle.model):
        kwargs["position_ids"] = position_ids_for(attention_mask)
    handle.model.eval()
    with torch.no_grad():
        return handle.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs)


# --------------------------------------------------------------------------- cache and replay


@dataclass
class BlockCache:
    """One clean forward pass, kept per block so a sweep can replay from any block.

    Attributes:
        inputs: ``L + 1`` tensors ``[batch, seq, d_model]``: ``inputs[b]`` is the hidden state
            block ``b`` received (residual layer ``b``); ``inputs[L]`` the last block's output.
        calls: for each block, the other positional and keyword arguments it was called with.
        attention_mask: ``[batch, seq]`` of the batch.
    """

    inputs: list[Tensor]
    calls: list[tuple[tuple, dict]]
    attention_mask: Tensor

    @property
    def n_layers(self) -> int:
        return len(self.calls)


def cache_blocks(handle: ModelHandle, input_ids: Tensor, attention_mask: Tensor) -> BlockCache:
    """Run the unchanged model once on ``[batch, seq]`` inputs and keep every block's call."""
    n = handle.n_layers
    inputs: list[Tensor | None] = [None] * (n + 1)
    calls: list[tuple[tuple, dict] | None] = [None] * n

    def make_pre(b: int):
        def pre(module, args, kwargs):
            hidden = hidden_entering(args, kwargs)
            rest = args[1:] if args else ()
            other = {k: v for k, v in kwargs.items() if k != "hidden_states"}
            inputs[b], calls[b] = hidden.detach(), (rest, other)
        return pre

    def last(module, args, output):
        inputs[n] = block_output(output).detach()

    specs = [(block, "pre", make_pre(b)) for b, block in enumerate(handle.blocks)]
    specs.append((handle.blocks[n - 1], "forward", last))
    input_ids, attention_mask = input_ids.to(handle.device), attention_mask.to(handle.device)
    with scoped_hooks(handle.model, specs):
        _forward(handle, input_ids, attention_mask)
    if any(x is None for x in inputs):
        raise LensmapError("the forward pass did not reach every decoder block; cannot cache it")
    return BlockCache(inputs, calls, attention_mask)  # type: ignore[arg-type]


def replay(handle: ModelHandle, cache: BlockCache, start: int, hidden: Tensor | None = None) -> Tensor:
    """Run blocks ``start..L-1`` from the cache (or from ``hidden``); return the last block's output.

    Whatever hooks or swapped weights are active apply, exactly as in a full forward pass.
    Returns ``[batch, seq, d_model]`` before the final norm (``handle.head`` reads it out).
    """
    hidden = cache.inputs[start] if hidden is None else hidden
    handle.model.eval()
    with torch.no_grad():
        for b in range(start, cache.n_layers):
            rest, other = cache.calls[b]
            hidden = block_output(handle.blocks[b](hidden, *rest, **other))
    return hidden


def intervened_residual(handle: ModelHandle, cache: BlockCache, intervention: Intervention) -> Tensor:
    """The last residual ``[batch, seq, d_model]`` under ``intervention``, recomputing only what it changes.

    Blocks below the first intervened one are read from the cache. Skipping a prefix
    ``0..k-1`` starts the replay at block ``k`` from the embedding output; skipping a suffix
    ``L-k..L-1`` needs no block at all (the residual of layer ``L - k``).
    """
    check_intervention(handle, intervention)
    n, blocks = cache.n_layers, sorted(set(intervention.blocks))
    if not blocks:
        return cache.inputs[n]
    if intervention.kind == "skip":
        if blocks == list(range(blocks[0], n)):
            return cache.inputs[blocks[0]]
        if blocks == list(range(len(blocks))):
            return replay(handle, cache, len(blocks), hidden=cache.inputs[0])
    with intervene(handle, intervention):
        return replay(handle, cache, blocks[0])
