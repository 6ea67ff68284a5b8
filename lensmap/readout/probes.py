"""Run prompt sets through a model and a lens; reduce to tidy per-layer frames.

This is the backbone's driver: tokenize (left padding) → capture the residual stream at the
selected positions → decode every layer with the lens, chunk by chunk → per-language mass,
entropy and answer-token probabilities → pandas frames (one row per model × probe × layer ×
language, averaged over the probe's prompts).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from lensmap.capture.backends import Backend, as_handle, default_backend, get_backend
from lensmap.capture.inputs import PositionSpec
from lensmap.data.probes import Prompt
from lensmap.errors import ProbeError
from lensmap.lenses.base import Lens
from lensmap.lenses.logit import LogitLens
from lensmap.metrics.answers import (
    answer_first_token,
    decode_vocab_texts,
    disjoint_sets,
    prefix_index,
    word_start_token_ids,
)
from lensmap.metrics.mass import Readout, TokenSets, read_layers
from lensmap.models.handle import ModelHandle
from lensmap.models.tokenizers import left_padded

KEYS = ["model", "probe", "source", "target"]


@dataclass
class AnswerTokens:
    """Token ids a prompt's answer is scored by (−1 / empty where unknown).

    ``next_token``: ``[target, english]`` first tokens; ``word_start``: the two word-start
    sets with their overlap removed.
    """

    next_token: list[int]
    word_start: list[list[int]]


@dataclass
class ProbeResult:
    """Tidy outputs of :func:`run_probes` (see the column lists in docs/outputs.md)."""

    mass: pd.DataFrame
    stats: pd.DataFrame
    answers: pd.DataFrame
    prompts: pd.DataFrame
    info: dict = field(default_factory=dict)
    row_mass: np.ndarray | None = None  # [layers, rows, columns] per-row mass (what the frames average)
    row_prompt: np.ndarray | None = None  # [rows] index into the prompts of each row


def answer_tokens(tokenizer, prompts: Sequence[Prompt], vocab_texts: list[str] | None = None) -> list[AnswerTokens]:
    """Resolve each prompt's answer (and English counterpart) to token ids; ProbeError if unencodable."""
    index = None
    if any(p.answer for p in prompts):
        index = prefix_index(vocab_texts if vocab_texts is not None else decode_vocab_texts(tokenizer))
    resolved = []
    for p in prompts:
        if not p.answer:
            resolved.append(AnswerTokens([-1, -1], [[], []]))
            continue
        target = answer_first_token(tokenizer, p.text, p.answer)
        english_form = (" " + p.answer_en) if p.answer.startswith(" ") and p.answer_en else p.answer_en
        english = answer_first_token(tokenizer, p.text, english_form) if p.answer_en else -1
        if p.answer_en and english == target:
            english = -1  # same first token (e.g. a shared name): it cannot tell the languages apart
        t_set = word_start_token_ids(tokenizer, p.answer.strip(), index=index)
        e_set = word_start_token_ids(tokenizer, p.answer_en.strip(), index=index) if p.answer_en else []
        t_set, e_set = disjoint_sets(t_set, e_set)
        resolved.append(AnswerTokens([target, english], [t_set, e_set]))
    return resolved


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield range(start, min(n, start + size))


