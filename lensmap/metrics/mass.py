"""Per-language probability mass, entropy and answer-token probabilities from lens logits.

Everything here streams, so memory never holds ``[layers × positions × vocab]``; softmax is
always computed in float32, whatever the model's dtype. Two paths give the same numbers:

* fused (:mod:`lensmap.metrics.fused`), for lenses with a linear read-out (``head_inputs``:
  the logit and tuned lenses): the unembedding is tiled over the vocabulary and every
  statistic is accumulated while a tile is in cache (online softmax);
* generic, for any other lens: a chunk of rows is decoded to ``[chunk, vocab]`` logits by
  ``lens.decode`` and reduced by :func:`reduce_logits`, the reference definition of every
  statistic, then dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lensmap.lenses.base import Lens
from lensmap.metrics.fused import ROW_BLOCK, ColumnMap, fused_read
from lensmap.metrics.reference import TokenSets, reduce_logits

__all__ = ["CHUNK_BYTES", "Readout", "TokenSets", "default_chunk_rows", "read_layers", "reduce_logits"]

CHUNK_BYTES = 64 * 2**20  # float32 logits per chunk; two such buffers (logits, probs) are alive at once


@dataclass
class Readout:
    """What one lens says at selected rows of selected layers.

    Attributes:
        layers: residual layers, in order.
        mass: ``[n_layers, n_rows, n_columns]`` probability mass per language column.
        entropy: ``[n_layers, n_rows]`` entropy of the lens distribution, in nats.
        token_prob: ``[n_layers, n_rows, n_tokens]`` probability of tracked token ids (NaN where the id is -1).
        token_rank: ``[n_layers, n_rows, n_tokens]`` rank of each tracked id (1 = most likely).
        set_prob: ``[n_layers, n_rows, n_sets]`` total probability of each row's token sets.
        top_token: ``[n_layers, n_rows]`` the most likely token id.
    """

    layers: list[int]
    mass: Tensor
    entropy: Tensor
    token_prob: Tensor
    token_rank: Tensor
    set_prob: Tensor
    top_token: Tensor


def default_chunk_rows(vocab_size: int) -> int:
    """Rows per chunk so that one float32 ``[chunk, vocab]`` buffer stays near CHUNK_BYTES."""
    return max(1, CHUNK_BYTES // (4 * vocab_size))


def read_layers(
    lens: Lens,
    hidden: Tensor,
    layers: Sequence[int],
    weights: Tensor,
    *,
    token_ids: Tensor | None = None,
    token_sets: TokenSets | None = None,
    chunk_rows: int | None = None,
    fused: bool = True,
) -> Readout:
    """Decode ``hidden`` (``[n_layers, n_rows, d_model]``) with ``lens`` and reduce it, chunk by chunk.

    A lens with ``head_inputs`` (a linear read-out) takes the fused path, ``chunk_rows`` rows
    (default ``ROW_BLOCK``) at a time across layers; any other lens, or ``fused=False``, decodes
    ``chunk_rows`` rows (default :func:`default_chunk_rows`) of one layer at a time and reduces
    them with :func:`reduce_logits`.
    """
    n_layers, n_rows, _ = hidden.shape
    if len(layers) != n_layers:
        raise ValueError(f"{len(layers)} layer indices for {n_layers} layers of hidden states")
    head_inputs = getattr(lens, "head_inputs", None) if fused else None
    with torch.no_grad():
        probe = head_inputs(hidden[0, :1], layers[0]) if head_inputs is not None and n_rows else None
    if probe is not None:
        with torch.no_grad():
            joined = fused_read(
                head_inputs, hidden, layers, ColumnMap.from_weights(weights).to(probe.weight.device),
                token_ids=token_ids, token_sets=token_sets, row_block=chunk_rows or ROW_BLOCK,
            )
        return Readout(layers=list(layers), **joined)
    weights = weights.float()
    chunk = chunk_rows or default_chunk_rows(weights.shape[0])
    parts: dict[str, list[list[Tensor]]] = {}
    with torch.no_grad():
        for i, layer in enumerate(layers):
            for start in range(0, n_rows, chunk):
                stop = min(start + chunk, n_rows)
                logits = lens.decode(hidden[i, start:stop], layer)
                stats = reduce_logits(
                    logits,
                    weights.to(logits.device),
                    None if token_ids is None else token_ids[start:stop].to(logits.device),
                    None if token_sets is None else token_sets.rows(start, stop),
                )
                for key, value in stats.items():
                    parts.setdefault(key, [[] for _ in layers])[i].append(value.cpu())
    joined = {key: torch.stack([torch.cat(chunks) for chunks in per_layer]) for key, per_layer in parts.items()}
    return Readout(layers=list(layers), **joined)
