"""Per-language probability mass, entropy and answer-token probabilities from lens logits.

Everything here streams: a chunk of rows is decoded to ``[chunk, vocab]`` logits, reduced to a
few numbers per row (mass per language column, entropy, tracked tokens) and dropped, so memory
never holds ``[layers × positions × vocab]``. Softmax is always computed in float32, whatever
the model's dtype.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lensmap.lenses.base import Lens

CHUNK_BYTES = 64 * 2**20  # float32 logits per chunk; two such buffers (logits, probs) are alive at once


@dataclass
class TokenSets:
    """Ragged sets of token ids, ``n_sets`` per row, flattened for vectorised summing.

    ``row``, ``slot`` and ``token`` are equal-length 1-D long tensors: token ``token[i]``
    belongs to set ``slot[i]`` of row ``row[i]``.
    """

    n_rows: int
    n_sets: int
    row: Tensor
    slot: Tensor
    token: Tensor

    @classmethod
    def from_lists(cls, sets: Sequence[Sequence[Sequence[int]]]) -> "TokenSets":
        """``sets[r][k]`` is the list of token ids of set ``k`` for row ``r``."""
        n_sets = len(sets[0]) if sets else 0
        row, slot, token = [], [], []
        for r, row_sets in enumerate(sets):
            if len(row_sets) != n_sets:
                raise ValueError("every row needs the same number of token sets")
            for k, ids in enumerate(row_sets):
                row += [r] * len(ids)
                slot += [k] * len(ids)
                token += list(ids)
        as_long = lambda xs: torch.tensor(xs, dtype=torch.long)  # noqa: E731
        return cls(len(sets), n_sets, as_long(row), as_long(slot), as_long(token))

    def rows(self, start: int, stop: int) -> "TokenSets":
        keep = (self.row >= start) & (self.row < stop)
        return TokenSets(stop - start, self.n_sets, self.row[keep] - start, self.slot[keep], self.token[keep])


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


def reduce_logits(
    logits: Tensor,
    weights: Tensor,
    token_ids: Tensor | None = None,
    token_sets: TokenSets | None = None,
) -> dict[str, Tensor]:
    """Reduce ``[rows, vocab]`` logits (any dtype) to per-row statistics, in float32.

    Args:
        weights: ``[vocab, n_columns]`` float32 language map (each row sums to 1).
        token_ids: ``[rows, n_tokens]`` ids to track, ``-1`` for none.
        token_sets: sets of ids whose probabilities are summed per row.

    Returns a dict with ``mass [rows, n_columns]``, ``entropy [rows]``, ``token_prob``,
    ``token_rank`` ``[rows, n_tokens]``, ``set_prob [rows, n_sets]`` and ``top_token [rows]``.
    ``logits`` is never modified.
    """
    x = logits.float()  # a copy only when the model's dtype is not float32
    rows = x.shape[0]
    probs = torch.softmax(x, dim=-1)
    top = probs.argmax(-1)
    # log Z from the top token (p_top >= 1/vocab, so its log is safe), then
    # entropy = log Z - E_p[x]; both without a second [rows, vocab] buffer.
    log_z = x.gather(1, top[:, None]).squeeze(1) - probs.gather(1, top[:, None]).squeeze(1).log()
    expected = torch.bmm(probs.unsqueeze(1), x.unsqueeze(2)).view(rows)
    if not torch.isfinite(expected).all():  # -inf logits (masked tokens) give 0 * -inf
        expected = torch.where(probs > 0, probs * x, 0.0).sum(-1)
    out = {"mass": probs @ weights, "entropy": log_z - expected, "top_token": top}
    if token_ids is not None and token_ids.numel():
        safe = token_ids.clamp(min=0)
        out["token_prob"] = torch.where(token_ids >= 0, probs.gather(1, safe), torch.nan)
        chosen = x.gather(1, safe)
        ranks = torch.stack([(x > chosen[:, k : k + 1]).sum(-1) + 1 for k in range(safe.shape[1])], -1)
        out["token_rank"] = torch.where(token_ids >= 0, ranks.float(), torch.nan)
    else:
        out["token_prob"] = out["token_rank"] = torch.empty(rows, 0)
    if token_sets is not None and token_sets.n_sets:
        flat = torch.zeros(rows * token_sets.n_sets)
        flat.index_add_(0, token_sets.row * token_sets.n_sets + token_sets.slot, probs[token_sets.row, token_sets.token])
        out["set_prob"] = flat.view(rows, token_sets.n_sets)
    else:
        out["set_prob"] = torch.empty(rows, 0)
    return out


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
) -> Readout:
    """Decode ``hidden`` (``[n_layers, n_rows, d_model]``) with ``lens`` and reduce it, chunk by chunk."""
    n_layers, n_rows, _ = hidden.shape
    if len(layers) != n_layers:
        raise ValueError(f"{len(layers)} layer indices for {n_layers} layers of hidden states")
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