def run_probes(
    handle: ModelHandle,
    prompts: Sequence[Prompt],
    weights: torch.Tensor,
    columns: Sequence[str],
    *,
    lens: Lens | None = None,
    positions: PositionSpec = "last",
    batch_size: int = 8,
    vocab_share: Sequence[float] | None = None,
    vocab_texts: list[str] | None = None,
    progress: bool = True,
    backend: str | Backend | None = None,
    too_long: str = "error",
) -> ProbeResult:
    """Read every layer of ``handle`` on ``prompts`` through ``lens`` (default: logit lens).

    Args:
        handle: a ModelHandle, or a Hugging Face model, TransformerLens bridge or nnsight model
            (see :func:`lensmap.capture.wrapped.as_handle`).
        weights: ``[vocab, n_columns]`` language map (see ``VocabularyMap.weights``).
        columns: the names of the weight columns (languages, then buckets).
        positions: ``"last"`` (the next-token prediction of each prompt) or ``"all"``.
        vocab_share: each column's share of the vocabulary, reported beside the mass.
        backend: how the residuals are captured: ``native`` hooks, ``transformer-lens`` or
            ``nnsight`` (a name or a backend from :func:`lensmap.capture.backends.get_backend`); default:
            the library of a wrapped bridge / nnsight model, else ``native``.
        too_long: a prompt longer than the model's context is an ``"error"`` (ProbeError naming
            it), or is cut to its last tokens with a warning (``"truncate"``).
    """
    handle = as_handle(handle)
    capture = get_backend(default_backend(handle) if backend is None else backend)
    if not prompts:
        raise ProbeError("no prompts to run: every probe set came out empty")
    tokenizer = handle.tokenizer
    if tokenizer is None:
        raise ProbeError("this model handle has no tokenizer; pass one to ModelHandle.wrap(model, tokenizer)")
    if weights.shape[0] != handle.vocab_size:
        raise ProbeError(
            f"the language map has {weights.shape[0]} rows but the model's unembedding has {handle.vocab_size}: "
            "build the vocabulary map with vocab_size=handle.vocab_size"
        )
    lens = lens or LogitLens(handle)
    limit = check_prompt_lengths(tokenizer, prompts, handle.context_length, too_long)
    targets = answer_tokens(tokenizer, prompts, vocab_texts)
    layers = list(range(handle.n_layers + 1))
    records: list[tuple[np.ndarray, Readout]] = []
    # left padding, and a pad token if the tokenizer has none; both restored afterwards
    with tqdm(total=len(prompts), desc=f"lens {handle.name}", unit="prompt", disable=not progress) as bar, \
            left_padded(tokenizer):
        for batch in _batches(len(prompts), batch_size):
            enc = tokenizer([prompts[i].text for i in batch], return_tensors="pt", padding=True,
                            truncation=limit is not None, max_length=limit)
            res = capture(handle, enc["input_ids"], enc["attention_mask"], positions=positions, layers=layers)
            prompt_of_row = np.asarray([batch[b] for b in res.rows[:, 0].tolist()])
            last_of_row = _is_last_real_token(res.rows, enc["attention_mask"])
            ids = torch.tensor([targets[i].next_token if last else [-1, -1]
                                for i, last in zip(prompt_of_row, last_of_row)], dtype=torch.long)
            sets = TokenSets.from_lists([targets[i].word_start if last else [[], []]
                                         for i, last in zip(prompt_of_row, last_of_row)])
            readout = read_layers(lens, res.hidden, layers, weights, token_ids=ids, token_sets=sets)
            records.append((prompt_of_row, readout))
            bar.update(len(batch))
    result = _frames(handle, prompts, targets, records, list(columns), vocab_share, lens.name)
    result.info["backend"] = getattr(capture, "name", type(capture).__name__)
    return result


def check_prompt_lengths(tokenizer, prompts: Sequence[Prompt], context: int | None, too_long: str) -> int | None:
    """Tokenize every prompt once: a clear error for text the tokenizer refuses or a prompt beyond ``context``.

    Returns the length to truncate to (``context`` when ``too_long="truncate"`` and a prompt is
    longer, with a warning naming how many were cut), else None.
    """
    if too_long not in ("error", "truncate"):
        raise ProbeError(f"too_long must be 'error' or 'truncate'; got {too_long!r}")
    longest, over = 0, []
    for i, prompt in enumerate(prompts):
        try:
            n = len(tokenizer(prompt.text)["input_ids"])
        except (TypeError, ValueError, UnicodeError) as error:
            raise ProbeError(f"prompt {i} of probe {prompt.probe!r} cannot be tokenized ({type(error).__name__}: "
                             f"{error}); remove characters that are not valid Unicode text") from None
        longest = max(longest, n)
        if context is not None and n > context:
            over.append((i, n))
    if not over:
        return None
    i, n = over[0]
    if too_long == "error":
        raise ProbeError(f"{len(over)} prompt(s) are longer than the model's context of {context} tokens "
                         f"(prompt {i} of probe {prompts[i].probe!r} has {n}); shorten them, or set "
                         "too_long: truncate to keep each prompt's last tokens")
    warnings.warn(f"{len(over)} prompt(s) longer than the model's context of {context} tokens were cut to their "
                  f"last {context} tokens (the longest had {longest})", stacklevel=3)
    return context


def _is_last_real_token(rows: torch.Tensor, attention_mask: torch.Tensor) -> list[bool]:
    last = attention_mask.shape[1] - 1 - attention_mask.flip(1).argmax(1)
    return [pos == last[b].item() for b, pos in rows.tolist()]


