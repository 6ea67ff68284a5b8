"""Drive the model for the neuron analysis: activation statistics, pooled activations, deactivation losses.

Each function takes token sequences (lists of ids, or ``[n, seq]`` rows of packed text), batches
them with **left padding** and an attention mask, and counts only real tokens: a batch of one and
a padded batch of eight give identical statistics. The start token (BOS) is never counted: it is
the same in every language and, as an attention sink, carries huge activations.

:func:`analyse_neurons` runs the whole analysis of :class:`NeuronSettings` and returns
:class:`NeuronResults`; :func:`lensmap.runs.neurons.run_neurons` writes it to files.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from lensmap.capture.activations import activation_hooks, check_site, mlp_width
from lensmap.capture.hooks import StopForward
from lensmap.capture.neuron_ablation import NeuronSet, zero_neurons
from lensmap.capture.residuals import run_forward
from lensmap.data.parallel import bible_parallel, files_parallel, table_parallel
from lensmap.data.text import load_corpus, pack_passages
from lensmap.distributed import shard, sum_across_processes
from lensmap.errors import LensmapError, LensmapWarning
from lensmap.metrics.neurons import (
    LapeSelection,
    NeuronStats,
    activation_similarity_frame,
    deactivation_frame,
    density_frame,
    key_neuron_z,
    language_neuron_frame,
    lape_select,
    overlap_frame,
    random_control,
)
from lensmap.models.handle import ModelHandle
from lensmap.readout.states import start_token_id

Sequences = Sequence[Sequence[int]] | Tensor  # token ids per sequence, or [n, seq] packed rows


# --------------------------------------------------------------------------- batching


def _as_lists(sequences: Sequences) -> list[list[int]]:
    rows = sequences.tolist() if isinstance(sequences, Tensor) else [list(map(int, s)) for s in sequences]
    if any(len(r) == 0 for r in rows):
        raise LensmapError("a token sequence is empty; drop it before the neuron analysis")
    return rows


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """``(input_ids, attention_mask)`` ``[batch, max_len]`` with every row padded on the left."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.as_tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
    return ids, mask


def _pad_id(handle: ModelHandle) -> int:
    tok = handle.tokenizer
    for value in (getattr(tok, "pad_token_id", None), getattr(tok, "eos_token_id", None)):
        if value is not None:
            return int(value)
    return 0


def _bos_id(handle: ModelHandle) -> int | None:
    return getattr(handle.tokenizer, "bos_token_id", None) if handle.tokenizer is not None else None


def counted_mask(input_ids: Tensor, attention_mask: Tensor, bos_id: int | None) -> Tensor:
    """``[batch, seq]`` bool: real tokens that are not the start token."""
    mask = attention_mask.bool()
    if bos_id is not None:
        mask &= input_ids != bos_id
    return mask


def _batches(rows: list[list[int]], batch_size: int):
    for first in range(0, len(rows), batch_size):
        yield rows[first:first + batch_size]


# --------------------------------------------------------------------------- statistics


def collect_neuron_stats(
    handle: ModelHandle,
    sequences: Mapping[str, Sequences],
    *,
    site: str = "act",
    batch_size: int = 4,
    stats: NeuronStats | None = None,
    progress: bool = False,
) -> NeuronStats:
    """Stream every language's sequences through the model and sum the activation statistics.

    ``sequences[lang]`` are token ids; the result has one row per language in the mapping's order.
    The forward pass stops after the last block's MLP (the unembedding is not needed). Passing
    ``stats`` adds to it (a resumed or extended pass).
    """
    check_site(site)
    languages = list(sequences)
    n_blocks, width = handle.n_layers, mlp_width(handle, site)
    stats = stats or NeuronStats.empty(languages, n_blocks, width, site)
    pad, bos, device = _pad_id(handle), _bos_id(handle), handle.device
    last = n_blocks - 1
    for lang in languages:
        rows = _as_lists(sequences[lang])
        k = stats.languages.index(lang)
        for batch in tqdm(list(_batches(rows, batch_size)), desc=f"neuron stats {lang}", disable=not progress,
                          unit="batch"):
            ids, attn = left_pad(batch, pad)
            mask = counted_mask(ids, attn, bos)

            def consume(block: int, acts: Tensor, k: int = k) -> None:
                stats.add(k, block, acts)
                if block == last:
                    raise StopForward

            with activation_hooks(handle, mask.to(device), consume, site=site) as trace:
                run_forward(handle.model, ids.to(device), attn.to(device))
            trace.check()
    return stats


