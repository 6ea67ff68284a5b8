"""Train a tuned lens: minimise KL(final distribution ‖ lens distribution) at every layer.

One step: a batch of packed sequences (languages interleaved, so every language gets the same
number of tokens) goes through the frozen model once; the hidden states of every layer at the
sampled positions are kept (:func:`lensmap.capture.capture_residuals` with a position mask),
the target distribution comes from the last layer (the model's own logits), and every layer's
translator trains on those same cached states. Position 0 of a sequence is never used: it has
no context, and in many models (Qwen2.5 among them) it carries huge "attention sink"
activations that tell nothing about the other positions.

Repeatable: the data order, the positions sampled in each sequence and the optimiser are all
derived from ``seed``; a run resumed from a checkpoint continues exactly where it stopped.
Checkpoints are written atomically (:mod:`lensmap.io`).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F
from tqdm.auto import tqdm

from lensmap.capture import capture_residuals, preserved_state
from lensmap.errors import LensmapError
from lensmap.lenses.tuned import TunedLens
from lensmap.models.handle import ModelHandle


@dataclass
class TrainSettings:
    """How a tuned lens is trained (every field is saved with the lens).

    Attributes:
        tokens_per_language: trained positions per language (the lens-training budget).
        seq_len: tokens per packed sequence (the context the model sees).
        positions_per_sequence: positions of each sequence the lens trains on, one drawn at
            random from each of that many equal stretches of positions 1..seq_len-1 (0 = all).
        batch_size: sequences per frozen forward pass. Their positions are pooled, shuffled
            across languages and cut into optimiser steps of ``rows_per_step`` positions, so
            every step mixes languages (steps of one language at a time train a much worse lens).
        rows_per_step: positions per optimiser step.
        lr: peak Adam learning rate (linear warm-up, then cosine decay to zero).
        warmup_steps: steps of linear warm-up.
        weight_decay: decoupled weight decay on the translator matrices (AdamW).
        seed: seeds data order and position sampling.

    The translators are float32; the norm and unembedding run in the model's own dtype
    (bfloat16 by default on a CPU with native bf16, about 4× faster than float32). Load the
    model in float32 to train through a float32 head.
    """

    tokens_per_language: int = 2048
    seq_len: int = 128
    positions_per_sequence: int = 32
    batch_size: int = 8
    rows_per_step: int = 32
    lr: float = 1e-3
    warmup_steps: int = 10
    weight_decay: float = 0.0
    seed: int = 0

    def check(self) -> "TrainSettings":
        for name in ("tokens_per_language", "seq_len", "batch_size", "rows_per_step"):
            if getattr(self, name) < 1:
                raise LensmapError(f"{name} must be at least 1; got {getattr(self, name)}")
        if self.seq_len < 2:
            raise LensmapError(f"seq_len must be at least 2; got {self.seq_len}")
        if self.positions_per_sequence < 0 or self.warmup_steps < 0 or self.weight_decay < 0:
            raise LensmapError("positions_per_sequence, warmup_steps and weight_decay must not be negative")
        if not self.lr > 0:
            raise LensmapError(f"lr must be positive; got {self.lr}")
        return self

    @property
    def rows_per_sequence(self) -> int:
        usable = self.seq_len - 1
        return usable if self.positions_per_sequence in (0, None) else min(self.positions_per_sequence, usable)

    def sequences_per_language(self) -> int:
        return math.ceil(self.tokens_per_language / self.rows_per_sequence)


@dataclass
class TrainResult:
    """What a training run did (also stored in the lens's ``info``)."""

    steps: int
    total_steps: int
    seconds: float
    tokens_per_language: int
    languages: list[str]
    stopped_early: bool = False
    resumed_from_step: int = 0
    final_kl: list[float] = field(default_factory=list)  # per layer 0..L-1, mean over the last 10% of steps
    history: list[float] = field(default_factory=list)  # mean KL over layers, per step


# --------------------------------------------------------------------------- data


def sample_positions(seq_len: int, per_sequence: int, generator: torch.Generator) -> Tensor:
    """Sorted positions in 1..seq_len-1: one uniformly random position in each of ``per_sequence`` stretches."""
    usable = seq_len - 1
    if per_sequence <= 0 or per_sequence >= usable:
        return torch.arange(1, seq_len)
    edges = torch.linspace(0, usable, per_sequence + 1)
    low, high = edges[:-1].floor().long(), edges[1:].floor().long()
    offsets = (torch.rand(per_sequence, generator=generator) * (high - low).clamp(min=1)).long()
    return torch.unique(1 + low + offsets)


def interleave(packed: Mapping[str, Tensor], seed: int) -> list[tuple[str, int]]:
    """``(language, row)`` pairs: round after round, one sequence of each language (order shuffled per round)."""
    languages = list(packed)
    n = min(int(rows.shape[0]) for rows in packed.values())
    g = torch.Generator().manual_seed(seed)
    order = []
    for k in range(n):
        for i in torch.randperm(len(languages), generator=g).tolist():
            order.append((languages[i], k))
    return order


def position_mask(n_rows: int, seq_len: int, per_sequence: int, seed: int, first_index: int) -> Tensor:
    """``[n_rows, seq_len]`` bool mask; row ``r`` uses the generator of global sequence ``first_index + r``."""
    mask = torch.zeros(n_rows, seq_len, dtype=torch.bool)
    for r in range(n_rows):
        g = torch.Generator().manual_seed(hash_seed(seed, first_index + r))
        mask[r, sample_positions(seq_len, per_sequence, g)] = True
    return mask


def hash_seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big") & (2**63 - 1)


# --------------------------------------------------------------------------- the loss


def target_distribution(lens: TunedLens, final_hidden: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Final-layer probabilities ``[rows, vocab]`` (float32) and their negative entropy ``[rows]``."""
    with torch.no_grad():
        logits = lens._logit.decode(final_hidden.to(dtype)).float()
        logp = torch.log_softmax(logits, dim=-1)
        p = logp.exp()
        neg_entropy = torch.bmm(p.unsqueeze(1), torch.where(p > 0, logp, 0.0).unsqueeze(2)).view(-1)
    return p, neg_entropy


def layer_kl(lens: TunedLens, hidden: Tensor, layer: int, p: Tensor, neg_entropy: Tensor) -> Tensor:
    """Per-row KL(p ‖ lens) in nats, with gradients to the layer's translator."""
    logits = lens.decode(hidden, layer).float()
    return neg_entropy + F.cross_entropy(logits, p, reduction="none")


# --------------------------------------------------------------------------- checkpoints


def _run_key(lens: TunedLens, settings: TrainSettings, packed: Mapping[str, Tensor]) -> str:
    digest = hashlib.sha256(json.dumps({"model": lens.fingerprint, "settings": asdict(settings)},
                                       sort_keys=True).encode())
    for lang, rows in packed.items():
        digest.update(lang.encode())
        digest.update(rows.numpy().tobytes())
    return digest.hexdigest()


def _save_checkpoint(path: Path, key: str, block: int, lens: TunedLens, optimizer, elapsed: float,
                     history: list[list[float]]) -> None:
    from lensmap.io import atomic_write_bytes

    buffer = io.BytesIO()
    torch.save({"key": key, "block": block, "elapsed": elapsed, "history": history,
                "lens": lens.state_tensors(), "optimizer": optimizer.state_dict()}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _load_checkpoint(path: Path, key: str, lens: TunedLens, optimizer) -> tuple[int, float, list[list[float]]]:
    before = lens.state_tensors()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("key") != key:
            warnings.warn(f"checkpoint {path} is from a different run (other model, settings or text); starting afresh",
                          stacklevel=3)
            return 0, 0.0, []
        with torch.no_grad():
            for layer, t in enumerate(lens.translators):
                t.weight.copy_(state["lens"][f"weight.{layer}"])
                t.bias.copy_(state["lens"][f"bias.{layer}"])
        optimizer.load_state_dict(state["optimizer"])
        return int(state["block"]), float(state["elapsed"]), [list(h) for h in state["history"]]
    except Exception as error:  # a torn or foreign file: never fatal, just start again
        warnings.warn(f"cannot resume from checkpoint {path} ({type(error).__name__}: {error}); starting afresh",
                      stacklevel=3)
        with torch.no_grad():
            for layer, t in enumerate(lens.translators):
                t.weight.copy_(before[f"weight.{layer}"])
                t.bias.copy_(before[f"bias.{layer}"])
        return 0, 0.0, []


# --------------------------------------------------------------------------- training


def _make_optimizer(lens: TunedLens, settings: TrainSettings, total_steps: int):
    matrices = [t.weight for t in lens.translators]
    biases = [t.bias for t in lens.translators]
    optimizer = torch.optim.AdamW(
        [{"params": matrices, "weight_decay": settings.weight_decay}, {"params": biases, "weight_decay": 0.0}],
        lr=settings.lr, betas=(0.9, 0.99), eps=1e-8,
    )
    warm = max(0, min(settings.warmup_steps, total_steps - 1))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        progress = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return optimizer, factor


def prepare_training_tokens(
    handle: ModelHandle,
    corpus: Mapping[str, Sequence[str]],
    settings: TrainSettings,
    *,
    check_languages: bool = True,
) -> dict[str, Tensor]:
    """Pack a passage corpus into the balanced token rows :func:`train_tuned_lens` needs."""
    from lensmap.data.text import check_corpus_languages, pack_corpus

    if handle.tokenizer is None:
        raise LensmapError("training on text needs a tokenizer; pass one to ModelHandle.wrap(model, tokenizer)")
    if check_languages:
        check_corpus_languages(corpus)
    return pack_corpus(handle.tokenizer, corpus, seq_len=settings.seq_len,
                       n_sequences=settings.sequences_per_language(), seed=settings.seed, what="training")


def train_tuned_lens(
    handle: ModelHandle,
    corpus: Mapping[str, Sequence[str]] | Mapping[str, Tensor],
    settings: TrainSettings | None = None,
    *,
    lens: TunedLens | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 25,
    max_minutes: float | None = None,
    check_languages: bool = True,
    progress: bool = True,
    **overrides: Any,
) -> TunedLens:
    """Train a tuned lens for ``handle`` on ``corpus`` and return it (the model is left as it came).

    Args:
        corpus: ``{language: [passage, ...]}`` text, or ``{language: [n, seq_len] token ids}``
            already packed (:func:`lensmap.data.text.pack_corpus`). Every language gets the
            same number of trained tokens; too little text for one is an error naming it.
        settings: a :class:`TrainSettings`; keyword ``overrides`` replace single fields
            (``train_tuned_lens(handle, corpus, tokens_per_language=2048, lr=3e-4)``).
        lens: continue training this lens (default: a fresh, zero-initialised one).
        checkpoint: a file to write every ``checkpoint_every`` steps and to resume from when
            it holds the same run (same model, settings and text); removed when training ends.
        max_minutes: stop after the step that passes this wall-clock budget (the lens so far
            is returned, with ``info["stopped_early"] = True``).
    """
    settings = TrainSettings(**{**asdict(settings or TrainSettings()), **overrides}).check()
    packed = _packed_tokens(handle, corpus, settings, check_languages)
    lens = lens if lens is not None else TunedLens(handle)
    order = interleave(packed, settings.seed)
    blocks = [order[i:i + settings.batch_size] for i in range(0, len(order), settings.batch_size)]
    total_steps = sum(math.ceil(len(block) * settings.rows_per_sequence / settings.rows_per_step) for block in blocks)
    optimizer, schedule = _make_optimizer(lens, settings, total_steps)
    run = _Run(key=_run_key(lens, settings, packed), checkpoint=Path(checkpoint) if checkpoint else None)
    if run.checkpoint is not None and run.checkpoint.is_file():
        run.start_block, run.elapsed_before, run.history = _load_checkpoint(run.checkpoint, run.key, lens, optimizer)
    run.blocks_done, run.last_saved = run.start_block, len(run.history)
    start_step = len(run.history)
    bar = tqdm(total=total_steps, initial=start_step, desc=f"tuned lens {handle.name}", unit="step",
               disable=not progress)
    try:
        with preserved_state(handle.model):
            handle.model.requires_grad_(False)
            handle.model.eval()
            for b in range(run.start_block, len(blocks)):
                run.rows_trained += _train_block(handle, lens, packed, blocks[b], b, settings, optimizer, schedule,
                                                 run.history, bar)
                run.blocks_done = b + 1
                more = run.blocks_done < len(blocks)
                if run.checkpoint is not None and checkpoint_every and len(run.history) - run.last_saved >= checkpoint_every \
                        and more:
                    _save_checkpoint(run.checkpoint, run.key, run.blocks_done, lens, optimizer, run.elapsed(),
                                     run.history)
                    run.last_saved = len(run.history)
                if max_minutes and run.elapsed() > 60 * max_minutes and more:
                    run.stopped_early = True
                    break
    finally:
        bar.close()
    if run.checkpoint is not None:
        if run.stopped_early:
            _save_checkpoint(run.checkpoint, run.key, run.blocks_done, lens, optimizer, run.elapsed(), run.history)
        else:
            run.checkpoint.unlink(missing_ok=True)
    result = _result(run, settings, packed, total_steps, start_step, handle.n_layers)
    lens.info = {"settings": asdict(settings), "result": asdict(result),
                 "model_dtype": str(handle.dtype).replace("torch.", "")}
    return lens


@dataclass
class _Run:
    """The state of one training run (what a checkpoint saves and a resumed run restores)."""

    key: str
    checkpoint: Path | None
    start_block: int = 0
    elapsed_before: float = 0.0
    history: list[list[float]] = field(default_factory=list)  # per step: KL per layer
    blocks_done: int = 0
    last_saved: int = 0
    rows_trained: int = 0
    stopped_early: bool = False
    started: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started


def _packed_tokens(handle: ModelHandle, corpus: Mapping[str, Sequence[str]] | Mapping[str, Tensor],
                   settings: TrainSettings, check_languages: bool) -> dict[str, Tensor]:
    """``{language: [sequences, seq_len]}`` token rows from text, or from rows the caller packed."""
    if not corpus:
        raise LensmapError("no training text: the corpus has no languages")
    first = next(iter(corpus.values()))
    if not isinstance(first, Tensor):
        return prepare_training_tokens(handle, corpus, settings, check_languages=check_languages)
    packed = {lang: rows.long().cpu() for lang, rows in corpus.items()}
    bad = [lang for lang, rows in packed.items() if rows.dim() != 2 or rows.shape[1] != settings.seq_len]
    if bad:
        raise LensmapError(f"packed tokens for {bad} are not [n, seq_len={settings.seq_len}] tensors")
    need = settings.sequences_per_language()
    short = [f"{lang} ({rows.shape[0]} of {need})" for lang, rows in packed.items() if rows.shape[0] < need]
    if short:
        raise LensmapError(f"too few packed training sequences for {', '.join(short)}")
    return {lang: rows[:need] for lang, rows in packed.items()}


def _train_block(handle: ModelHandle, lens: TunedLens, packed: Mapping[str, Tensor], chunk: list[tuple[str, int]],
                 b: int, settings: TrainSettings, optimizer, schedule, history: list[list[float]], bar) -> int:
    """One frozen forward over block ``b`` of sequences, then its rows, shuffled across languages, in steps.

    Appends each step's per-layer KL to ``history``; returns the number of rows trained on.
    """
    ids = torch.stack([packed[lang][k] for lang, k in chunk])
    mask = position_mask(len(chunk), settings.seq_len, settings.positions_per_sequence, settings.seed,
                         b * settings.batch_size)
    res = capture_residuals(handle, ids, torch.ones_like(ids), positions=mask.to(handle.device))
    n_layers, n_rows = handle.n_layers, res.hidden.shape[1]
    perm = torch.randperm(n_rows, generator=torch.Generator().manual_seed(hash_seed(settings.seed, "rows", b)))
    for rows in perm.to(res.hidden.device).split(settings.rows_per_step):
        step = len(history)
        p, neg_entropy = target_distribution(lens, res.hidden[n_layers, rows], handle.dtype)
        losses = []
        for layer in range(n_layers):
            loss = layer_kl(lens, res.hidden[layer, rows], layer, p, neg_entropy).mean()
            loss.backward()
            losses.append(float(loss.detach()))
        for group in optimizer.param_groups:
            group["lr"] = settings.lr * schedule(step)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        history.append(losses)
        bar.update(1)
        bar.set_postfix(kl=f"{sum(losses) / len(losses):.3f}")
    return n_rows


def _result(run: _Run, settings: TrainSettings, packed: Mapping[str, Tensor], total_steps: int, start_step: int,
            n_layers: int) -> TrainResult:
    """What the run did: steps, time, tokens per language, the final KL per layer and the KL history."""
    history = run.history
    tail = history[-max(1, len(history) // 10):] if history else []
    return TrainResult(
        steps=len(history), total_steps=total_steps, seconds=round(run.elapsed(), 1),
        tokens_per_language=(run.rows_trained + run.start_block * settings.batch_size * settings.rows_per_sequence)
        // max(1, len(packed)),
        languages=list(packed), stopped_early=run.stopped_early, resumed_from_step=start_step,
        final_kl=[round(sum(h[layer] for h in tail) / len(tail), 4) for layer in range(n_layers)] if tail else [],
        history=[round(sum(h) / len(h), 4) for h in history],
    )
