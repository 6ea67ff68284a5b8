"""Pooled hidden states of texts at every residual layer, and the similarity of translations.

Every text is read after one start token and only its own tokens are pooled (see
:func:`sentence_states`); the statistics are :mod:`lensmap.metrics.similarity`'s.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from lensmap.capture.residuals import capture_residuals
from lensmap.data.parallel import ParallelSet, check_parallel
from lensmap.errors import LensmapError
from lensmap.metrics.similarity import similarity_frame
from lensmap.models.handle import ModelHandle


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
