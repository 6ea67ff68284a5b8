"""Cross-lingual similarity of hidden states, layer by layer, with bootstrap intervals.

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

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from lensmap.capture import capture_residuals
from lensmap.data.parallel import ParallelSet, check_parallel
from lensmap.errors import LensmapError
from lensmap.models.handle import ModelHandle

POOLINGS = ("mean", "last")
METRICS = ("translation_cosine", "other_cosine", "cosine_gap", "retrieval_accuracy")
SIMILARITY_COLUMNS = ["model", "source", "target", "layer", "pooling", "metric", "value", "ci_low", "ci_high"]


def start_token_id(tokenizer) -> int | None:
    """The token every item is read after: BOS, else the end-of-text token that separates documents."""
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def sentence_states(
    handle: ModelHandle,
    texts: Sequence[str],
    *,
    batch_size: int = 16,
    progress: bool = False,
    desc: str = "hidden states",
) -> dict[str, Tensor]:
    """Pooled hidden states of every text at every residual layer.

    Every text is read after one start token (BOS, or end-of-text for tokenizers without a BOS,
    like Qwen's) and only the text's own tokens are pooled. The start token matters: the first
    position of a sequence becomes an attention sink with a few huge activations, and pooling
    over it would drown the item's meaning (on Qwen2.5 the cosine gap then sits flat at one
    value for 20 layers). Returns ``{"mean": [layers, n, d], "last": [layers, n, d]}`` (float32).
    """
    tokenizer = handle.tokenizer
    start = start_token_id(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (start or 0)
    pooled: dict[str, list[Tensor]] = {"mean": [], "last": []}
    for first in tqdm(range(0, len(texts), batch_size), desc=desc, disable=not progress, unit="batch"):
        batch = list(texts[first:first + batch_size])
        encoded = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in batch]
        empty = [text for text, ids in zip(batch, encoded) if not ids]
        if empty:
            raise LensmapError(f"items with no tokens of their own: {empty[:3]}")
        prefix = [start] if start is not None else []
        width = len(prefix) + max(len(ids) for ids in encoded)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        own = torch.zeros((len(batch), width), dtype=torch.bool)
        for row, ids in enumerate(encoded):  # right padding: [start] + item tokens + pad
            n = len(prefix) + len(ids)
            input_ids[row, :n] = torch.tensor(prefix + ids)
            attention[row, :n] = 1
            own[row, len(prefix):n] = True
        res = capture_residuals(handle, input_ids, attention, positions=own)
        hidden = res.hidden.float()  # [layers, rows, d], rows in (batch, position) order
        row_item = res.rows[:, 0]
        sums = torch.zeros(hidden.shape[0], len(batch), hidden.shape[2]).index_add_(1, row_item, hidden)
        counts = torch.bincount(row_item, minlength=len(batch)).clamp(min=1).float()
        pooled["mean"].append(sums / counts[None, :, None])
        last_row = torch.tensor([int((row_item == i).nonzero().max()) for i in range(len(batch))])
        pooled["last"].append(hidden[:, last_row])
    return {name: torch.cat(parts, dim=1) for name, parts in pooled.items()}


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


def run_similarity(
    handle: ModelHandle,
    parallel: ParallelSet,
    *,
    batch_size: int = 16,
    n_boot: int = 1000,
    seed: int = 0,
    min_items: int = 10,
    progress: bool = True,
) -> tuple[pd.DataFrame, dict[str, dict[str, Tensor]]]:
    """Hidden states of every language's items, then :func:`similarity_frame`; returns both."""
    check_parallel(parallel.texts, parallel.name, min_items=min_items)
    states = {lang: sentence_states(handle, texts, batch_size=batch_size, progress=progress, desc=f"states {lang}")
              for lang, texts in parallel.texts.items()}
    return similarity_frame(states, model=handle.name, n_boot=n_boot, seed=seed, min_items=min_items), states


def pooled_curve(frame: pd.DataFrame, metric: str = "cosine_gap", pooling: str = "mean") -> pd.DataFrame:
    """Mean over language pairs per layer: ``layer, value, ci_low, ci_high``."""
    sub = frame[(frame["metric"] == metric) & (frame["pooling"] == pooling)]
    return sub.groupby("layer", as_index=False)[["value", "ci_low", "ci_high"]].mean()
