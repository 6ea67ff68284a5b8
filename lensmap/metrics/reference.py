"""The reference reduction of ``[rows, vocab]`` logits, and ragged token sets.

:func:`reduce_logits` defines every statistic lensmap reports from a lens (float32 softmax,
entropy, top token, tracked-token probability and rank, token-set sums). The generic path of
:func:`~lensmap.metrics.mass.read_layers` calls it on decoded chunks; the fused path
(:mod:`lensmap.metrics.fused`) computes the same numbers without the full logits and is tested
against it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


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

    def take(self, index: Tensor) -> "TokenSets":
        """The sets of rows ``index`` (``[n]`` long, repeats allowed), as rows ``0..n-1``."""
        order = torch.argsort(self.row, stable=True)
        counts = torch.bincount(self.row, minlength=self.n_rows)
        starts = torch.cumsum(counts, 0) - counts
        per_row = counts[index]
        new_row = torch.repeat_interleave(torch.arange(len(index)), per_row)
        offset = torch.cumsum(per_row, 0) - per_row
        within = torch.arange(int(per_row.sum())) - torch.repeat_interleave(offset, per_row)
        source = order[torch.repeat_interleave(starts[index], per_row) + within]
        return TokenSets(len(index), self.n_sets, new_row, self.slot[source], self.token[source])


def reduce_logits(
    logits: Tensor,
    weights: Tensor,
    token_ids: Tensor | None = None,
    token_sets: TokenSets | None = None,
) -> dict[str, Tensor]:
    """Reduce ``[rows, vocab]`` logits (any dtype) to per-row statistics, in float32.

    This is the reference definition of every statistic (the fused path is tested against
    it): probabilities are ``softmax(logits.float())``, entropy in nats, the rank of a tracked
    id is ``1 + #{logits strictly greater than its logit}``, the top token the first argmax.

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
