"""Cross-lingual activation patching (Dumas et al. 2024, "Separating Tongue from Thought").

A *source* prompt translates concept A into language X, a *target* prompt concept B into
language Y (both few-shot CLDR territory-name translations, :func:`patch_pairs`). The
last-position residual of the source at residual layer ``l`` is written into the target's last
position at the same layer, and the target's next-token distribution is read: the probability
of the first token of each of the four words A-in-X, A-in-Y, B-in-X and B-in-Y.

Per pair and layer, the **language** is X when ``P(A_X) + P(B_X) > P(A_Y) + P(B_Y)`` and the
**concept** is A when ``P(A_X) + P(A_Y) > P(B_X) + P(B_Y)``. A pair's switch layer is the
smallest layer from which on (up to ``L``) the language (or the concept) is the source's; at
``L`` the patched distribution *is* the source's, so every kept pair switches by then. Pairs
are kept only when the four first tokens differ and the unpatched model translates both
prompts (its top word of the four is A_X on the source and B_Y on the target).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from lensmap.capture.ablation import cache_blocks
from lensmap.capture.patching import patched_residual
from lensmap.data.probes import translation_probes
from lensmap.frames import columns
from lensmap.metrics.answers import answer_first_token
from lensmap.metrics.sweeps import interval
from lensmap.models.handle import ModelHandle
from lensmap.models.tokenizers import left_padded

WORDS = (("A", "X"), ("A", "Y"), ("B", "X"), ("B", "Y"))  # (concept, language) of the four tracked words


@dataclass(frozen=True)
class PatchPair:
    """A source prompt (concept A into X) and a target prompt (concept B into Y) with the four words' first tokens."""

    source_text: str
    target_text: str
    source_language: str
    target_language: str
    concept_a: str
    concept_b: str
    tokens: tuple[int, int, int, int]  # first tokens of A_X, A_Y, B_X, B_Y after the target prompt


def patch_pairs(tokenizer, x: str, y: str, *, n: int = 40, input_language: str = "en", seed: int = 0) -> list[PatchPair]:
    """Up to ``n`` source/target pairs for output languages ``x`` (source) and ``y`` (target); concepts differ."""
    src = translation_probes(input_language, x, n=None, seed=seed)
    tgt = translation_probes(input_language, y, n=None, seed=seed + 1)
    word_x = {p.item: p.answer for p in src}
    word_y = {p.item: p.answer for p in tgt}
    pairs = []
    for s, t in zip(src, tgt[1:] + tgt[:1]):
        if s.item == t.item or s.item not in word_y or t.item not in word_x:
            continue
        words = (word_x[s.item], word_y[s.item], word_x[t.item], word_y[t.item])
        tokens = tuple(answer_first_token(tokenizer, t.text, w) for w in words)
        if len(set(tokens)) < 4:
            continue
        pairs.append(PatchPair(s.text, t.text, x, y, s.item, t.item, tokens))  # type: ignore[arg-type]
        if len(pairs) == n:
            break
    return pairs


def _encode(tokenizer, texts: Sequence[str], device) -> tuple[Tensor, Tensor]:
    with left_padded(tokenizer):
        enc = tokenizer(list(texts), return_tensors="pt", padding=True)
    return enc["input_ids"].to(device), enc["attention_mask"].to(device)


def patch_probs(handle: ModelHandle, pairs: Sequence[PatchPair], *, batch_size: int = 8,
                progress: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Probabilities of the four words after patching at every layer, and unpatched on both prompts.

    Returns ``patched [pairs, L + 1, 4]``, ``source [pairs, 4]`` and ``target [pairs, 4]`` (float32,
    word order :data:`WORDS`). Prompts are left padded, so the last position is every row's last token.
    """
    n = handle.n_layers
    patched, source, target = [], [], []
    for first in tqdm(range(0, len(pairs), batch_size), desc="patching", disable=not progress, unit="batch"):
        chunk = pairs[first:first + batch_size]
        tokens = torch.tensor([p.tokens for p in chunk])
        src = cache_blocks(handle, *_encode(handle.tokenizer, [p.source_text for p in chunk], handle.device))
        tgt = cache_blocks(handle, *_encode(handle.tokenizer, [p.target_text for p in chunk], handle.device))
        last = torch.full((len(chunk),), tgt.inputs[0].shape[1] - 1)

        def probs(residual: Tensor) -> Tensor:
            with torch.no_grad():
                p = torch.softmax(handle.head(residual[:, -1]).float(), dim=-1).cpu()
            return p.gather(1, tokens)

        source.append(probs(src.inputs[n]))
        target.append(probs(tgt.inputs[n]))
        per_layer = [probs(patched_residual(handle, tgt, layer, last, src.inputs[layer][:, -1])) for layer in range(n + 1)]
        patched.append(torch.stack(per_layer, dim=1))
    return torch.cat(patched), torch.cat(source), torch.cat(target)


def switch_layers(patched: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per pair, the first layer from which the language is X and the concept is A to the end: ``([pairs], [pairs])``.

    ``patched [pairs, L + 1, 4]`` in :data:`WORDS` order; a pair that is not the source's at layer
    ``L`` gets NaN.
    """
    lang_x = (patched[..., 0] + patched[..., 2]) > (patched[..., 1] + patched[..., 3])
    concept_a = (patched[..., 0] + patched[..., 1]) > (patched[..., 2] + patched[..., 3])

    def first_stable(flags: Tensor) -> np.ndarray:
        # suffix-all: stable[l] is True when flags[l:] are all True
        stable = torch.flip(torch.cumprod(torch.flip(flags.int(), [1]), dim=1), [1]).bool()
        out = np.full(flags.shape[0], np.nan)
        for i, row in enumerate(stable):
            hits = row.nonzero()
            if len(hits):
                out[i] = float(hits[0])
        return out

    return first_stable(lang_x), first_stable(concept_a)


def patching_frames(handle: ModelHandle, pairs: Sequence[PatchPair], *, batch_size: int = 8, n_boot: int = 1000,
                    seed: int = 0, progress: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``patching.csv`` and ``patching_switch.csv`` frames for pairs of one (X, Y) language pair."""
    if not pairs:
        return pd.DataFrame(columns=columns("patching")), pd.DataFrame(columns=columns("patching_switch"))
    patched, source, target = patch_probs(handle, pairs, batch_size=batch_size, progress=progress)
    good = (source.argmax(dim=1) == 0) & (target.argmax(dim=1) == 3)  # the model translates both prompts
    x, y = pairs[0].source_language, pairs[0].target_language
    kept = patched[good]
    prob_rows, switch_rows = [], []
    if len(kept):
        for layer in range(kept.shape[1]):
            for w, (concept, language) in enumerate(WORDS):
                mean, low, high = interval(kept[:, layer, w].numpy(), n_boot=n_boot, seed=seed)
                prob_rows.append(dict(model=handle.name, source_language=x, target_language=y, layer=layer,
                                      concept=concept, language=x if language == "X" else y, prob=mean,
                                      ci_low=low, ci_high=high, n_pairs=len(kept)))
        for name, layers in zip(("language", "concept"), switch_layers(kept)):
            valid = layers[~np.isnan(layers)]
            mean, low, high = interval(valid, n_boot=n_boot, seed=seed) if len(valid) else (np.nan,) * 3
            switch_rows.append(dict(model=handle.name, source_language=x, target_language=y, switch=name, layer=mean,
                                    ci_low=low, ci_high=high, n_pairs=len(valid)))
    return (pd.DataFrame(prob_rows, columns=columns("patching")),
            pd.DataFrame(switch_rows, columns=columns("patching_switch")))
