"""The lens and its reduction in one pass over the vocabulary: each logit is touched while in cache.

The rule. For a lens whose read-out is linear (:class:`~lensmap.lenses.base.HeadInputs`:
``softcap(final_norm(h) @ W.T + b)``), rows are taken ``ROW_BLOCK`` at a time (across layers:
every layer shares ``W``), the final norm is applied once per row block, and ``W`` is walked in
tiles of ``VOCAB_TILE`` vocabulary rows. Each ``[rows, tile]`` block of logits is computed into
a buffer that is reused, soft-capped in the model's dtype, copied to float32 once, and reduced
before the next tile, keeping per row (the online softmax):

* ``m`` the running maximum and the first index where it occurs (the top token);
* ``S = Σ exp(x - m)``, ``T = Σ exp(x - m) · x`` and the per-column sums
  ``M[c] = Σ exp(x - m) · w[v, c]``, all rescaled by ``exp(m_old - m_new)`` when ``m`` grows;
* the logits of tracked ids and of token-set members, picked out of the tile holding them;
* for each tracked id, how many logits are strictly greater than its provisional logit.

At the end ``p = exp(x - m) / S``, ``mass = M / S``, ``entropy = m + log S - T / S`` (nats),
``rank = 1 + #{x > x_id}``: the same quantities as :func:`~lensmap.metrics.mass.reduce_logits`
(the reference, which every other lens keeps using), in float32, equal to about 1e-6.

The provisional logit of a tracked id comes from a small ``[rows, ids]`` matmul before the
pass; where it is not bit-equal to the tile's own value (a different kernel may round
differently), or where a row has a non-finite statistic (an infinite or NaN logit), those
rows are recomputed by the reference, so ranks and masked logits are exact, never approximate.

The language map is summed with a ``[tile, columns]`` matmul whether it is hard (one bucket
per token) or soft: on the CPU it measured 2-3× faster than a segment sum (``index_add_``
over column ids) for the same tile (``benchmarks/bench_fused_tiles.py``), and it is one
code path. ``segment_sum=True`` selects the segment sum for hard maps.

Sizes, measured on a 2-core Xeon (AVX-512, no bf16 units), Qwen2.5-0.5B, vocabulary 151,936,
one thread (``benchmarks/bench_fused_tiles.py``, minimum of interleaved repeats, noisy): the
tiled matmul alone takes 0.75-0.85 of one ``[rows, vocab]`` matmul per layer in float32; the
matmul wants many rows to reuse each weight tile (256-row blocks were 20 % slower than 512,
1024 no faster), and the element-wise reductions want a tile that stays in L2 (tiles of 512,
1024 and 2048 columns were within the noise of each other; 16,384 was slower). The rule:
``ROW_BLOCK = 512`` rows across layers, ``VOCAB_TILE = 1024`` columns (2 MB of float32 per
tile). Memory beyond the outputs is three tile buffers and ``[rows, d_model]``, whatever the
vocabulary or the number of positions. Profiled at these sizes, the reductions cost 9 % of
the tile matmuls in bfloat16 and 25 % in float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lensmap.lenses.base import HeadInputs
from lensmap.metrics.reference import TokenSets, reduce_logits

ROW_BLOCK = 512
VOCAB_TILE = 1024


@dataclass
class ColumnMap:
    """The language map as the fused pass sums it.

    Attributes:
        weights: ``[vocab, n_columns]`` float32, each row summing to 1.
        column: ``[vocab]`` long column id of each token when the map is hard (one-hot rows), else None.
        with_ones: ``[vocab, n_columns + 1]``, ``weights`` and a column of ones, so that one
            matmul gives the mass per column and the softmax denominator.
    """

    weights: Tensor
    column: Tensor | None
    with_ones: Tensor

    @classmethod
    def from_weights(cls, weights: Tensor) -> "ColumnMap":
        weights = weights.float()
        one_hot = bool(((weights == 0) | (weights == 1)).all()) and bool((weights.sum(1) == 1).all())
        with_ones = torch.cat([weights, torch.ones(weights.shape[0], 1, device=weights.device)], 1)
        return cls(weights, weights.argmax(1) if one_hot else None, with_ones)

    def to(self, device) -> "ColumnMap":
        column = None if self.column is None else self.column.to(device)
        return ColumnMap(self.weights.to(device), column, self.with_ones.to(device))


def _gather_plan(rows: int, token_ids: Tensor | None, sets: TokenSets | None) -> tuple[Tensor, Tensor, int]:
    """Flat ``(row, token)`` pairs whose logits the pass picks up: tracked ids first, then set members."""
    device = token_ids.device if token_ids is not None else None
    row_parts, tok_parts = [], []
    n_tracked = 0
    if token_ids is not None and token_ids.numel():
        k = token_ids.shape[1]
        row_parts.append(torch.arange(rows, device=token_ids.device).repeat_interleave(k))
        tok_parts.append(token_ids.reshape(-1).clamp(min=0))
        n_tracked = rows * k
    if sets is not None and sets.n_sets and sets.row.numel():
        row_parts.append(sets.row.to(device) if device is not None else sets.row)
        tok_parts.append(sets.token.to(row_parts[-1].device))
    if not row_parts:
        empty = torch.empty(0, dtype=torch.long)
        return empty, empty, 0
    return torch.cat(row_parts), torch.cat(tok_parts), n_tracked


def _logits_into(out: Tensor, head: HeadInputs, h: Tensor, v0: int, v1: int) -> Tensor:
    """``softcap(h @ W[v0:v1].T + b[v0:v1])`` written into ``out`` (model dtype)."""
    w = head.weight[v0:v1]
    if head.bias is None:
        torch.mm(h, w.t(), out=out)
    else:
        torch.addmm(head.bias[v0:v1], h, w.t(), out=out)
    if head.softcap is not None:
        torch.div(out, head.softcap, out=out)
        out.tanh_()
        out.mul_(head.softcap)
    return out


def fused_reduce(
    head: HeadInputs,
    columns: ColumnMap,
    token_ids: Tensor | None = None,
    token_sets: TokenSets | None = None,
    *,
    vocab_tile: int = VOCAB_TILE,
    segment_sum: bool = False,
) -> dict[str, Tensor]:
    """Reduce ``softcap(head.normed @ head.weight.T + bias)`` without materialising it.

    Args:
        head: ``normed [rows, d_model]`` and the linear read-out.
        columns: the language map (``[vocab, n_columns]``).
        token_ids: ``[rows, n_tokens]`` ids to track, ``-1`` for none.
        token_sets: a :class:`~lensmap.metrics.mass.TokenSets` of ``rows`` rows.

    Returns the dict of :func:`~lensmap.metrics.mass.reduce_logits`: ``mass [rows, n_columns]``,
    ``entropy [rows]``, ``token_prob`` and ``token_rank [rows, n_tokens]``, ``set_prob
    [rows, n_sets]``, ``top_token [rows]`` — float32 (top token long), on the weight's device.
    """
    h = head.normed
    rows, vocab = h.shape[0], head.weight.shape[0]
    device, dtype = head.weight.device, head.weight.dtype
    f32 = dict(dtype=torch.float32, device=device)
    n_cols = columns.weights.shape[1]
    hard = segment_sum and columns.column is not None

    m = torch.full((rows,), float("-inf"), **f32)
    t = torch.zeros(rows, **f32)
    top = torch.zeros(rows, dtype=torch.long, device=device)

    ids = None if token_ids is None or not token_ids.numel() else token_ids.to(device)
    g_row, g_tok, n_tracked = _gather_plan(rows, ids, token_sets)
    g_row, g_tok = g_row.to(device), g_tok.to(device)
    order = torch.argsort(g_tok)
    g_row_s, g_tok_s = g_row[order], g_tok[order]
    starts = torch.arange(0, vocab + vocab_tile, vocab_tile, device=device).clamp(max=vocab)
    bounds = torch.searchsorted(g_tok_s, starts).tolist()
    picked = torch.empty(g_row.numel(), **f32)

    if ids is not None:
        # provisional logits of the tracked ids; checked against the tile's own values below
        uniq, inverse = torch.unique(ids.clamp(min=0), return_inverse=True)
        small = torch.empty(rows, uniq.numel(), dtype=dtype, device=device)
        sub = HeadInputs(h, head.weight[uniq], None if head.bias is None else head.bias[uniq], head.softcap)
        provisional = _logits_into(small, sub, h, 0, uniq.numel()).float()
        provisional = provisional.gather(1, inverse)  # [rows, n_tokens]
        above = torch.zeros(rows, ids.shape[1], dtype=torch.long, device=device)

    raw = torch.empty(rows, vocab_tile, dtype=dtype, device=device)
    x32 = raw if dtype == torch.float32 else torch.empty(rows, vocab_tile, **f32)
    e = torch.empty(rows, vocab_tile, **f32)
    sums = torch.zeros(rows, n_cols + 1, **f32)  # mass per column, then S in the last column
    with torch.no_grad():
        for j, v0 in enumerate(range(0, vocab, vocab_tile)):
            v1 = min(v0 + vocab_tile, vocab)
            xr = _logits_into(raw[:, : v1 - v0], head, h, v0, v1)
            x = xr if x32 is raw else x32[:, : v1 - v0].copy_(xr)  # one float32 copy, exact
            tile_max = x.amax(1)
            grows = (tile_max > m).nonzero().squeeze(1)  # about ln(#tiles) times per row in all
            if grows.numel():
                top[grows] = x[grows].argmax(1) + v0  # first maximum, as in the reference
            m_new = torch.maximum(m, tile_max)
            scale = torch.exp(m - m_new)
            ex = torch.sub(x, m_new[:, None], out=e[:, : v1 - v0]).exp_()
            sums.mul_(scale[:, None])
            if hard:
                # per tile, then added: one long sequential float32 sum would drift by ~1e-5
                part = torch.zeros_like(sums).index_add_(1, columns.column[v0:v1], ex)
                part[:, -1] = ex.sum(1)
                sums.add_(part)
            else:
                sums.addmm_(ex, columns.with_ones[v0:v1])
            t.mul_(scale).add_(ex.mul_(x).sum(1))  # ex is spent after this
            m = m_new
            if ids is not None:
                above += (x.unsqueeze(1) > provisional.unsqueeze(2)).sum(2)
            lo, hi = bounds[j], bounds[j + 1]
            if hi > lo:
                picked[lo:hi] = x[g_row_s[lo:hi], g_tok_s[lo:hi] - v0]
    s = sums[:, -1]
    mass = sums[:, :-1]

    logit = torch.empty_like(picked)
    logit[order] = picked
    prob = torch.exp(logit - m[g_row]) / s[g_row]
    out = {"mass": mass / s[:, None], "entropy": m + s.log() - t / s, "top_token": top}
    bad = ~torch.isfinite(out["entropy"])
    if ids is not None:
        exact = logit[:n_tracked].view(rows, -1)
        bad |= (exact != provisional).any(1)
        valid = ids >= 0
        out["token_prob"] = torch.where(valid, prob[:n_tracked].view(rows, -1), torch.nan)
        out["token_rank"] = torch.where(valid, (above + 1).float(), torch.nan)
    else:
        out["token_prob"] = out["token_rank"] = torch.empty(rows, 0, **f32)
    if token_sets is not None and token_sets.n_sets:
        flat = torch.zeros(rows * token_sets.n_sets, **f32)
        members = g_row[n_tracked:]
        flat.index_add_(0, members * token_sets.n_sets + token_sets.slot.to(device), prob[n_tracked:])
        out["set_prob"] = flat.view(rows, token_sets.n_sets)
    else:
        out["set_prob"] = torch.empty(rows, 0, **f32)
    if bad.any():
        _redo_rows(out, bad.nonzero().squeeze(1), head, columns, ids, token_sets)
    return out


def _redo_rows(out: dict[str, Tensor], rows: Tensor, head: HeadInputs, columns: ColumnMap,
               ids: Tensor | None, token_sets: TokenSets | None) -> None:
    """Recompute ``rows`` with the reference (full logits row by row block), in place in ``out``."""
    h = head.normed[rows]
    logits = torch.empty(h.shape[0], head.weight.shape[0], dtype=head.weight.dtype, device=h.device)
    _logits_into(logits, head, h, 0, head.weight.shape[0])
    sets = None if token_sets is None else token_sets.take(rows.cpu())
    redo = reduce_logits(logits, columns.weights, None if ids is None else ids[rows], sets)
    for key, value in redo.items():
        if value.numel():
            out[key][rows] = value.to(out[key].dtype)


def fused_read(
    head_inputs,
    hidden: Tensor,
    layers: Sequence[int],
    columns: ColumnMap,
    *,
    token_ids: Tensor | None = None,
    token_sets: TokenSets | None = None,
    row_block: int = ROW_BLOCK,
    vocab_tile: int = VOCAB_TILE,
    segment_sum: bool = False,
) -> dict[str, Tensor]:
    """Fused reduction of ``hidden`` ``[n_layers, n_rows, d_model]``, row blocks running across layers.

    ``head_inputs(hidden_rows, layer)`` is the lens's capability (see
    :meth:`~lensmap.lenses.logit.LogitLens.head_inputs`). Returns the stacked statistics,
    each ``[n_layers, n_rows, ...]``, on the CPU.
    """
    n_layers, n_rows, _ = hidden.shape
    total = n_layers * n_rows
    parts: dict[str, list[Tensor]] = {}
    for start in range(0, total, row_block):
        stop = min(start + row_block, total)
        pieces, index = [], []
        for i in range(start // n_rows, (stop - 1) // n_rows + 1):
            r0, r1 = max(start - i * n_rows, 0), min(stop - i * n_rows, n_rows)
            head = head_inputs(hidden[i, r0:r1], layers[i])
            pieces.append(head.normed)
            index.append(torch.arange(r0, r1))
        rows = torch.cat(index)
        block = HeadInputs(torch.cat(pieces) if len(pieces) > 1 else pieces[0], head.weight, head.bias, head.softcap)
        stats = fused_reduce(
            block, columns,
            None if token_ids is None else token_ids[rows],
            None if token_sets is None else token_sets.take(rows),
            vocab_tile=vocab_tile, segment_sum=segment_sum,
        )
        for key, value in stats.items():
            parts.setdefault(key, []).append(value.cpu())
    return {key: torch.cat(chunks).view(n_layers, n_rows, *chunks[0].shape[1:]) for key, chunks in parts.items()}