def collect_neuron_stats_parallel(
    handle: ModelHandle,
    sequences: Mapping[str, Sequences],
    *,
    site: str = "act",
    batch_size: int = 4,
    progress: bool = False,
) -> NeuronStats:
    """:func:`collect_neuron_stats` split over the processes of a ``torchrun`` launch.

    Process ``r`` of ``N`` streams sequences ``r, r+N, …`` of every language; the sums are then
    added across processes, so every process returns the statistics of the whole corpus: token
    counts exactly, sums to float32 rounding of the activations (other batch mates, other
    matmul blocking). In a one-process run this is
    :func:`collect_neuron_stats`.
    """
    mine = {lang: shard(_as_lists(rows)) for lang, rows in sequences.items()}
    languages = list(sequences)
    stats = NeuronStats.empty(languages, handle.n_layers, mlp_width(handle, site), site)
    stats = collect_neuron_stats(handle, {lang: rows for lang, rows in mine.items() if rows}, site=site,
                                 batch_size=batch_size, stats=stats, progress=progress)
    sum_across_processes([stats.tokens, stats.positive, stats.total, stats.squares])
    return stats


def pooled_activations(
    handle: ModelHandle,
    texts: Mapping[str, Sequence[str]],
    *,
    site: str = "act",
    batch_size: int = 8,
    progress: bool = False,
) -> Tensor:
    """``[K, N, L, D]`` float32 mean activation over each text's own tokens (read after one start token).

    ``texts[lang][i]`` is item ``i`` in language ``lang`` (every language the same number of items).
    """
    tokenizer = handle.tokenizer
    start = start_token_id(tokenizer)
    prefix = [start] if start is not None else []
    n_blocks, width = handle.n_layers, mlp_width(handle, site)
    langs = list(texts)
    n = len(texts[langs[0]])
    out = torch.zeros(len(langs), n, n_blocks, width)
    last = n_blocks - 1
    for k, lang in enumerate(langs):
        items = list(texts[lang])
        if len(items) != n:
            raise LensmapError(f"{lang} has {len(items)} items, expected {n}: parallel items must align")
        encoded = [prefix + tokenizer(t, add_special_tokens=False)["input_ids"] for t in items]
        for first in tqdm(range(0, n, batch_size), desc=f"pooled activations {lang}", disable=not progress):
            batch = encoded[first:first + batch_size]
            ids, attn = left_pad(batch, _pad_id(handle))
            own = attn.bool().clone()
            if prefix:  # left padding: each row's first real position is its start token
                own[torch.arange(len(batch)), attn.argmax(dim=1)] = False
            if not own.any(dim=1).all():
                raise LensmapError(f"a {lang} item has no tokens of its own")
            row_item = own.nonzero()[:, 0]
            counts = torch.bincount(row_item, minlength=len(batch)).float()[:, None]

            def consume(block: int, acts: Tensor, first: int = first, k: int = k) -> None:
                sums = torch.zeros(len(batch), width).index_add_(0, row_item, acts.float().cpu())
                out[k, first:first + len(batch), block] = sums / counts
                if block == last:
                    raise StopForward

            with activation_hooks(handle, own.to(handle.device), consume, site=site) as trace:
                run_forward(handle.model, ids.to(handle.device), attn.to(handle.device))
            trace.check()
    return out


# --------------------------------------------------------------------------- deactivation


def sequence_losses(handle: ModelHandle, sequences: Sequences, *, batch_size: int = 2) -> tuple[Tensor, Tensor]:
    """Per-sequence mean next-token cross-entropy (nats, float32 softmax) and its token counts.

    A position counts when it and the next token are real and the next is not the start token.
    Returns ``(loss [n], n_tokens [n])``.
    """
    rows = _as_lists(sequences)
    pad, bos, device = _pad_id(handle), _bos_id(handle), handle.device
    losses, counts = [], []
    for batch in _batches(rows, batch_size):
        ids, attn = left_pad(batch, pad)
        out = run_forward(handle.model, ids.to(device), attn.to(device))
        logits = out.logits
        target = counted_mask(ids, attn, bos)[:, 1:] & attn.bool()[:, :-1]
        for r in range(len(batch)):
            ce = torch.nn.functional.cross_entropy(logits[r, :-1].float(), ids[r, 1:].to(logits.device),
                                                   reduction="none").cpu()
            keep = target[r]
            counts.append(int(keep.sum()))
            losses.append(float(ce[keep].mean()) if keep.any() else float("nan"))
    return torch.tensor(losses, dtype=torch.float64), torch.tensor(counts)


