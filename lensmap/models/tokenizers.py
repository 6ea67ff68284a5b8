"""Tokenizer helpers: settings lensmap changes for a batch and puts back, and what makes a tokenizer unusable."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def left_padded(tokenizer: Any) -> Iterator[Any]:
    """Pad (and truncate) on the left for the block: the last position of every row is its last real token.

    A tokenizer without a pad token borrows its end-of-sequence token. The settings are put
    back on exit and on error, so the caller's tokenizer leaves as it came in.
    """
    old_side, old_pad = getattr(tokenizer, "padding_side", "right"), tokenizer.pad_token
    old_truncation = getattr(tokenizer, "truncation_side", None)
    tokenizer.padding_side = "left"
    if old_truncation is not None:
        tokenizer.truncation_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        yield tokenizer
    finally:
        tokenizer.padding_side = old_side
        if old_truncation is not None:
            tokenizer.truncation_side = old_truncation
        if old_pad is None:
            tokenizer.pad_token = None


def special_token_ids(tokenizer) -> set[int]:
    """Ids of special tokens: ``all_special_ids`` and added tokens flagged special."""
    ids = {int(i) for i in (getattr(tokenizer, "all_special_ids", None) or [])}
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    ids.update(int(i) for i, tok in added.items() if getattr(tok, "special", False))
    return ids


def tokenizer_problem(tokenizer) -> str | None:
    """Why ``tokenizer`` cannot be used for an analysis, or None if it looks usable.

    Recent transformers versions build an *empty* tokenizer (only special tokens, or none) for a
    model directory without tokenizer files instead of failing; such a tokenizer encodes every
    word to nothing. This catches it: a tokenizer without a single ordinary (non-special,
    non-added) token, or whose length cannot be taken.
    """
    if tokenizer is None:
        return "there is no tokenizer"
    try:
        size = len(tokenizer)
    except Exception as error:  # a broken object: say so instead of failing later
        return f"its length cannot be taken ({type(error).__name__}: {error})"
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    extra = {int(i) for i in added} | special_token_ids(tokenizer)
    ordinary = size - len({i for i in extra if 0 <= i < size})
    if ordinary <= 0:
        return f"it has no ordinary tokens ({size} special or added token(s) only), so it encodes text to nothing"
    return None
