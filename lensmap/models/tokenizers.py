"""Tokenizer settings lensmap changes for a batch and puts back afterwards."""

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
