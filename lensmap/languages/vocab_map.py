"""The vocabulary language map: which language every token id of a model belongs to.

:func:`build_vocabulary_map` decodes every id (:mod:`lensmap.languages.tokens`) and labels it,
recording *how* in a ``method`` column:

``special``   control/added special tokens and embedding rows beyond the tokenizer;
``partial``   tokens that are only part of a UTF-8 character; their language is the one their
              script makes certain (e.g. a lead byte that only starts Han characters → zh), else
              ``unk``;
``neutral``   no letters at all (digits, punctuation, whitespace, symbols, emoji);
``script``    letters of a single-language script (:mod:`lensmap.languages.scripts`);
``fasttext``  lid.176's top language with probability ≥ ``threshold``;
``lexicon``   a letters-only fragment fastText could not place, attributed softly to the
              configured languages whose CLDR lexicon has words starting with it;
``unk``       everything else.

The map is cached on disk under ``cache_dir()/"vocab"``, keyed by a sha256 of the decoded
vocabulary and every setting that changes the labels.

:meth:`VocabularyMap.weights` turns the labels into a ``[vocab_size, n_columns]`` matrix whose
rows sum to 1, with one column per configured language plus the buckets ``other`` (a language
that is not configured), ``unk``, ``neutral`` and ``special``: per-language probability mass of
a next-token distribution ``p`` of shape ``[..., vocab_size]`` is ``p @ weights()``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import unicodedata
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from lensmap.errors import LanguageError, ModelLoadError
from lensmap.io import atomic_write_bytes
from lensmap.languages.lexicon import Lexicon, build_lexicons, lexicon_weights
from lensmap.languages.lid import UNKNOWN, lid_model_sha256, predict_many, validate_languages
from lensmap.languages.scripts import NEUTRAL, SCRIPT, classify_text, is_letters_only, partial_language
from lensmap.languages.tokens import DecodedVocabulary, decode_vocabulary
from lensmap.models.tokenizers import tokenizer_problem

#: Columns of :meth:`VocabularyMap.weights` after the configured languages.
EXTRA_BUCKETS = ("other", "unk", "neutral", "special")
#: Values of the table's ``method`` column.
METHODS = ("special", "neutral", "script", "fasttext", "lexicon", "unk", "partial")
#: Columns of :attr:`VocabularyMap.table`.
TABLE_COLUMNS = ("token_id", "text", "language", "method", "confidence", "lexicon_weights")
#: Bump whenever labelling rules change, so old cache files are not reused.
FORMAT_VERSION = 1

_CHUNK = 8192


# --------------------------------------------------------------------------- the map

@dataclass(eq=False, repr=False)
class VocabularyMap:
    """Language labels of every token id ``0..vocab_size-1`` of one model.

    ``table`` has one row per id with columns ``token_id``, ``text`` (decoded surface string),
    ``language`` (a lid.176 code, or ``unk``/``neutral``/``special``), ``method`` (see
    :data:`METHODS`), ``confidence`` (fastText probability, lexicon weight of the chosen
    language, 1.0 for rule-based labels) and ``lexicon_weights`` (JSON ``{lang: weight}`` for
    ``lexicon`` rows, ``""`` otherwise). ``languages`` are the configured languages, in order.
    """

    table: pd.DataFrame
    languages: list[str]
    threshold: float = 0.5
    scheme: str = ""
    cache_key: str = ""
    from_cache: bool = False
    _weights: torch.Tensor | None = field(default=None, init=False, repr=False)

    def __repr__(self) -> str:
        return (
            f"VocabularyMap(vocab_size={self.vocab_size}, languages={self.languages}, "
            f"threshold={self.threshold}, scheme={self.scheme!r}, from_cache={self.from_cache})"
        )

    @property
    def vocab_size(self) -> int:
        """Number of token ids (rows of :attr:`table`)."""
        return len(self.table)

    def columns(self) -> list[str]:
        """Column names of :meth:`weights`: configured languages, then :data:`EXTRA_BUCKETS`."""
        return list(self.languages) + list(EXTRA_BUCKETS)

    def buckets(self) -> np.ndarray:
        """Hard bucket of every token (an element of :meth:`columns`), object array ``[vocab_size]``."""
        language = self.table["language"].to_numpy(dtype=object)
        method = self.table["method"].to_numpy(dtype=object)
        configured = np.isin(language, np.asarray(self.languages, dtype=object))
        bucket = np.where(configured, language, "other").astype(object)
        bucket[language == UNKNOWN] = "unk"
        bucket[method == "neutral"] = "neutral"
        bucket[method == "special"] = "special"
        return bucket

    def weights(self) -> torch.Tensor:
        """float32 ``[vocab_size, len(columns())]``; every row sums to 1. Computed once, cached.

        A token labelled with a configured language is one-hot there, with another language in
        ``other``; ``lexicon`` tokens spread their soft weights over configured languages;
        ``unk`` and unattributed ``partial`` tokens go to ``unk``; then ``neutral``, ``special``.
        The returned tensor is shared between calls: do not modify it in place.
        """
        if self._weights is None:
            self._weights = torch.from_numpy(self._compute_weights())
        return self._weights

    def _compute_weights(self) -> np.ndarray:
        columns = self.columns()
        index = {c: i for i, c in enumerate(columns)}
        rows = np.arange(self.vocab_size)
        hard = np.fromiter((index[b] for b in self.buckets()), dtype=np.int64, count=self.vocab_size)
        out = np.zeros((self.vocab_size, len(columns)), dtype=np.float32)
        out[rows, hard] = 1.0
        soft = self.table.index[self.table["method"].to_numpy(dtype=object) == "lexicon"]
        for row, blob in zip(soft, self.table.loc[soft, "lexicon_weights"]):
            weights = {lang: w for lang, w in json.loads(blob).items() if lang in index}
            if weights:
                out[row] = 0.0
                total = sum(weights.values())
                for lang, w in weights.items():
                    out[row, index[lang]] = w / total
        return out

    def vocab_share(self) -> pd.Series:
        """Mean of :meth:`weights` over the vocabulary: the mass a uniform prediction gives each column."""
        share = self.weights().double().mean(0).numpy()
        return pd.Series(share, index=self.columns(), name="vocab_share")

    def counts(self) -> pd.DataFrame:
        """Per column of :meth:`columns`: ``n_tokens`` (hard labels), ``share`` (n_tokens /
        vocab_size), ``weight_share`` (:meth:`vocab_share`) and one count per method."""
        frame = pd.DataFrame({"bucket": self.buckets(), "method": self.table["method"].to_numpy(dtype=object)})
        by_method = pd.crosstab(frame["bucket"], frame["method"])
        by_method = by_method.reindex(index=self.columns(), columns=list(METHODS), fill_value=0)
        result = pd.DataFrame(index=pd.Index(self.columns(), name="bucket"))
        result["n_tokens"] = by_method.sum(axis=1).astype(int)
        result["share"] = result["n_tokens"] / max(self.vocab_size, 1)
        result["weight_share"] = self.vocab_share()
        for method in METHODS:
            result[method] = by_method[method].astype(int)
        return result

    def token_ids(self, column: str) -> np.ndarray:
        """Ids whose hard bucket is ``column`` (a configured language or a bucket)."""
        if column not in self.columns():
            raise LanguageError(f"{column!r} is not a column of this map; columns are {self.columns()}.")
        return np.flatnonzero(self.buckets() == column)


# --------------------------------------------------------------------------- labelling

def _label_one(text: str, raw: bytes | None, is_special: bool, is_partial: bool) -> tuple[str, str, float] | None:
    """Rule-based label ``(language, method, confidence)``, or None when fastText must decide."""
    if is_special:
        return "special", "special", 1.0
    if is_partial:
        language = partial_language(raw or b"")
        return (language, "partial", 1.0) if language else (UNKNOWN, "partial", 0.0)
    kind, language = classify_text(text)
    if kind == NEUTRAL:
        return "neutral", "neutral", 1.0
    if kind == SCRIPT:
        return language, "script", 1.0
    return None


def _label_unknown(
    text: str, prob: float, lexicons: Mapping[str, Lexicon], order: list[str]
) -> tuple[str, str, float, str]:
    """Label a token fastText could not place: lexicon attribution or ``unk``."""
    fragment = text.strip()
    if is_letters_only(fragment):
        weights = lexicon_weights(fragment, lexicons)
        if weights:
            best = max(order, key=lambda lang: weights.get(lang, 0.0))
            blob = json.dumps({lang: round(weights[lang], 6) for lang in order if lang in weights})
            return best, "lexicon", weights[best], blob
    return UNKNOWN, "unk", prob, ""


def label_vocabulary(
    decoded: DecodedVocabulary,
    lexicons: Mapping[str, Lexicon],
    *,
    threshold: float = 0.5,
    progress: bool = True,
) -> pd.DataFrame:
    """Label every decoded token; returns the table described in :class:`VocabularyMap`."""
    size = len(decoded)
    order = list(lexicons)
    language = np.empty(size, dtype=object)
    method = np.empty(size, dtype=object)
    confidence = np.zeros(size, dtype=np.float32)
    lex_blob = np.full(size, "", dtype=object)
    with tqdm(total=size, desc="labelling vocabulary", unit="tok", disable=not progress) as bar:
        for start in range(0, size, _CHUNK):
            pending: list[int] = []
            for i in range(start, min(start + _CHUNK, size)):
                label = _label_one(decoded.texts[i], decoded.raw[i], decoded.special[i], decoded.partial[i])
                if label is None:
                    pending.append(i)
                else:
                    language[i], method[i], confidence[i] = label
            codes, probs = predict_many(decoded.texts[i] for i in pending)
            for i, code, prob in zip(pending, codes, probs):
                if prob >= threshold and code != UNKNOWN:
                    language[i], method[i], confidence[i] = code, "fasttext", prob
                else:
                    language[i], method[i], confidence[i], lex_blob[i] = _label_unknown(
                        decoded.texts[i], float(prob), lexicons, order
                    )
            bar.update(min(_CHUNK, size - start))
    return pd.DataFrame(
        {
            "token_id": np.arange(size, dtype=np.int64),
            "text": decoded.texts,
            "language": language,
            "method": method,
            "confidence": confidence,
            "lexicon_weights": lex_blob,
        }
    )


# --------------------------------------------------------------------------- cache

def cache_key(
    decoded: DecodedVocabulary, languages: list[str], threshold: float, lexicons: Mapping[str, Lexicon]
) -> str:
    """sha256 of the decoded vocabulary and every setting that changes the labels."""
    h = hashlib.sha256()
    settings = {
        "format": FORMAT_VERSION,
        "unicode": unicodedata.unidata_version,
        "lid_model": lid_model_sha256(),
        "scheme": decoded.scheme,
        "vocab_size": len(decoded),
        "threshold": float(threshold),
        "languages": list(languages),
    }
    h.update(json.dumps(settings, sort_keys=True).encode())
    for lang in languages:
        words = lexicons[lang].words if lang in lexicons else ()
        h.update(b"\x00lexicon:" + lang.encode() + b"\x00" + "\n".join(words).encode("utf-8", "surrogatepass"))
    h.update(b"\x00texts\x00" + "\x00".join(decoded.texts).encode("utf-8", "surrogatepass"))
    h.update(decoded.special.tobytes() + decoded.partial.tobytes())
    h.update(b"".join(len(r).to_bytes(1, "big") + r for r in decoded.raw if r is not None))
    return h.hexdigest()


def vocab_cache_path(key: str) -> Path:
    """Where the map with cache key ``key`` is stored: ``cache_dir()/"vocab"/<key>.json.gz``."""
    from lensmap.models.zoo import cache_dir

    return cache_dir() / "vocab" / f"{key}.json.gz"


def _save(path: Path, key: str, table: pd.DataFrame) -> None:
    payload = {
        "format": FORMAT_VERSION,
        "key": key,
        "columns": {
            "text": table["text"].tolist(),
            "language": table["language"].tolist(),
            "method": table["method"].tolist(),
            "confidence": table["confidence"].astype(float).tolist(),
            "lexicon_weights": table["lexicon_weights"].tolist(),
        },
    }
    data = gzip.compress(json.dumps(payload).encode("ascii"), compresslevel=1)
    atomic_write_bytes(path, data)


def _load(path: Path, key: str, size: int) -> pd.DataFrame | None:
    """The cached table, or None (with a warning) if the file is unreadable or does not match."""
    try:
        payload = json.loads(gzip.decompress(path.read_bytes()))
        columns = payload["columns"]
        if payload.get("format") != FORMAT_VERSION or payload.get("key") != key or len(columns["text"]) != size:
            raise ValueError("format, key or size does not match")
        return pd.DataFrame(
            {
                "token_id": np.arange(size, dtype=np.int64),
                "text": columns["text"],
                "language": np.asarray(columns["language"], dtype=object),
                "method": np.asarray(columns["method"], dtype=object),
                "confidence": np.asarray(columns["confidence"], dtype=np.float32),
                "lexicon_weights": np.asarray(columns["lexicon_weights"], dtype=object),
            }
        )
    except Exception as exc:  # a damaged cache file is rebuilt, never fatal
        warnings.warn(f"Ignoring unreadable vocabulary cache {path} ({exc}); rebuilding it.", stacklevel=3)
        return None


# --------------------------------------------------------------------------- entry point

def _check_threshold(threshold: float) -> float:
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise LanguageError(
            f"threshold must be a probability between 0 and 1 (default 0.5), got {threshold!r}."
        )
    return value


def build_vocabulary_map(
    tokenizer,
    languages: list[str],
    *,
    vocab_size: int | None = None,
    threshold: float = 0.5,
    lexicon_files: dict[str, str] | None = None,
    use_cache: bool = True,
    progress: bool = True,
) -> VocabularyMap:
    """Label every token id ``0..vocab_size-1`` of ``tokenizer`` with a language.

    ``languages``: lid.176 codes of the languages to report (validated, see
    :func:`lensmap.languages.lid.validate_languages`). ``vocab_size``: rows of the model's
    embedding/unembedding matrix (default ``len(tokenizer)``); ids without a token are
    ``special``. ``threshold``: lowest fastText probability accepted; below it a token is
    ``unk`` unless the lexicons attribute it. ``lexicon_files``: optional extra word lists,
    ``{language: path}``, one word per line. ``use_cache``: load/store the map under
    ``cache_dir()/"vocab"`` (``from_cache`` tells whether it was loaded).

    Raises ModelLoadError for an empty or broken tokenizer (see
    :func:`lensmap.models.tokenizers.tokenizer_problem`), before anything is labelled or cached.
    """
    languages = validate_languages(languages)
    threshold = _check_threshold(threshold)
    problem = tokenizer_problem(tokenizer)
    if problem:  # never label, let alone cache, the map of an empty tokenizer
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ModelLoadError(
            f"cannot build a vocabulary map: the tokenizer {name!r} is empty or broken ({problem}). "
            "Load the model's own tokenizer: its directory needs tokenizer.json (or tokenizer.model / "
            "vocab.json + merges.txt); save it there with tokenizer.save_pretrained(directory)"
        )
    decoded = decode_vocabulary(tokenizer, vocab_size)
    lexicons = build_lexicons(languages, lexicon_files)
    key = cache_key(decoded, languages, threshold, lexicons)
    path = vocab_cache_path(key)
    if use_cache and path.is_file():
        table = _load(path, key, len(decoded))
        if table is not None:
            return VocabularyMap(table, languages, threshold, decoded.scheme, key, from_cache=True)
    table = label_vocabulary(decoded, lexicons, threshold=threshold, progress=progress)
    if use_cache:
        _save(path, key, table)
    return VocabularyMap(table, languages, threshold, decoded.scheme, key, from_cache=False)
