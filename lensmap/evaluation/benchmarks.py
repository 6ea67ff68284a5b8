"""Benchmark loaders for the upstream formats, the shipped samples, and the offline datasets cache.

* **MMLU** and its translations: CSV (upstream: no header, ``question, A, B, C, D, answer``;
  translations such as MMMLU: a header ``Question, A, B, C, D, Answer[, Subject]``), JSONL or
  parquet with ``question``, the options (``A``–``D`` or a ``choices`` list) and ``answer``
  (a letter A–D, or an index 0–3).
* **MGSM**: TSV without header, ``question<TAB>numeric answer`` (``mgsm_<lang>.tsv``).
* **XQuAD**: SQuAD v1.1 JSON (``data → paragraphs → context, qas → question, answers``).

A source is ``samples`` (the small parallel sets shipped in ``lensmap/data/samples/`` — samples
for tests and demos, not the benchmarks), a path (``{lang}`` is replaced by the language code,
e.g. ``data/mgsm/mgsm_{lang}.tsv``), or ``hf:NAME[:CONFIG][@SPLIT]``, read from the local
Hugging Face datasets cache with the network switched off (``{lang}`` works there too).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lensmap.errors import BenchmarkError
from lensmap.models.offline import offline_mode

BENCHMARKS = ("mgsm", "mmlu", "xquad")
LETTERS = "ABCD"
SAMPLES_DIR = Path(__file__).resolve().parents[1] / "data" / "samples"
SAMPLE_FILES = {"mmlu": "mmlu/mmlu_{lang}.csv", "mgsm": "mgsm/mgsm_{lang}.tsv", "xquad": "xquad/xquad.{lang}.json"}
SAMPLE_LANGUAGES = ("en", "fr", "de", "zh", "ja", "ru")


@dataclass(frozen=True)
class BenchItem:
    """One benchmark question.

    ``answer`` is the gold option letter (MMLU) or number (MGSM, as written); ``answers`` the
    gold spans (XQuAD); ``options`` the four MMLU options; ``context`` the XQuAD passage.
    """

    benchmark: str
    language: str
    id: str
    question: str
    answer: str = ""
    answers: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    context: str = ""
    subject: str = ""


# --------------------------------------------------------------------------- MMLU

def _letter(value: Any, where: str) -> str:
    text = str(value).strip()
    if text.isdigit() and int(text) < 4:
        return LETTERS[int(text)]
    letter = text.upper().strip("() .")
    if letter not in LETTERS or not letter:
        raise BenchmarkError(f"{where}: the answer must be a letter A–D (or an index 0–3); got {value!r}")
    return letter


def mmlu_item(record: dict, language: str, where: str, index: int) -> BenchItem:
    """One MMLU record (case-insensitive keys) as a :class:`BenchItem`."""
    row = {str(k).strip().lower(): v for k, v in record.items()}
    if "choices" in row and isinstance(row["choices"], (list, tuple)):
        options = [str(o) for o in row["choices"]]
    else:
        options = [row.get(letter.lower()) for letter in LETTERS]
    missing = [name for name, present in (("question", row.get("question") not in (None, "")),
                                           ("options A–D", len(options) == 4 and all(o not in (None, "") for o in options)),
                                           ("answer", row.get("answer") not in (None, ""))) if not present]
    if missing:
        raise BenchmarkError(f"{where}: row {index + 1} lacks {', '.join(missing)}; an MMLU row needs question, "
                             "A, B, C, D (or choices) and answer")
    return BenchItem("mmlu", language, str(row.get("id") or f"mmlu-{index}"), str(row["question"]).strip(),
                     answer=_letter(row["answer"], f"{where}, row {index + 1}"),
                     options=tuple(str(o).strip() for o in options), subject=str(row.get("subject") or ""))


def load_mmlu(path: str | os.PathLike, language: str) -> list[BenchItem]:
    """MMLU or a translation from CSV (with or without header), JSONL or parquet."""
    path = _existing(path, "MMLU")
    if path.suffix == ".parquet":
        import pandas as pd

        try:
            records = pd.read_parquet(path).to_dict("records")
        except ImportError:
            raise BenchmarkError(f"{path}: reading parquet needs pyarrow: pip install pyarrow") from None
    elif path.suffix in (".jsonl", ".json"):
        records = _jsonl(path)
    else:
        rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
        rows = [r for r in rows if any(cell.strip() for cell in r)]
        first = [c.strip().lower() for c in rows[0]] if rows else []
        if "question" in first and "answer" in first:  # a header row (translations, pandas exports)
            header = [c or "id" for c in first]
            records = [dict(zip(header, r)) for r in rows[1:]]
        else:  # upstream MMLU: question, A, B, C, D, answer
            bad = [i + 1 for i, r in enumerate(rows) if len(r) < 6]
            if bad:
                raise BenchmarkError(f"{path}: row {bad[0]} has fewer than 6 columns; a header-less MMLU CSV has "
                                     "question, A, B, C, D, answer")
            records = [dict(zip(["question", "a", "b", "c", "d", "answer"], r)) for r in rows]
    return [mmlu_item(r, language, str(path), i) for i, r in enumerate(records)]


# --------------------------------------------------------------------------- MGSM

def load_mgsm(path: str | os.PathLike, language: str) -> list[BenchItem]:
    """MGSM TSV: ``question<TAB>answer`` per line, no header."""
    path = _existing(path, "MGSM")
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.rsplit("\t", 1)
        if len(parts) != 2 or not parts[0].strip():
            raise BenchmarkError(f"{path}, line {number}: expected question<TAB>answer")
        answer = parts[1].strip().replace(",", "")
        try:
            float(answer)
        except ValueError:
            raise BenchmarkError(f"{path}, line {number}: the answer {parts[1]!r} is not a number") from None
        items.append(BenchItem("mgsm", language, f"mgsm-{len(items)}", parts[0].strip(), answer=answer))
    return items


# --------------------------------------------------------------------------- XQuAD

def xquad_items(data: dict, language: str, where: str) -> list[BenchItem]:
    """SQuAD v1.1 structure → items (one per question, with its context and gold spans)."""
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise BenchmarkError(f"{where}: not SQuAD v1.1 JSON (a top-level 'data' list of articles)")
    items = []
    for article in data["data"]:
        for paragraph in article.get("paragraphs", []):
            context = paragraph.get("context")
            if not context:
                raise BenchmarkError(f"{where}: a paragraph has no 'context'")
            for qa in paragraph.get("qas", []):
                spans = tuple(a["text"] for a in qa.get("answers", []) if a.get("text"))
                if not qa.get("question") or not spans:
                    raise BenchmarkError(f"{where}: question {qa.get('id', '?')!r} needs 'question' and at least one "
                                         "answer with 'text'")
                items.append(BenchItem("xquad", language, str(qa.get("id") or f"xquad-{len(items)}"),
                                       qa["question"].strip(), answers=spans, context=context))
    return items


def load_xquad(path: str | os.PathLike, language: str) -> list[BenchItem]:
    path = _existing(path, "XQuAD")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as error:
        raise BenchmarkError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from None
    return xquad_items(data, language, str(path))


# --------------------------------------------------------------------------- sources

LOADERS = {"mmlu": load_mmlu, "mgsm": load_mgsm, "xquad": load_xquad}


def _existing(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"{what} file {str(path)!r} does not exist; put the file there or point `data:` at it "
                             "(see docs/evaluation.md)")
    return path


def _jsonl(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8-sig").strip()
    if text.startswith("["):
        return json.loads(text)
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise BenchmarkError(f"{path}, line {number}: not valid JSON ({error.msg})") from None
    return records


def _from_hf(spec: str, benchmark: str, language: str) -> list[BenchItem]:
    """``hf:NAME[:CONFIG][@SPLIT]`` from the local datasets cache, offline."""
    body = spec[3:].format(lang=language)
    body, _, split = body.partition("@")
    name, _, config = body.partition(":")
    with offline_mode():  # the flags are set before datasets is imported: no hub lookups at all
        try:
            import datasets
        except ImportError:
            raise BenchmarkError(f"{spec}: reading the Hugging Face cache needs `pip install datasets`") from None
        try:
            dataset = datasets.load_dataset(name, config or None, split=split or "test")
        except Exception as error:  # datasets raises many types for a cache miss
            raise BenchmarkError(
                f"{name}{':' + config if config else ''} ({split or 'test'}) is not in the local Hugging Face datasets "
                f"cache ({type(error).__name__}). Download it once where there is a network "
                f"(python -c \"import datasets; datasets.load_dataset('{name}', {config or None!r})\") or give a local "
                "file"
            ) from None
    records = [dict(r) for r in dataset]
    if benchmark == "mmlu":
        return [mmlu_item(r, language, spec, i) for i, r in enumerate(records)]
    if benchmark == "mgsm":
        return [BenchItem("mgsm", language, f"mgsm-{i}", str(r["question"]).strip(),
                          answer=str(r.get("answer_number", r.get("answer"))).strip()) for i, r in enumerate(records)]
    return [BenchItem("xquad", language, str(r.get("id", i)), r["question"], answers=tuple(r["answers"]["text"]),
                      context=r["context"]) for i, r in enumerate(records)]


def sample_path(benchmark: str, language: str) -> Path:
    return SAMPLES_DIR / SAMPLE_FILES[benchmark].format(lang=language)


def load_benchmark(benchmark: str, language: str, source: str = "samples") -> list[BenchItem]:
    """Items of ``benchmark`` in ``language`` from ``source`` (see the module docstring)."""
    if benchmark not in BENCHMARKS:
        raise BenchmarkError(f"unknown benchmark {benchmark!r}; choose from {', '.join(BENCHMARKS)}")
    if source.startswith("hf:"):
        items = _from_hf(source, benchmark, language)
    else:
        if source == "samples":
            path = sample_path(benchmark, language)
            if not path.is_file():
                raise BenchmarkError(f"the shipped {benchmark} sample has no {language!r} file; samples exist for "
                                     f"{', '.join(SAMPLE_LANGUAGES)}. Give your own file with data: {{{benchmark}: "
                                     f"path/with/{{lang}}}}")
        else:
            path = Path(source.format(lang=language))
        items = LOADERS[benchmark](path, language)
    if not items:
        raise BenchmarkError(f"{benchmark} ({language}) from {source!r} holds no items")
    return items


def iter_sources(data: dict[str, str], benchmarks: Iterable[str]) -> dict[str, str]:
    """The source of each benchmark: ``data[benchmark]`` or the shipped samples."""
    return {b: data.get(b, "samples") for b in benchmarks}
