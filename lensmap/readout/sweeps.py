"""Drive a layer sweep: the items of each metric, one cached pass per batch, every setting replayed.

A metric is a :class:`Task`: items whose log-probabilities of given tokens at given positions
are read (an English answer's tokens, a passage's tokens, four option letters, one answer
token) and how a row of log-probabilities becomes the item's value (``loss``: mean negative
log-probability per token; ``prob``: probability of one token; ``choice``: 1 when the gold
option has the highest log-likelihood). For each batch the unchanged model runs once
(:func:`~lensmap.capture.ablation.cache_blocks`); every setting then recomputes only the blocks
at and above its first intervened block (:func:`~lensmap.capture.ablation.intervened_residual`).
Only the rows read go through the final norm and unembedding, in chunks, softmax in float32.

The share of greedy generations in the target language (:func:`generation_task`) needs real
decoding, so it runs ``generate`` under the intervention's hooks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from lensmap.capture.ablation import BlockCache, Intervention, cache_blocks, intervene, intervened_residual
from lensmap.data.probes import translation_probes
from lensmap.errors import LensmapError
from lensmap.frames import columns
from lensmap.languages.lid import identify_text, same_language
from lensmap.metrics.answers import answer_first_token
from lensmap.metrics.choices import choice_correct, option_logliks
from lensmap.metrics.sweeps import Setting, interval, item_means
from lensmap.models.handle import ModelHandle
from lensmap.models.tokenizers import left_padded

HEAD_ROWS = 64  # rows per final-norm + unembedding chunk: 64 × 262k float32 logits ≈ 67 MB


@dataclass
class Item:
    """One item: its token ids, and per read the position whose logits are read and the token ids scored there."""

    ids: list[int]
    reads: list[tuple[int, list[int]]]
    gold: int = -1


@dataclass
class Task:
    """One metric in one language: its items and how their log-probabilities reduce (``loss`` | ``prob`` | ``choice``)."""

    metric: str
    language: str
    reduce: str
    items: list[Item] = field(default_factory=list)


@dataclass
class Batch:
    """Left-padded ``input_ids`` / ``attention_mask`` ``[b, s]``; ``rows [n, 2]`` read positions, ``targets [n, K]``, ``item [n]``."""

    input_ids: Tensor
    attention_mask: Tensor
    rows: Tensor
    targets: Tensor
    item: Tensor
    gold: Tensor


def _encode(tokenizer, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def continuation_item(tokenizer, prompt: str, continuation: str) -> Item:
    """Score every token of ``continuation`` after ``prompt`` (each read at the position before it)."""
    head = _encode(tokenizer, prompt, True)
    full = _encode(tokenizer, prompt + continuation, True)
    if full[:len(head)] != head or len(full) == len(head):  # the tokenizer merged across the boundary
        full = head + _encode(tokenizer, continuation, False)
    if len(full) == len(head):
        raise LensmapError(f"continuation {continuation!r} has no tokens")
    return Item(full, [(p - 1, [full[p]]) for p in range(len(head), len(full))])


def text_item(tokenizer, text: str, max_tokens: int) -> Item:
    """Score every token of ``text`` after its first (cut to ``max_tokens`` tokens)."""
    ids = _encode(tokenizer, text, True)[:max_tokens]
    if len(ids) < 2:
        raise LensmapError(f"text {text[:40]!r} has fewer than two tokens")
    return Item(ids, [(p - 1, [ids[p]]) for p in range(1, len(ids))])


def next_token_item(tokenizer, prompt: str, options: Sequence[str], gold: int = -1) -> Item:
    """Read the last position of ``prompt``: the first token of each option as it follows the prompt."""
    ids = _encode(tokenizer, prompt, True)
    return Item(ids, [(len(ids) - 1, [answer_first_token(tokenizer, prompt, o) for o in options])], gold)


def en_answer_task(tokenizer, language: str, n: int, seed: int = 0) -> Task:
    """Perception: the loss of the English answer of a ``language`` → English word translation."""
    prompts = translation_probes(language, "en", n=n, seed=seed)
    return Task("en_answer_loss", language, "loss", [continuation_item(tokenizer, p.text, p.answer) for p in prompts])


def target_answer_task(tokenizer, language: str, n: int, seed: int = 0) -> Task:
    """Production: the probability of the first token of the ``language`` answer of an English → ``language`` translation."""
    prompts = translation_probes("en", language, n=n, seed=seed)
    return Task("target_answer_prob", language, "prob", [next_token_item(tokenizer, p.text, [p.answer]) for p in prompts])


def text_task(tokenizer, language: str, passages: Sequence[str], max_tokens: int = 48) -> Task:
    """Production: next-token loss on ``language`` text."""
    return Task("text_loss", language, "loss", [text_item(tokenizer, t, max_tokens) for t in passages])


def mmlu_prompt(question: str, options: Sequence[str]) -> str:
    """The question, its options lettered A–D, then ``Answer:`` (the letters are scored with a leading space)."""
    lines = [question] + [f"{letter}. {text}" for letter, text in zip("ABCD", options)]
    return "\n".join(lines) + "\nAnswer:"


def mmlu_task(tokenizer, language: str, items: Sequence) -> Task:
    """Perception: MMLU accuracy by the log-likelihood of the four option letters (``items``: BenchItems)."""
    return Task("mmlu_accuracy", language, "choice",
                [next_token_item(tokenizer, mmlu_prompt(i.question, i.options), [" A", " B", " C", " D"],
                                 "ABCD".index(i.answer)) for i in items])


def make_batches(task: Task, pad_id: int, batch_size: int) -> list[Batch]:
    """Left-pad the task's items into batches (read positions shifted by each row's padding)."""
    out = []
    for first in range(0, len(task.items), batch_size):
        chunk = task.items[first:first + batch_size]
        width = max(len(i.ids) for i in chunk)
        k = max(len(t) for i in chunk for _, t in i.reads)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        rows, targets, item = [], [], []
        for r, it in enumerate(chunk):
            offset = width - len(it.ids)
            ids[r, offset:] = torch.tensor(it.ids)
            mask[r, offset:] = 1
            for pos, toks in it.reads:
                if len(toks) != k:
                    raise LensmapError(f"task {task.metric}: every read must score the same number of tokens")
                rows.append((r, pos + offset))
                targets.append(toks)
                item.append(r)
        out.append(Batch(ids, mask, torch.tensor(rows), torch.tensor(targets), torch.tensor(item),
                         torch.tensor([it.gold for it in chunk])))
    return out


def read_logprobs(handle: ModelHandle, residual: Tensor, rows: Tensor, targets: Tensor) -> Tensor:
    """``[n, K]`` float32 log-probabilities of ``targets`` at ``rows`` of the last residual ``[b, s, d]``."""
    picked = residual[rows[:, 0].to(residual.device), rows[:, 1].to(residual.device)]
    out = []
    with torch.no_grad():
        for first in range(0, len(picked), HEAD_ROWS):
            logits = handle.head(picked[first:first + HEAD_ROWS]).float()
            logp = torch.log_softmax(logits, dim=-1)
            out.append(logp.gather(1, targets[first:first + HEAD_ROWS].to(logp.device)).cpu())
    return torch.cat(out)


def item_values(task: Task, batch: Batch, logprobs: Tensor) -> Tensor:
    """Per-item values of one batch: ``[b]`` float64."""
    n = batch.input_ids.shape[0]
    if task.reduce == "loss":
        return item_means(-logprobs[:, 0], batch.item, n)
    if task.reduce == "prob":
        return item_means(logprobs[:, 0].exp(), batch.item, n)
    if task.reduce == "choice":
        scores = option_logliks(logprobs[:, :, None], torch.ones_like(logprobs[:, :, None], dtype=torch.bool))
        return choice_correct(scores, batch.gold[batch.item]).double()
    raise LensmapError(f"unknown reduce {task.reduce!r}")


InterventionFactory = Callable[[tuple[int, ...]], Intervention]


def evaluate_settings(
    handle: ModelHandle,
    tasks: Sequence[Task],
    settings: Sequence[Setting],
    interventions: dict[str, InterventionFactory],
    *,
    batch_size: int = 8,
    progress: bool = True,
) -> dict[tuple[str, str, str, str, int], list[float]]:
    """Per-item values ``{(intervention, direction, metric, language, k): [values]}`` for every task × setting."""
    tokenizer = handle.tokenizer
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    values: dict[tuple[str, str, str, str, int], list[float]] = {}
    work = [(task, batch) for task in tasks for batch in make_batches(task, pad, batch_size)]
    for task, batch in tqdm(work, desc="sweep", disable=not progress, unit="batch"):
        cache: BlockCache = cache_blocks(handle, batch.input_ids, batch.attention_mask)
        for name, factory in interventions.items():
            for setting in settings:
                residual = intervened_residual(handle, cache, factory(setting.blocks))
                vals = item_values(task, batch, read_logprobs(handle, residual, batch.rows, batch.targets))
                key = (name, setting.direction, task.metric, task.language, setting.k)
                values.setdefault(key, []).extend(vals.tolist())
        del cache
    return values


def generation_share(handle: ModelHandle, prompts: Sequence[str], language: str, intervention: Intervention,
                     max_new_tokens: int = 12) -> list[float]:
    """Per prompt 1.0 when the greedy continuation under ``intervention`` is identified as ``language``."""
    tokenizer = handle.tokenizer
    with left_padded(tokenizer):
        enc = tokenizer(list(prompts), return_tensors="pt", padding=True)
    ids, mask = enc["input_ids"].to(handle.device), enc["attention_mask"].to(handle.device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with intervene(handle, intervention), torch.no_grad():
        handle.model.eval()  # generate derives position ids from the attention mask (left padding is safe)
        out = handle.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                    do_sample=False, pad_token_id=pad)
    texts = tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)
    return [1.0 if same_language(identify_text(t)[0], language) else 0.0 for t in texts]


def sweep_frame(values: dict[tuple[str, str, str, str, int], list[float]], model: str,
                settings: Sequence[Setting], *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """The ``sweep.csv`` frame: one row per intervention × setting × language × metric, mean and 95 % interval."""
    blocks = {(s.direction, s.k): " ".join(map(str, s.blocks)) for s in settings}
    rows = []
    for (name, direction, metric, language, k), vals in values.items():
        mean, low, high = interval(vals, n_boot=n_boot, seed=seed)
        rows.append(dict(model=model, intervention=name, direction=direction, k=k, blocks=blocks[(direction, k)],
                         language=language, metric=metric, value=mean, ci_low=low, ci_high=high, n_items=len(vals)))
    frame = pd.DataFrame(rows, columns=columns("sweep"))
    return frame.sort_values(["intervention", "metric", "language", "direction", "k"], kind="stable").reset_index(drop=True)
