"""Cross-lingual similarity of hidden states, layer by layer, with bootstrap intervals (pure tensors).

The states come from :func:`lensmap.readout.states.sentence_states`.

For every layer, each item's hidden state is pooled over the item's own tokens (``mean``; or
the ``last`` token), then **centred**: the mean state of that layer over all items of all
languages is subtracted. Hidden spaces are anisotropic — raw cosines between unrelated items
grow with depth — so raw cosine would show "alignment" that is only a shared offset. For every
ordered language pair (source, target) and layer:

* ``translation_cosine`` — mean cosine of an item and its translation;
* ``other_cosine`` — mean cosine of an item and the *other* items of the target language;
* ``cosine_gap`` — their difference (how much closer translations are than non-translations);
* ``retrieval_accuracy`` — the share of source items whose nearest target item (by cosine,
  among all target items) is their translation. Chance is ``1 / n``.

Intervals are percentile bootstraps over items (the per-item statistics are resampled).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from lensmap.errors import LensmapError
from lensmap.frames import columns

POOLINGS = ("mean", "last")
METRICS = ("translation_cosine", "other_cosine", "cosine_gap", "retrieval_accuracy")
SIMILARITY_COLUMNS = columns("similarity")


def centre(states: Tensor) -> Tensor:
    """Subtract each layer's mean over all items: ``[layers, n, d]`` → same shape."""
    return states - states.mean(dim=1, keepdim=True)


def pair_item_stats(source: Tensor, target: Tensor) -> dict[str, Tensor]:
    """Per-layer, per-item statistics of aligned ``[layers, n, d]`` states (``n >= 2``).

    Returns ``{metric: [layers, n]}``: the item's cosine to its translation, its mean cosine
    to the other target items, their difference, and 1.0 where its nearest target item is
    its translation.
    """
    a = torch.nn.functional.normalize(source, dim=-1)
    b = torch.nn.functional.normalize(target, dim=-1)
    sims = a @ b.transpose(1, 2)  # [layers, n, n]
    n = sims.shape[1]
    diag = sims.diagonal(dim1=1, dim2=2)  # [layers, n]
    other = (sims.sum(dim=2) - diag) / (n - 1)
    retrieved = (sims.argmax(dim=2) == torch.arange(n)).float()
    return {"translation_cosine": diag, "other_cosine": other, "cosine_gap": diag - other,
            "retrieval_accuracy": retrieved}


def bootstrap_means(values: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[np.ndarray, ...]:
    """Mean over items and its percentile bootstrap interval: ``values [layers, n]`` → 3 × ``[layers]``."""
    rng = np.random.default_rng(seed)
    n = values.shape[1]
    idx = rng.integers(0, n, size=(n_boot, n))
    boots = values[:, idx].mean(axis=2)  # [layers, n_boot]
    alpha = (1 - level) / 2
    return values.mean(axis=1), np.quantile(boots, alpha, axis=1), np.quantile(boots, 1 - alpha, axis=1)


def similarity_frame(
    states: dict[str, dict[str, Tensor]],
    *,
    model: str = "",
    n_boot: int = 1000,
    seed: int = 0,
    min_items: int = 10,
) -> pd.DataFrame:
    """The tidy ``similarity.csv`` frame from ``{language: {pooling: [layers, n, d]}}`` states.

    States are centred per layer and pooling over all languages together before comparing.
    Raises when fewer than ``min_items`` aligned items are given (a bootstrap needs several).
    """
    languages = list(states)
    if len(languages) < 2:
        raise LensmapError(f"similarity needs at least two languages; got {languages}")
    n = next(iter(states.values()))["mean"].shape[1]
    if n < min_items:
        raise LensmapError(f"similarity needs at least {min_items} aligned items for its bootstrap; got {n}")
    frames = []
    for pooling in POOLINGS:
        stacked = torch.stack([states[lang][pooling] for lang in languages])  # [langs, layers, n, d]
        centred = stacked - stacked.mean(dim=(0, 2), keepdim=True)
        n_layers = stacked.shape[1]
        for i, source in enumerate(languages):
            for j, target in enumerate(languages):
                if i == j:
                    continue
                stats = pair_item_stats(centred[i], centred[j])
                for metric in METRICS:
                    value, low, high = bootstrap_means(stats[metric].numpy(), n_boot=n_boot, seed=seed)
                    frames.append(pd.DataFrame({
                        "model": model, "source": source, "target": target, "layer": np.arange(n_layers),
                        "pooling": pooling, "metric": metric, "value": value, "ci_low": low, "ci_high": high}))
    return pd.concat(frames, ignore_index=True)[SIMILARITY_COLUMNS]


def pooled_curve(frame: pd.DataFrame, metric: str = "cosine_gap", pooling: str = "mean") -> pd.DataFrame:
    """Mean over language pairs per layer: ``layer, value, ci_low, ci_high``."""
    sub = frame[(frame["metric"] == metric) & (frame["pooling"] == pooling)]
    return sub.groupby("layer", as_index=False)[["value", "ci_low", "ci_high"]].mean()
