"""Layer sweeps: the settings of a sweep, per-item values, and what the curves say.

Pure functions over tensors and frames; nothing here runs the model.

* :func:`sweep_settings` — which blocks each setting intervenes on: from the **input** side
  blocks ``0..k-1`` and from the **output** side blocks ``L-k..L-1`` (``k = 0..L``), each
  **single** block, and **window**\\ s of ``w`` consecutive blocks.
* :func:`item_means` — per-item values from per-row values (a text's mean token loss).
* :func:`interval` — the mean over items and its 95 % percentile-bootstrap interval.
* :func:`retained` — how much of a metric is left, ``1`` = unchanged, ``0`` = gone. Losses
  become probabilities first: retained is ``exp(loss₀ − loss)``, the ratio of the geometric-mean
  token probabilities, so "halved" means the same for a loss as for an accuracy or a probability
  (a loss up by ln 2). Accuracies are not corrected for chance (25 % on four options).
* :func:`halving_k` — the smallest ``k`` whose retained value is at most one half, per side.
* :func:`layer_profile` — per block, the drop of perception and of production when that block
  alone is intervened on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from lensmap.errors import LensmapError
from lensmap.frames import require_columns
from lensmap.metrics.similarity import bootstrap_means

DIRECTIONS = ("input", "output", "single", "window")

# metric → (side, kind); kind "loss" is lower-is-better, everything else higher-is-better
METRICS: dict[str, tuple[str, str]] = {
    "en_answer_loss": ("perception", "loss"),
    "mmlu_accuracy": ("perception", "score"),
    "text_loss": ("production", "loss"),
    "target_answer_prob": ("production", "score"),
    "generation_in_language": ("production", "score"),
}


@dataclass(frozen=True)
class Setting:
    """One point of a sweep: ``direction``, ``k`` (number of blocks; for single/window the first block) and the blocks."""

    direction: str
    k: int
    blocks: tuple[int, ...]


def sweep_settings(n_layers: int, directions: Sequence[str] = ("input", "output"), *, ks: Sequence[int] | None = None,
                   window: int = 3, output_ks: Sequence[int] | None = None) -> list[Setting]:
    """Every setting of the requested directions.

    ``ks``: the sizes to use (default ``0..L``); ``output_ks``: other sizes for the output side
    (default: ``ks``) — output-side skips cost no block at all, so a sweep can afford every ``k`` there.
    """
    unknown = [d for d in directions if d not in DIRECTIONS]
    if unknown:
        raise LensmapError(f"unknown sweep directions {unknown}; choose from {', '.join(DIRECTIONS)}")
    sizes = sorted(set(range(n_layers + 1) if ks is None else ks))
    out_sizes = sizes if output_ks is None else sorted(set(output_ks))
    bad = [k for k in sizes + out_sizes if not 0 <= k <= n_layers]
    if bad:
        raise LensmapError(f"sweep sizes {bad} out of range 0..{n_layers}")
    if "window" in directions and not 1 <= window <= n_layers:
        raise LensmapError(f"window must be 1..{n_layers} blocks; got {window}")
    out: list[Setting] = []
    if not {"input", "output"} & set(directions):  # every curve is read against the unchanged model
        out.append(Setting("input", 0, ()))
    for direction in directions:
        if direction == "input":
            out += [Setting("input", k, tuple(range(k))) for k in sizes]
        elif direction == "output":
            out += [Setting("output", k, tuple(range(n_layers - k, n_layers))) for k in out_sizes]
        elif direction == "single":
            out += [Setting("single", b, (b,)) for b in range(n_layers)]
        else:
            out += [Setting("window", b, tuple(range(b, b + window))) for b in range(n_layers - window + 1)]
    return out


def item_means(values: Tensor, item: Tensor, n_items: int) -> Tensor:
    """Mean of ``values [rows]`` per item (``item [rows]`` in ``0..n_items-1``) → ``[n_items]``; an item without rows is an error."""
    counts = torch.bincount(item, minlength=n_items)
    if (counts == 0).any():
        raise LensmapError(f"items {(counts == 0).nonzero().flatten().tolist()[:5]} have no scored tokens")
    sums = torch.zeros(n_items, dtype=torch.float64).index_add_(0, item, values.double())
    return sums / counts


def interval(values: Sequence[float] | np.ndarray, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of per-item ``values`` and its 95 % bootstrap interval (a single item: the interval is the value)."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        raise LensmapError("no items to average")
    mean, low, high = bootstrap_means(data[None, :], n_boot=n_boot, seed=seed)
    return float(mean[0]), float(low[0]), float(high[0])


def retained(value: np.ndarray | float, baseline: float, kind: str) -> np.ndarray:
    """What is left of a metric relative to the unchanged model (see the module docstring)."""
    value = np.asarray(value, dtype=np.float64)
    if kind == "loss":
        return np.exp(baseline - value)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(baseline > 0, value / baseline, np.nan)


def drop_curves(sweep: pd.DataFrame) -> pd.DataFrame:
    """``sweep.csv`` rows + ``side``, ``baseline`` and ``retained`` (the baseline: the unchanged model, input k = 0)."""
    frame = require_columns(sweep, "sweep", "sweep").copy()
    base = frame[(frame["direction"].isin(["input", "output"])) & (frame["k"] == 0)]
    base = base.groupby(["model", "intervention", "language", "metric"])["value"].first().rename("baseline")
    frame = frame.join(base, on=["model", "intervention", "language", "metric"])
    kinds = frame["metric"].map(lambda m: METRICS.get(m, ("other", "score"))[1])
    frame["side"] = frame["metric"].map(lambda m: METRICS.get(m, ("other", "score"))[0])
    frame["retained"] = [float(retained(v, b, k)) for v, b, k in zip(frame["value"], frame["baseline"], kinds)]
    return frame


def halving_k(curves: pd.DataFrame, threshold: float = 0.5) -> pd.DataFrame:
    """Smallest ``k`` whose retained value is ≤ ``threshold``, per model, intervention, direction, language and metric.

    ``k`` is NaN when no size halves the metric (or the baseline is 0).
    """
    frame = require_columns(curves, ["model", "intervention", "direction", "language", "metric", "k", "retained", "side"],
                            "drop curves")
    frame = frame[frame["direction"].isin(["input", "output"])]
    rows = []
    for key, group in frame.groupby(["model", "intervention", "direction", "language", "metric", "side"]):
        hit = group.sort_values("k")
        hit = hit[hit["retained"] <= threshold]
        rows.append(dict(zip(["model", "intervention", "direction", "language", "metric", "side"], key),
                         k_half=float(hit["k"].iloc[0]) if len(hit) else np.nan))
    return pd.DataFrame(rows)


def marginal_profile(curves: pd.DataFrame) -> pd.DataFrame:
    """Without single-block settings: what each step of the side sweeps adds, placed at its blocks.

    Perception from the input side (the drop gained from ``k`` to the next ``k'`` is given to
    block ``k``, the first block added), production from the output side (given to block
    ``L - k'``, the innermost block added). Averaged over languages and each side's metrics.
    The largest ``k`` swept is taken as ``L`` (sweep up to ``k = L``).
    """
    frame = curves[curves["side"].isin(["perception", "production"])]
    rows = []
    for side, direction in (("perception", "input"), ("production", "output")):
        sub = frame[(frame["side"] == side) & (frame["direction"] == direction)]
        mean = sub.groupby(["model", "intervention", "k"])["retained"].mean().reset_index()
        for (model, name), group in mean.groupby(["model", "intervention"]):
            group = group.sort_values("k")
            ks, vals = group["k"].to_numpy(), group["retained"].clip(upper=1.0).to_numpy()
            n_layers = int(ks.max())
            for i in range(len(ks) - 1):
                block = int(ks[i]) if direction == "input" else n_layers - int(ks[i + 1])
                rows.append(dict(model=model, intervention=name, block=block, side=side, drop=vals[i] - vals[i + 1]))
    if not rows:
        return pd.DataFrame(columns=["model", "intervention", "block", "perception", "production"])
    table = pd.DataFrame(rows).pivot_table(index=["model", "intervention", "block"], columns="side", values="drop")
    return table.reset_index().rename_axis(columns=None)


def layer_profile(curves: pd.DataFrame) -> pd.DataFrame:
    """Per block: mean drop (``1 - retained``) of perception and of production metrics when it alone is intervened on.

    Averaged over languages and the metrics of each side; from the ``single`` direction. A sweep
    without single-block settings gets :func:`marginal_profile` instead.
    """
    frame = require_columns(curves, ["model", "intervention", "direction", "k", "retained", "side"], "drop curves")
    single = frame[(frame["direction"] == "single") & frame["side"].isin(["perception", "production"])].copy()
    if single.empty:
        return marginal_profile(frame)
    single["drop"] = 1 - single["retained"].clip(upper=1.0)
    table = single.pivot_table(index=["model", "intervention", "k"], columns="side", values="drop", aggfunc="mean")
    return table.reset_index().rename(columns={"k": "block"}).rename_axis(columns=None)


def side_extent(halving: pd.DataFrame, n_layers: int) -> dict[str, float | None]:
    """Where each faculty lives, from the halving sizes: ``perception`` blocks from the input side, ``production`` from the output side.

    The median over languages of the smallest halving ``k`` among each side's metrics, using
    the input direction for perception and the output direction for production; None when no
    metric of that side halves within the sweep.
    """
    out: dict[str, float | None] = {}
    for side, direction in (("perception", "input"), ("production", "output")):
        sub = halving[(halving["side"] == side) & (halving["direction"] == direction)].dropna(subset=["k_half"])
        if sub.empty:
            out[side] = None
            continue
        per_language = sub.groupby("language")["k_half"].min()
        out[side] = float(min(n_layers, per_language.median()))
    return out
