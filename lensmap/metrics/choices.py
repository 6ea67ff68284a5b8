"""Multiple-choice answers by option log-likelihood: pure functions over log-probabilities.

An item with ``K`` options is answered by the option whose continuation the model finds most
likely: the sum of the log-probabilities of the option's tokens given the question (or their
mean per token with ``normalize="mean"``, which does not favour short options). With one-token
options (the letters ``A``–``D`` after ``Answer:``) both are the log-probability of that token.
Ties go to the first option, as ``argmax`` does; an item whose options all score ``-inf`` is
still answered (option 0), never skipped.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lensmap.errors import LensmapError


def option_logliks(token_logprobs: Tensor, option_mask: Tensor, normalize: str = "sum") -> Tensor:
    """Score of each option: ``token_logprobs [n, K, T]`` over the real tokens ``option_mask [n, K, T]`` → ``[n, K]``.

    ``normalize``: ``"sum"`` (total log-likelihood) or ``"mean"`` (per token).
    """
    if token_logprobs.shape != option_mask.shape or token_logprobs.dim() != 3:
        raise LensmapError(f"option log-probs and mask must both be [items, options, tokens]; got "
                           f"{tuple(token_logprobs.shape)} and {tuple(option_mask.shape)}")
    mask = option_mask.bool()
    if not mask.any(dim=2).all():
        raise LensmapError("an option has no tokens to score")
    total = torch.where(mask, token_logprobs, torch.zeros_like(token_logprobs)).sum(dim=2)
    if normalize == "sum":
        return total
    if normalize == "mean":
        return total / mask.sum(dim=2)
    raise LensmapError(f"normalize must be 'sum' or 'mean'; got {normalize!r}")


def choose(scores: Tensor) -> Tensor:
    """The chosen option of each item: ``scores [n, K]`` → ``[n]`` long (first option on ties)."""
    return scores.argmax(dim=1)


def choice_correct(scores: Tensor, gold: Tensor) -> Tensor:
    """``[n]`` float 1.0 where the highest-scoring option is the gold one (``gold [n]`` option indices)."""
    if gold.shape != scores.shape[:1]:
        raise LensmapError(f"one gold option per item: scores {tuple(scores.shape)}, gold {tuple(gold.shape)}")
    return (choose(scores) == gold.to(scores.device)).float()
