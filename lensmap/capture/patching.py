"""Activation patching of the residual stream at one position (Dumas et al. 2024).

:func:`patched_residual` writes given vectors into the residual stream of residual layer
``layer`` at one position per row and returns the last residual, replaying only the blocks
above the patch from a :class:`~lensmap.capture.ablation.BlockCache`. :func:`patch_hooks` does
the same inside any forward pass, through scoped hooks. Layer numbering is
:func:`lensmap.models.handle.residual_site`'s: patching layer ``L`` replaces what the final
norm and unembedding read, so the patched row's logits are the source's exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

from lensmap.capture.ablation import BlockCache, _replace_first, replay
from lensmap.capture.hooks import hidden_entering, scoped_hooks
from lensmap.errors import LensmapError
from lensmap.models.handle import ModelHandle, block_output, residual_site


def _write(hidden: Tensor, positions: Tensor, vectors: Tensor) -> Tensor:
    """``hidden [batch, seq, d]`` with ``hidden[i, positions[i]] = vectors[i]`` (a copy)."""
    if vectors.shape != (hidden.shape[0], hidden.shape[2]) or positions.shape != (hidden.shape[0],):
        raise LensmapError(f"patching needs one position and one [d_model] vector per row; got positions "
                           f"{tuple(positions.shape)} and vectors {tuple(vectors.shape)} for hidden {tuple(hidden.shape)}")
    out = hidden.clone()
    out[torch.arange(hidden.shape[0], device=hidden.device), positions.to(hidden.device)] = vectors.to(hidden.device, hidden.dtype)
    return out


def patched_residual(handle: ModelHandle, cache: BlockCache, layer: int, positions: Tensor, vectors: Tensor) -> Tensor:
    """The last residual ``[batch, seq, d]`` after writing ``vectors [batch, d]`` at ``positions [batch]`` of ``layer``."""
    n = cache.n_layers
    if not 0 <= layer <= n:
        raise LensmapError(f"layer {layer} out of range: this model has residual layers 0..{n}")
    hidden = _write(cache.inputs[layer], positions, vectors)
    return hidden if layer == n else replay(handle, cache, layer, hidden=hidden)


@contextlib.contextmanager
def patch_hooks(handle: ModelHandle, layer: int, positions: Tensor, vectors: Tensor) -> Iterator[None]:
    """Within the block, every forward pass has ``vectors`` written at ``positions`` of residual ``layer``."""
    if not 0 <= layer <= handle.n_layers:
        raise LensmapError(f"layer {layer} out of range: this model has residual layers 0..{handle.n_layers}")
    block, site = residual_site(layer)
    if site == "input":
        def pre(module, args, kwargs):
            hidden = _write(hidden_entering(args, kwargs), positions, vectors)
            if args:
                return (hidden, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": hidden}
        spec = (handle.blocks[block], "pre", pre)
    else:
        def post(module, args, output):
            return _replace_first(output, _write(block_output(output), positions, vectors))
        spec = (handle.blocks[block], "forward", post)
    with scoped_hooks(handle.model, [spec]):
        yield
