"""SFT training items: reading, checking and the shipped sample set.

An item is one JSON object per line with ``language, instruction, question, reasoning,
answer`` (strings; ``id`` optional). The instruction is usually English (the code-switched
format); question, reasoning and answer are in ``language``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from lensmap.errors import TrainingDataError

FIELDS = ("language", "instruction", "question", "reasoning", "answer")


@dataclass(frozen=True)
class SFTItem:
    """One supervised example: an instruction and a question, answered by reasoning then an answer."""

    language: str
    instruction: str
    question: str
    reasoning: str
    answer: str
    id: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def sample_items_path() -> Path:
    """The shipped training set (see :mod:`lensmap.training.sample_set`)."""
    from lensmap.training.sample_set import SAMPLE_PATH

    return SAMPLE_PATH


def parse_items(records: Iterable[dict], source: str = "items") -> list[SFTItem]:
    """Check raw records (``FIELDS`` present, non-empty strings) and turn them into items."""
    items: list[SFTItem] = []
    for number, record in enumerate(records, start=1):
        where = f"{source}, item {number}"
        if not isinstance(record, dict):
            raise TrainingDataError(f"{where}: expected a JSON object with {', '.join(FIELDS)}; got {record!r:.80}")
        missing = [name for name in FIELDS if name not in record]
        if missing:
            raise TrainingDataError(f"{where}: missing field(s) {', '.join(missing)}; every item needs "
                                    f"{', '.join(FIELDS)}")
        values = {name: record[name] for name in FIELDS}
        bad = [name for name, value in values.items() if not isinstance(value, (str, int, float))]
        if bad:
            raise TrainingDataError(f"{where}: field(s) {', '.join(bad)} must be text")
        values = {name: str(value).strip() for name, value in values.items()}
        empty = [name for name, value in values.items() if not value]
        if empty:
            raise TrainingDataError(f"{where}: field(s) {', '.join(empty)} are empty")
        items.append(SFTItem(**values, id=str(record.get("id", "")) or f"{source}:{number}"))
    return items


def load_items(path: str | os.PathLike) -> list[SFTItem]:
    """Read a JSONL file of training items (see :data:`FIELDS`)."""
    path = Path(path)
    if not path.is_file():
        raise TrainingDataError(f"training file {str(path)!r} does not exist (JSONL, one item per line with "
                                f"{', '.join(FIELDS)})")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise TrainingDataError(f"{path}, line {number}: not valid JSON ({error.msg})") from None
    items = parse_items(records, source=path.name)
    if not items:
        raise TrainingDataError(f"training file {str(path)!r} holds no items")
    return items


def select_languages(items: Sequence[SFTItem], languages: Sequence[str] | None) -> list[SFTItem]:
    """The items in ``languages`` (all items when None); an empty result is an error."""
    if not items:
        raise TrainingDataError("the training set is empty: give at least one item")
    if not languages:
        return list(items)
    chosen = [item for item in items if item.language in set(languages)]
    if not chosen:
        have = sorted({item.language for item in items})
        raise TrainingDataError(f"no training items in {', '.join(languages)}; the files hold {', '.join(have)}")
    return chosen


def check_item_languages(items: Sequence[SFTItem], min_confidence: float = 0.5) -> None:
    """Refuse items whose question or reasoning the language identifier places elsewhere.

    :func:`~lensmap.languages.lid.identify_text` (the script for CJK and other single-language
    scripts, fastText lid.176 otherwise) labels the question and the reasoning of each item; an item fails when
    either is confidently (probability >= ``min_confidence``) another language than claimed
    (varieties lid.176 splits off, like Wu and Cantonese for written Chinese, count as the language).
    Digits and symbols are ignored by the identifier, so short arithmetic is judged by its words.
    """
    from lensmap.languages.lid import identify_text, same_language, validate_languages

    validate_languages(sorted({item.language for item in items}))
    wrong: list[str] = []
    for item in items:
        for field_name in ("question", "reasoning"):
            found, prob, _ = identify_text(getattr(item, field_name))
            if not same_language(found, item.language) and prob >= min_confidence:
                wrong.append(f"{item.id} {field_name} looks {found} ({prob:.2f}), not {item.language}")
                break
    if wrong:
        shown = "; ".join(wrong[:5]) + (f"; and {len(wrong) - 5} more" if len(wrong) > 5 else "")
        raise TrainingDataError(f"{len(wrong)} training item(s) are not in their stated language: {shown}. "
                                "Fix the `language` field or the text (or set check_language: false)")


# The worked reasoning of a converted MMLU item, in its language.
MMLU_REASONING = {
    "en": "The correct option is {letter}: {text}.", "fr": "La bonne option est {letter} : {text}.",
    "de": "Die richtige Option ist {letter}: {text}.", "es": "La opción correcta es {letter}: {text}.",
    "zh": "正确的选项是{letter}：{text}。", "ja": "正しい選択肢は{letter}：{text}です。",
    "ru": "Правильный вариант — {letter}: {text}.",
}
MMLU_INSTRUCTION = "Answer the following multiple-choice question. Give the letter of the correct option."


def items_from_mmlu(path: str | os.PathLike, language: str, instruction: str = MMLU_INSTRUCTION) -> list[SFTItem]:
    """Training items from an MMLU-format file (see :func:`lensmap.evaluation.benchmarks.load_mmlu`).

    The question carries its four options; the reasoning names the correct option in the
    item's language (:data:`MMLU_REASONING`); the answer is the letter.
    """
    from lensmap.evaluation.benchmarks import LETTERS, load_mmlu

    if language not in MMLU_REASONING:
        raise TrainingDataError(f"no MMLU reasoning template in {language!r} (have {', '.join(sorted(MMLU_REASONING))})")
    items = []
    for bench in load_mmlu(path, language):
        options = "\n".join(f"{letter}. {option}" for letter, option in zip(LETTERS, bench.options))
        text = bench.options[LETTERS.index(bench.answer)]
        items.append(SFTItem(language, instruction, f"{bench.question}\n\n{options}",
                             MMLU_REASONING[language].format(letter=bench.answer, text=text), bench.answer,
                             id=f"{Path(path).name}:{bench.id}"))
    return items