def losses_with_neurons_off(handle: ModelHandle, heldout: Mapping[str, Sequences], neurons: NeuronSet, *,
                            site: str = "act", batch_size: int = 2) -> dict[str, Tensor]:
    """``{lang: [n_seq] loss}`` on every language's held-out text with ``neurons`` zeroed (hooks checked)."""
    out = {}
    with zero_neurons(handle, neurons, site=site) as trace:
        for lang, seqs in heldout.items():
            out[lang] = sequence_losses(handle, seqs, batch_size=batch_size)[0]
    trace.check()
    return out


# --------------------------------------------------------------------------- the whole analysis


@dataclass
class NeuronSettings:
    """The ``neurons:`` section: text, site, LAPE thresholds, deactivation and similarity.

    Token budgets are per language. ``source`` is ``bible`` or ``flores`` (and ``files:`` maps a
    language to its own text, one passage per line); held-out text comes from held-out chapters
    (lines) never used for the statistics.
    """

    languages: list[str] = field(default_factory=list)  # default: the config's languages
    site: str = "act"  # act (activation function output; LAPE) | down_input (act_fn(gate) * up; Lingua Franca)
    source: str = "bible"
    files: dict[str, str] = field(default_factory=dict)
    tokens: int = 20000  # tokens per language for the statistics
    seq_len: int = 256
    batch_size: int = 4
    tau_quantile: float = 0.95
    tau: float | None = None  # a fixed probability threshold instead of the quantile
    fraction: float = 0.01  # of all blocks × d_mlp neurons
    deactivate: bool = True
    heldout_tokens: int = 2048  # tokens per language for the deactivation losses
    similarity: bool = True
    similarity_items: int = 40  # parallel Bible verses (or the rows of similarity_table)
    similarity_table: str = ""  # a parallel TSV/JSONL table instead of Bible verses
    key_neurons: bool = False  # also Lingua Franca's z > 2 key neurons (needs more than 5 languages)
    n_boot: int = 1000
    seed: int = 0


def validate_neuron_settings(settings: NeuronSettings, languages: Sequence[str]) -> None:
    from lensmap.errors import ConfigError

    check_site(settings.site)
    if len(languages) < 2:
        raise ConfigError(f"neurons: needs at least two languages to compare; got {list(languages)}")
    if settings.source not in ("bible", "flores", "files"):
        raise ConfigError(f"neurons.source must be bible, flores or files; got {settings.source!r}")
    for name in ("tokens", "seq_len", "batch_size", "heldout_tokens", "n_boot"):
        if getattr(settings, name) < 1:
            raise ConfigError(f"neurons.{name} must be at least 1; got {getattr(settings, name)}")
    if not 0 < settings.fraction <= 1:
        raise ConfigError(f"neurons.fraction must be in (0, 1]; got {settings.fraction}")
    if not 0 <= settings.tau_quantile <= 1:
        raise ConfigError(f"neurons.tau_quantile must be in [0, 1]; got {settings.tau_quantile}")
    if settings.similarity and settings.similarity_items < 4:
        raise ConfigError("neurons.similarity_items must be at least 4 (a bootstrap over items needs several)")


def neuron_text(handle: ModelHandle, settings: NeuronSettings, languages: Sequence[str], split: str,
                tokens: int) -> dict[str, Tensor]:
    """``{lang: [n, seq_len]}`` packed rows of ``split`` text, about ``tokens`` tokens per language."""
    sources = () if settings.source == "files" else (settings.source,)
    corpus = load_corpus(languages, sources, settings.files or None, split=split)
    n_seq = max(1, math.ceil(tokens / settings.seq_len))
    packed = {}
    for lang in languages:
        rows = pack_passages(handle.tokenizer, corpus[lang], settings.seq_len, n_seq, seed=settings.seed)
        if rows.shape[0] == 0:
            raise LensmapError(f"no {split} text for {lang!r} from {settings.source}; add files: {{{lang}: text.txt}}")
        if rows.shape[0] < n_seq:
            warnings.warn(f"{lang}: only {rows.shape[0] * settings.seq_len} {split} tokens of {tokens} wanted",
                          LensmapWarning, stacklevel=2)
        packed[lang] = rows
    return packed


@dataclass
class NeuronResults:
    """Everything the neuron analysis computed (``deactivation``/``similarity`` None when switched off)."""

    stats: NeuronStats
    selection: LapeSelection
    language_neurons: pd.DataFrame
    density: pd.DataFrame
    overlap: pd.DataFrame
    deactivation: pd.DataFrame | None = None
    similarity: pd.DataFrame | None = None
    key_neurons: pd.DataFrame | None = None
    settings: dict = field(default_factory=dict)


