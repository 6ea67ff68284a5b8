"""Evaluate lenses on held-out text, per layer and per language, against the model's own prediction.

For every selected token the final layer gives the model's next-token distribution ``p``; a
lens decoding layer ``l`` gives ``q_l``. Per (lens, language, layer) :func:`evaluate_lenses`
reports the mean KL(p ‖ q_l) in nats (and its standard deviation over tokens), top-1
agreement (how often ``argmax q_l`` is the model's own top token) and the entropy of ``q_l``.
Every lens is read on the same tokens, so the comparison between lenses is paired. Position 0
of each sequence is never read (see :mod:`lensmap.lenses.training`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import torch
from torch import Tensor
from torch.nn import functional as F
from tqdm.auto import tqdm

from lensmap.capture import capture_residuals
from lensmap.errors import LensmapError
from lensmap.frames import columns
from lensmap.lenses.base import Lens
from lensmap.lenses.logit import LogitLens
from lensmap.lenses.training import interleave, position_mask
from lensmap.models.handle import ModelHandle

EVAL_COLUMNS = columns("lens_eval")
ALL = "all"


def prepare_eval_tokens(
    handle: ModelHandle,
    corpus: Mapping[str, Sequence[str]],
    *,
    tokens_per_language: int,
    seq_len: int = 128,
    positions_per_sequence: int = 32,
    seed: int = 1,
    check_languages: bool = True,
) -> dict[str, Tensor]:
    """Pack held-out passages into the balanced rows :func:`evaluate_lenses` reads."""
    from lensmap.data.text import check_corpus_languages, pack_corpus

    if handle.tokenizer is None:
        raise LensmapError("evaluating on text needs a tokenizer; pass one to ModelHandle.wrap(model, tokenizer)")
    if check_languages:
        check_corpus_languages(corpus)
    per_seq = _rows_per_sequence(seq_len, positions_per_sequence)
    n = -(-tokens_per_language // per_seq)
    return pack_corpus(handle.tokenizer, corpus, seq_len=seq_len, n_sequences=n, seed=seed, what="held-out")


def _rows_per_sequence(seq_len: int, per_sequence: int) -> int:
    usable = seq_len - 1
    return usable if per_sequence <= 0 else min(per_sequence, usable)


class _Sums:
    """Running sums of KL, KL², top-1 agreement and entropy per (lens, language, layer)."""

    def __init__(self):
        self.values: dict[tuple[str, str, int], Tensor] = {}

    def add(self, key: tuple[str, str, int], kl: Tensor, agree: Tensor, entropy: Tensor) -> None:
        row = torch.stack([kl.sum(), (kl * kl).sum(), agree.sum(), entropy.sum(), torch.tensor(float(kl.numel()))])
        self.values[key] = self.values.get(key, torch.zeros(5, dtype=torch.float64)) + row.double()


def evaluate_lenses(
    handle: ModelHandle,
    corpus: Mapping[str, Sequence[str]] | Mapping[str, Tensor],
    lenses: Lens | Sequence[Lens] | None = None,
    *,
    tokens_per_language: int = 512,
    seq_len: int = 128,
    positions_per_sequence: int = 32,
    batch_size: int = 8,
    seed: int = 1,
    include_logit: bool = True,
    layers: Sequence[int] | None = None,
    chunk_rows: int = 256,
    check_languages: bool = True,
    progress: bool = True,
) -> pd.DataFrame:
    """KL to the final distribution, top-1 agreement and entropy per lens × language × layer.

    Args:
        corpus: held-out ``{language: [passage, ...]}`` text, or ``{language: [n, seq_len]}``
            token rows already packed. Each language is read on the same number of tokens.
        lenses: the lenses to compare; the logit lens is added first unless one named
            ``logit`` is given or ``include_logit`` is false.
        tokens_per_language: positions read per language (``positions_per_sequence`` per
            packed sequence of ``seq_len`` tokens).
        layers: residual layers to read (default all, 0..n_layers).

    Returns a frame with columns ``model, lens, language, layer, kl, kl_std, top1_agreement,
    entropy, n_tokens``; language ``all`` pools every language.
    """
    lenses = _lens_list(handle, lenses, include_logit)
    packed = _packed_eval_tokens(handle, corpus, tokens_per_language, seq_len, positions_per_sequence, seed,
                                 check_languages)
    n_layers = handle.n_layers
    read = list(range(n_layers + 1)) if layers is None else sorted(set(int(x) for x in layers))
    bad = [x for x in read if not 0 <= x <= n_layers]
    if bad:
        raise LensmapError(f"layers {bad} out of range: this model has residual layers 0..{n_layers}")
    order = interleave(packed, seed)
    sums = _Sums()
    with torch.no_grad(), tqdm(total=len(order), desc=f"evaluate lenses {handle.name}", unit="seq",
                               disable=not progress) as bar:
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            ids = torch.stack([packed[lang][k] for lang, k in chunk])
            mask = position_mask(len(chunk), seq_len, positions_per_sequence, seed, start)
            res = capture_residuals(handle, ids, torch.ones_like(ids), positions=mask.to(handle.device),
                                    layers=sorted(set(read) | {n_layers}))
            row_lang = [chunk[b][0] for b in res.rows[:, 0].tolist()]
            for r0 in range(0, res.hidden.shape[1], chunk_rows):
                _add_rows(sums, handle, lenses, res, read, slice(r0, r0 + chunk_rows), row_lang[r0:r0 + chunk_rows])
            bar.update(len(chunk))
    return _frame(handle.name, sums, [lens.name for lens in lenses], list(packed), read)


def _lens_list(handle: ModelHandle, lenses: Lens | Sequence[Lens] | None, include_logit: bool) -> list[Lens]:
    """The lenses to compare, the logit lens first unless excluded; names must be unique."""
    lenses = [] if lenses is None else [lenses] if not isinstance(lenses, (list, tuple)) else list(lenses)
    if include_logit and not any(lens.name == "logit" for lens in lenses):
        lenses.insert(0, LogitLens(handle))
    if not lenses:
        raise LensmapError("no lens to evaluate")
    names = [lens.name for lens in lenses]
    if len(set(names)) != len(names):
        raise LensmapError(f"lens names must be unique to tell them apart in the results; got {names}")
    return lenses


def _packed_eval_tokens(handle: ModelHandle, corpus, tokens_per_language: int, seq_len: int,
                        positions_per_sequence: int, seed: int, check_languages: bool) -> dict[str, Tensor]:
    """``{language: [n, seq_len]}`` held-out rows from text, or from rows the caller packed."""
    if not corpus:
        raise LensmapError("no held-out text: the corpus has no languages")
    first = next(iter(corpus.values()))
    if not isinstance(first, Tensor):
        return prepare_eval_tokens(handle, corpus, tokens_per_language=tokens_per_language, seq_len=seq_len,
                                   positions_per_sequence=positions_per_sequence, seed=seed,
                                   check_languages=check_languages)
    packed = {lang: rows.long().cpu() for lang, rows in corpus.items()}
    if any(rows.dim() != 2 or rows.shape[1] != seq_len for rows in packed.values()):
        raise LensmapError(f"packed held-out tokens must be [n, seq_len={seq_len}] tensors")
    per_seq = _rows_per_sequence(seq_len, positions_per_sequence)
    n = min(-(-tokens_per_language // per_seq), min(int(r.shape[0]) for r in packed.values()))
    return {lang: rows[:n] for lang, rows in packed.items()}


def _add_rows(sums: _Sums, handle: ModelHandle, lenses: list[Lens], res, read: list[int], rows: slice,
              langs: list[str]) -> None:
    """KL to the final distribution, top-1 agreement and entropy of ``rows`` for every lens and layer."""
    target = LogitLens(handle).decode(res.layer(handle.n_layers)[rows]).float()
    logp = torch.log_softmax(target, -1)
    p = logp.exp()
    neg_entropy = (p * torch.where(p > 0, logp, 0.0)).sum(-1)
    top = target.argmax(-1)
    del target, logp
    groups = {lang: torch.tensor([i for i, x in enumerate(langs) if x == lang]) for lang in dict.fromkeys(langs)}
    for lens in lenses:
        for layer in read:
            logits = lens.decode(res.layer(layer)[rows], layer).float()
            kl = neg_entropy + F.cross_entropy(logits, p, reduction="none")
            logq = torch.log_softmax(logits, -1)
            entropy = -(logq.exp() * torch.where(torch.isfinite(logq), logq, 0.0)).sum(-1)
            agree = (logits.argmax(-1) == top).double()
            for lang, idx in groups.items():
                sums.add((lens.name, lang, layer), kl[idx], agree[idx], entropy[idx])


def _frame(model: str, sums: _Sums, lens_names: list[str], languages: list[str], layers: list[int]) -> pd.DataFrame:
    records = []
    for lens in lens_names:
        for lang in languages + [ALL]:
            for layer in layers:
                if lang == ALL:
                    total = sum((sums.values[(lens, x, layer)] for x in languages), torch.zeros(5, dtype=torch.float64))
                else:
                    total = sums.values.get((lens, lang, layer), torch.zeros(5, dtype=torch.float64))
                kl, kl2, agree, entropy, n = total.tolist()
                if n == 0:
                    continue
                var = max(0.0, kl2 / n - (kl / n) ** 2) * n / max(1.0, n - 1)
                records.append({"model": model, "lens": lens, "language": lang, "layer": layer, "kl": kl / n,
                                "kl_std": var ** 0.5, "top1_agreement": agree / n, "entropy": entropy / n,
                                "n_tokens": int(n)})
    return pd.DataFrame.from_records(records, columns=EVAL_COLUMNS)


def compare_lenses(frame: pd.DataFrame, lens: str = "tuned", baseline: str = "logit") -> pd.DataFrame:
    """Side by side per (language, layer): ``kl_<baseline>``, ``kl_<lens>``, their ratio and ``better``.

    ``better`` is True where ``lens`` has the lower KL. The last layer (where the two lenses
    are one and the same) has ``better`` = NaN.
    """
    missing = {lens, baseline} - set(frame["lens"])
    if missing:
        raise LensmapError(f"the evaluation frame has no rows for lens {sorted(missing)}")
    wide = frame.pivot_table(index=["model", "language", "layer"], columns="lens", values="kl").reset_index()
    wide = wide.rename(columns={baseline: f"kl_{baseline}", lens: f"kl_{lens}"})
    wide = wide[["model", "language", "layer", f"kl_{baseline}", f"kl_{lens}"]]
    wide["ratio"] = wide[f"kl_{lens}"] / wide[f"kl_{baseline}"]
    last = wide.groupby("model")["layer"].transform("max")
    better = (wide[f"kl_{lens}"] < wide[f"kl_{baseline}"]).astype(object)
    wide["better"] = better.where(wide["layer"] < last, other=None)
    wide.columns.name = None
    return wide


def beats_baseline_everywhere(frame: pd.DataFrame, lens: str = "tuned", baseline: str = "logit") -> bool:
    """True when ``lens`` has a lower KL than ``baseline`` at every layer but the last, in every language."""
    side = compare_lenses(frame, lens, baseline)
    checked = side[side["better"].notna()]
    return bool(len(checked)) and bool(checked["better"].astype(bool).all())
