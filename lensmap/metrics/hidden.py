"""Lens + per-language mass on the caller's own tensors, of any leading shape.

For use inside your own hook or trace (TransformerLens, nnsight, plain PyTorch): nothing is
kept on the model and no hook is registered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from lensmap.errors import LensmapError
from lensmap.metrics.mass import Readout, read_layers


def read_hidden(
    lens: Any,
    hidden: Tensor,
    weights: Tensor,
    *,
    layer: int | None = None,
    layers: Sequence[int] | None = None,
    token_ids: Tensor | None = None,
    chunk_rows: int | None = None,
):
    """Lens + per-language mass on residual vectors of any leading shape.

    ``hidden`` is ``[..., d_model]`` from one residual layer (``layer``, e.g. a
    ``[batch, positions, d_model]`` activation read in your own hook or trace), or, with
    ``layers``, ``[len(layers), ..., d_model]``. Returns a :class:`lensmap.Readout` whose
    fields keep those leading dimensions: ``mass [..., columns]``, ``entropy [...]``,
    ``top_token [...]``, ``token_prob``/``token_rank [..., n_tokens]`` for ``token_ids``
    (``[..., n_tokens]``, -1 for none). Softmax in float32, chunked as in :func:`read_layers`;
    nothing is kept on the model and no hook is registered.
    """
    single = layers is None
    layers = [layer] if single else [int(x) for x in layers]
    if single:
        hidden = hidden.unsqueeze(0)
    elif hidden.shape[0] != len(layers):
        raise LensmapError(f"hidden has {hidden.shape[0]} layers on its first dimension but {len(layers)} "
                           "layer indices were given")
    if hidden.dim() < 2:
        raise LensmapError(f"hidden must be [..., d_model] (with a leading layer dimension when layers= is given); "
                           f"got shape {tuple(hidden.shape[1:] if single else hidden.shape)}")
    lead = tuple(hidden.shape[1:-1])
    flat = hidden.detach().reshape(len(layers), -1, hidden.shape[-1])
    ids = None if token_ids is None else token_ids.reshape(flat.shape[1], -1)
    out = read_layers(lens, flat, layers, weights, token_ids=ids, chunk_rows=chunk_rows)

    def shape(t: Tensor) -> Tensor:
        t = t.reshape(len(layers), *lead, *t.shape[2:])
        return t[0] if single else t

    return Readout(layers=layers, mass=shape(out.mass), entropy=shape(out.entropy),
                   token_prob=shape(out.token_prob), token_rank=shape(out.token_rank),
                   set_prob=shape(out.set_prob), top_token=shape(out.top_token))
