"""Multiple choice by option likelihood: the option the model finds most likely after the answer word.

The rule (the evaluation-harness convention, independent of how long a generated answer
would run): the scored text is the rendered prompt (chat template and assistant header, as
for generation) followed by the start of the answer line the instruction asks for
(``Answer:``, ``Réponse :``, ``答案：`` — :func:`lensmap.evaluation.scenarios.answer_line_start`);
each option is a continuation (`` A`` … `` D``); its score is the sum of the log-probabilities
of its tokens, and the prediction is the option with the highest score.

When every continuation of a prompt is one token (the option letters, in every tokenizer
lensmap has met), one forward pass scores all of them from the last position's distribution;
otherwise each continuation is scored by its own teacher-forced pass. Only the needed
positions are decoded (the model's own final norm and unembedding, ``handle.head``), so memory
is ``[batch, seq, d_model]``, never ``[batch, seq, vocab]``. Log-softmax runs in float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from lensmap.capture.residuals import capture_residuals
from lensmap.models.handle import ModelHandle


def continuation_logprobs(
    handle: ModelHandle,
    contexts: Sequence[str],
    continuations: Sequence[Sequence[str]],
    *,
    batch_size: int = 8,
    special_tokens: bool = False,
    progress: bool = False,
    desc: str = "scoring options",
) -> list[list[float]]:
    """``[len(contexts)][len(continuations[i])]`` summed log-probabilities of each continuation.

    ``contexts`` are full texts, tokenized with the tokenizer's special tokens (BOS) only when
    ``special_tokens`` — False for chat-template text, which holds its own, as in generation;
    each continuation is tokenized on its own, without special tokens, and appended.
    """
    if len(contexts) != len(continuations):
        raise ValueError(f"{len(contexts)} contexts but {len(continuations)} continuation lists")
    tok = handle.tokenizer
    encode = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    # One sequence per (context, continuation), except that single-token continuations of one
    # context share the context's pass: (ids, [(item, option, first scored position, target ids)]).
    sequences: list[tuple[list[int], list[tuple[int, int, int, list[int]]]]] = []
    for i, (context, options) in enumerate(zip(contexts, continuations)):
        ctx = tok(context, add_special_tokens=special_tokens)["input_ids"]
        conts = [encode(c) for c in options]
        if not ctx or any(not c for c in conts):
            raise ValueError(f"item {i}: the context and every continuation must tokenize to at least one token")
        if all(len(c) == 1 for c in conts):
            sequences.append((ctx, [(i, j, len(ctx) - 1, c) for j, c in enumerate(conts)]))
        else:
            sequences.extend((ctx + c[:-1], [(i, j, len(ctx) - 1, c)]) for j, c in enumerate(conts))
    scores = [[0.0] * len(options) for options in continuations]
    order = sorted(range(len(sequences)), key=lambda k: len(sequences[k][0]))
    bar = tqdm(total=len(sequences), desc=desc, unit="pass", disable=not progress)
    for start in range(0, len(order), batch_size):
        batch = [sequences[k] for k in order[start:start + batch_size]]
        wanted = [sorted({first + s for _, _, first, target in targets for s in range(len(target))})
                  for _, targets in batch]
        for (ids, targets), positions, logprobs in zip(batch, wanted, _score_batch(handle, [i for i, _ in batch], wanted)):
            at = {p: r for r, p in enumerate(positions)}
            for item, option, first, target in targets:
                scores[item][option] = float(sum(logprobs[at[first + s], t] for s, t in enumerate(target)))
        bar.update(len(batch))
    bar.close()
    return scores


def _score_batch(handle: ModelHandle, batch: list[list[int]], positions: list[list[int]]) -> list[Tensor]:
    """Per sequence a ``[len(positions[i]), vocab]`` float32 log-softmax of the next-token logits there."""
    width = max(len(ids) for ids in batch)
    pad = handle.tokenizer.pad_token_id if handle.tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    scored = torch.zeros((len(batch), width), dtype=torch.bool)
    for row, (ids, where) in enumerate(zip(batch, positions)):  # right padding: positions start at 0
        input_ids[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = 1
        scored[row, where] = True
    with torch.no_grad():
        res = capture_residuals(handle, input_ids, mask, positions=scored, layers=[handle.n_layers])
        logprobs = torch.log_softmax(handle.head(res.hidden[0]).float(), dim=-1)  # [scored rows, vocab]
    return list(logprobs.split([len(where) for where in positions]))  # rows are row-major


def choose(scores: Sequence[float], labels: Sequence[str]) -> str:
    """The label of the highest score (the first on a tie)."""
    return labels[max(range(len(scores)), key=lambda k: (scores[k], -k))]
