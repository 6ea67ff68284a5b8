"""The text a tuned lens trains on, including the model's own generations.

:func:`lens_corpus` is :func:`lensmap.data.text.load_corpus` plus the ``generated`` source:
greedy continuations, by the model itself, of prompts made only of CLDR names in each language
(:func:`lensmap.data.text.generation_prompts`). Generated text is never held out: it is the
model's own output, so it only feeds training.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import torch

from lensmap.capture.hooks import preserved_state
from lensmap.data.text import generation_prompts, load_corpus
from lensmap.errors import LensmapError
from lensmap.languages.lid import identify
from lensmap.models.handle import ModelHandle
from lensmap.models.tokenizers import left_padded


def generated_passages(
    handle: ModelHandle,
    languages: Sequence[str],
    *,
    n_per_language: int = 8,
    max_new_tokens: int = 64,
    seed: int = 0,
    batch_size: int = 8,
) -> dict[str, list[str]]:
    """The model's own greedy continuations of CLDR prompts (prompt + continuation per passage).

    Continuations whose language (lid.176) is not the prompt's are dropped with a warning.
    """
    tok = handle.tokenizer
    if tok is None:
        raise LensmapError("generated text needs a tokenizer; pass one to ModelHandle.wrap(model, tokenizer)")
    corpus: dict[str, list[str]] = {}
    with left_padded(tok), preserved_state(handle.model):
        handle.model.eval()
        for lang in languages:
            prompts = generation_prompts(lang, n_per_language, seed=seed)
            texts, dropped = [], 0
            for start in range(0, len(prompts), batch_size):
                part = prompts[start:start + batch_size]
                enc = tok(part, return_tensors="pt", padding=True).to(handle.device)
                with torch.no_grad():
                    out = handle.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                                pad_token_id=tok.pad_token_id)
                for prompt, row in zip(part, out[:, enc["input_ids"].shape[1]:]):
                    continuation = tok.decode(row, skip_special_tokens=True)
                    if identify(continuation)[0] == lang:
                        texts.append(" ".join((prompt + continuation).split()))
                    else:
                        dropped += 1
            if dropped:
                warnings.warn(f"generated text: dropped {dropped} of {len(prompts)} continuations in {lang!r} "
                              "that lid.176 places in another language", stacklevel=2)
            corpus[lang] = texts
    return corpus


def lens_corpus(
    languages: Sequence[str],
    sources: Sequence[str] = ("bible",),
    files: Mapping[str, str | Sequence[str]] | None = None,
    *,
    split: str = "train",
    handle: ModelHandle | None = None,
    generated: Mapping[str, int] | None = None,
    heldout_fraction: float = 0.1,
) -> dict[str, list[str]]:
    """:func:`~lensmap.data.text.load_corpus` of the non-model sources, plus the model's own text.

    ``generated`` (the keyword arguments of :func:`generated_passages`) needs ``handle``.
    """
    corpus = load_corpus(languages, [s for s in sources if s != "generated"], files, split=split,
                         heldout_fraction=heldout_fraction)
    if "generated" in sources:
        if handle is None:
            raise LensmapError("the 'generated' text source needs the model (pass handle=)")
        if split != "heldout":
            for lang, texts in generated_passages(handle, languages, **dict(generated or {})).items():
                corpus[lang] += texts
    return corpus