def select_from_stats(stats: NeuronStats, settings: NeuronSettings, *, model: str = "") -> NeuronResults:
    """LAPE and its frames from saved statistics (no model needed)."""
    selection = lape_select(stats.probability(), stats.languages, tau_quantile=settings.tau_quantile,
                            tau=settings.tau, fraction=settings.fraction)
    site = stats.site
    results = NeuronResults(stats, selection, language_neuron_frame(selection, model=model, site=site),
                            density_frame(selection, model=model, site=site),
                            overlap_frame(selection, model=model, site=site))
    if settings.key_neurons:
        z, key = key_neuron_z(stats.mean())
        results.key_neurons = pd.DataFrame([
            {"model": model, "site": site, "language": lang, "block": b, "n_key": int(key[k, b].sum()),
             "max_z": float(z[k, b].max())}
            for k, lang in enumerate(stats.languages) for b in range(key.shape[1])])
    results.settings = selection.settings | {"site": site, "languages": stats.languages}
    return results


def deactivation_sets(selection: LapeSelection, d_mlp: int, seed: int = 0) -> dict[tuple[str, str], dict[int, Tensor]]:
    """Each language's neurons, and as many random unselected neurons in the same blocks (``"random"``)."""
    sets = {}
    for k, lang in enumerate(selection.languages):
        own = selection.neurons_of(lang)
        sets[(lang, "language")] = own
        sets[(lang, "random")] = random_control(own, d_mlp, exclude=selection.selected, seed=seed + k)
    return sets


def run_deactivation(handle: ModelHandle, selection: LapeSelection, heldout: Mapping[str, Sequences], *,
                     site: str = "act", batch_size: int = 2, n_boot: int = 1000, seed: int = 0,
                     progress: bool = False) -> pd.DataFrame:
    """The ``deactivation.csv`` frame: every language's neurons (and their random control) off, every language read."""
    base = {lang: sequence_losses(handle, seqs, batch_size=batch_size)[0] for lang, seqs in heldout.items()}
    sets = deactivation_sets(selection, mlp_width(handle, site), seed)
    losses, counts = {}, {}
    for key, neurons in tqdm(sets.items(), desc="deactivation", disable=not progress):
        counts[key] = sum(len(v) for v in neurons.values())
        losses[key] = losses_with_neurons_off(handle, heldout, neurons, site=site, batch_size=batch_size)
    return deactivation_frame(losses, base, counts, model=handle.name, site=site, n_boot=n_boot, seed=seed)


def similarity_items(settings: NeuronSettings, languages: Sequence[str]) -> dict[str, list[str]]:
    if settings.similarity_table:
        parallel = table_parallel(settings.similarity_table, languages)
        texts = {lang: parallel.texts[lang][:settings.similarity_items] for lang in languages}
    elif settings.source == "files":
        texts = files_parallel(settings.files).texts
    else:
        texts = bible_parallel(languages, n=settings.similarity_items, seed=settings.seed).texts
    return texts


def analyse_neurons(handle: ModelHandle, settings: NeuronSettings, languages: Sequence[str], *,
                    stats: NeuronStats | None = None, progress: bool = False) -> NeuronResults:
    """Statistics (unless ``stats`` is given) → LAPE → deactivation → activation similarity."""
    languages = list(settings.languages or languages)
    validate_neuron_settings(settings, languages)
    if stats is None:
        text = neuron_text(handle, settings, languages, "train", settings.tokens)
        stats = collect_neuron_stats(handle, text, site=settings.site, batch_size=settings.batch_size,
                                     progress=progress)
        stats.info |= {"model": handle.name, "source": settings.source, "seq_len": settings.seq_len,
                       "tokens_per_language": settings.tokens}
    results = select_from_stats(stats, settings, model=handle.name)
    if settings.deactivate:
        heldout = neuron_text(handle, settings, languages, "heldout", settings.heldout_tokens)
        results.deactivation = run_deactivation(handle, results.selection, heldout, site=stats.site,
                                                batch_size=max(1, settings.batch_size // 2), n_boot=settings.n_boot,
                                                seed=settings.seed, progress=progress)
    if settings.similarity:
        pooled = pooled_activations(handle, similarity_items(settings, languages), site=stats.site,
                                    batch_size=settings.batch_size * 2, progress=progress)
        results.similarity = activation_similarity_frame(pooled, model=handle.name, site=stats.site,
                                                         n_boot=settings.n_boot, seed=settings.seed)
    return results