def _frames(handle, prompts, targets, records, columns, vocab_share, lens_name) -> ProbeResult:
    prompt_idx = np.concatenate([r[0] for r in records])  # [n_rows] prompt index of each row
    cat = lambda name: torch.cat([getattr(r[1], name) for r in records], dim=1).numpy()  # noqa: E731
    mass, entropy, tprob, trank, sprob, top = (
        cat(n) for n in ("mass", "entropy", "token_prob", "token_rank", "set_prob", "top_token"))
    n_layers, n_rows = entropy.shape
    meta = pd.DataFrame({
        "model": handle.name,
        "probe": [prompts[i].probe for i in prompt_idx],
        "source": [prompts[i].source for i in prompt_idx],
        "target": [prompts[i].target for i in prompt_idx],
    })
    layer_col = np.repeat(np.arange(n_layers), n_rows)
    per_row = pd.concat([meta] * n_layers, ignore_index=True).assign(layer=layer_col)

    mass_long = pd.concat(
        [per_row.assign(language=name, mass=mass[:, :, c].reshape(-1)) for c, name in enumerate(columns)],
        ignore_index=True,
    )
    mass_df = _summarise(mass_long, "mass", KEYS + ["layer", "language"])
    share = dict(zip(columns, vocab_share)) if vocab_share is not None else {}
    mass_df["vocab_share"] = mass_df["language"].map(share).astype(float)
    mass_df = mass_df[KEYS + ["layer", "language", "mass", "mass_std", "vocab_share", "n_prompts"]]

    stats_df = _summarise(per_row.assign(entropy=entropy.reshape(-1)), "entropy", KEYS + ["layer"])
    stats_df["max_entropy"] = float(np.log(handle.vocab_size))
    stats_df["lens"] = lens_name

    answer_cols = KEYS + ["layer", "word", "measure", "prob", "prob_std", "rank", "n_prompts"]
    if tprob.shape[2] and not np.isnan(tprob[0, :, 0]).all():
        empty_set = np.array([[len(s) == 0 for s in targets[i].word_start] for i in prompt_idx])  # [n_rows, 2]
        sprob = np.where(empty_set[None], np.nan, sprob)
        parts = []
        for k, word in enumerate(("target", "english")):
            base = per_row.assign(word=word)
            parts.append(base.assign(measure="next_token", prob=tprob[:, :, k].reshape(-1), rank=trank[:, :, k].reshape(-1)))
            parts.append(base.assign(measure="word_start", prob=sprob[:, :, k].reshape(-1), rank=np.nan))
        long = pd.concat(parts, ignore_index=True).dropna(subset=["prob"])
        answers_df = _summarise(long, "prob", KEYS + ["layer", "word", "measure"])
        ranks = long.groupby(KEYS + ["layer", "word", "measure"], sort=False)["rank"].median().reset_index()
        answers_df = answers_df.merge(ranks, on=KEYS + ["layer", "word", "measure"], how="left")[answer_cols]
    else:
        answers_df = pd.DataFrame(columns=answer_cols)

    tok = handle.tokenizer
    last_row = {int(i): r for r, i in enumerate(prompt_idx)}  # rows are in order: the last one per prompt wins
    prompts_df = pd.DataFrame({
        "probe": [p.probe for p in prompts], "item": [p.item for p in prompts],
        "source": [p.source for p in prompts], "target": [p.target for p in prompts],
        "prompt": [p.text for p in prompts], "answer": [p.answer for p in prompts],
        "answer_en": [p.answer_en for p in prompts],
        "answer_token": [_token_text(tok, t.next_token[0]) for t in targets],
        "english_token": [_token_text(tok, t.next_token[1]) for t in targets],
        "n_target_word_start": [len(t.word_start[0]) for t in targets],
        "n_english_word_start": [len(t.word_start[1]) for t in targets],
        "final_top_token": [_token_text(tok, int(top[-1, last_row[i]])) for i in range(len(prompts))],
    })
    return ProbeResult(mass_df, stats_df, answers_df, prompts_df, {"lens": lens_name, "n_rows": int(n_rows),
                                                                    "columns": list(columns)},
                       row_mass=mass, row_prompt=prompt_idx)


def _summarise(long: pd.DataFrame, value: str, by: list[str]) -> pd.DataFrame:
    """Mean, standard deviation and count of ``value`` over prompts, per group."""
    g = long.groupby(by, sort=False)[value]
    return g.agg(**{value: "mean", f"{value}_std": "std", "n_prompts": "count"}).reset_index()


def _token_text(tokenizer, token_id: int) -> str:
    return "" if token_id < 0 else tokenizer.decode([token_id])
