"""Scoring a response: the answer it gives, whether that is right, and which language it is in.

Answer extraction looks at the *last* answer line (``Answer: …``, ``Réponse : …``, ``答案：…``
and the other words of :data:`~lensmap.evaluation.scenarios.ANSWER_WORDS`, or "the answer is
…"), and falls back to the end of the response:

* MMLU: a letter A–D (``(B)``, ``B.``, ``B``); else the one option whose text the end of the
  response quotes.
* MGSM: the first number after the answer word, else the last number in the response;
  thousands separators (``1,234``, ``1 234``, ``2.850``) are removed; compared numerically.
* XQuAD: the answer line's text, else the last non-empty line; SQuAD exact match and token F1
  after normalisation (lower case, no punctuation, no English articles; Chinese and Japanese
  are compared character by character). Correct means F1 ≥ 0.5.

Language: the response (without its answer line's number) is judged by
:func:`lensmap.languages.lid.identify_text` — the script for Chinese, Japanese, Korean and
other single-language scripts, fastText lid.176 otherwise — which decides; ``langdetect`` gives
a second opinion that is recorded beside it. A response with no letters at all (only digits
or punctuation) is *undetectable*: counted separately, never as a wrong language.

Failure modes per item: ``ok`` (right answer, right language), ``consistency_bottleneck``
(right answer, wrong language), ``transfer_bottleneck`` (wrong answer, right language),
``both`` (wrong answer, wrong language), ``empty`` (no response), ``undetectable_language``.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from dataclasses import dataclass

from lensmap.evaluation.benchmarks import LETTERS, BenchItem
from lensmap.evaluation.scenarios import ANSWER_WORDS

FAILURE_MODES = ("ok", "consistency_bottleneck", "transfer_bottleneck", "both", "empty", "undetectable_language")

_WORDS = sorted({w for w in ANSWER_WORDS.values()} | {"answer is", "final answer", "answer", "答案是", "答えは",
                                                      "ответ"}, key=len, reverse=True)
_ANSWER_LINE = re.compile(r"(?:" + "|".join(re.escape(w) for w in _WORDS) + r")\s*(?:\*\*)?\s*[:：]?\s*(?:is\s+)?(.*)",
                          re.IGNORECASE)
_NUMBER = re.compile(r"-?\d[\d,.\u00a0\u202f ]*\d|-?\d")


def answer_tail(response: str) -> str | None:
    """The text after the last answer word (``Answer:``, ``答案：``, "the answer is" …), or None."""
    tail = None
    for match in _ANSWER_LINE.finditer(response):
        tail = match.group(1)
    if tail is None:
        return None
    return tail.split("\n")[0].strip()


# --------------------------------------------------------------------------- MMLU

def extract_choice(response: str, options: tuple[str, ...] = ()) -> str | None:
    """The option letter a response picks, or None."""
    tail = answer_tail(response)
    if tail is not None:  # after an answer word a bare letter is the choice
        match = re.search(r"(?<![A-Za-z])\(?([ABCD])\)?(?![A-Za-z])", tail)
        if match:
            return match.group(1)
    last = response.strip().split("\n")[-1] if response.strip() else ""
    # elsewhere only an unmistakable choice: "(B)", or a line that is just "B" / "B." / "B)"
    match = re.search(r"\(([ABCD])\)", last) or re.fullmatch(r"\s*\(?([ABCD])[.):]?\s*", last)
    if match:
        return match.group(1)
    end = response[-300:].lower()
    quoted = [letter for letter, option in zip(LETTERS, options) if option and option.lower() in end]
    return quoted[0] if len(quoted) == 1 else None


# --------------------------------------------------------------------------- MGSM

def parse_number(text: str) -> float | None:
    """A number as written (``1,234``, ``1 234``, ``2.850``, ``3.5``, ``-4``), or None."""
    raw = re.sub(r"[\u00a0\u202f ]", "", text.strip())
    if not raw or not re.fullmatch(r"-?[\d.,]+", raw):
        return None
    if re.fullmatch(r"-?\d{1,3}([.,]\d{3})+", raw) and not re.fullmatch(r"-?0[.,]\d{3}", raw):
        raw = raw.replace(",", "").replace(".", "")  # grouped thousands
    elif "," in raw and "." in raw:
        raw = raw.replace(",", "") if raw.rfind(".") > raw.rfind(",") else raw.replace(".", "").replace(",", ".")
    else:
        raw = raw.replace(",", ".")
    try:
        return float(raw)
    except ValueError:
        return None


def extract_number(response: str) -> float | None:
    """The final numeric answer: the first number after the last answer word, else the last number."""
    tail = answer_tail(response)
    if tail:
        for match in _NUMBER.finditer(tail):
            value = parse_number(match.group(0))
            if value is not None:
                return value
    values = [parse_number(m.group(0)) for m in _NUMBER.finditer(response)]
    values = [v for v in values if v is not None]
    return values[-1] if values else None


# --------------------------------------------------------------------------- XQuAD

def _is_cjk(ch: str) -> bool:
    return "CJK" in unicodedata.name(ch, "") or "HIRAGANA" in unicodedata.name(ch, "") or \
        "KATAKANA" in unicodedata.name(ch, "")


def normalize_answer(text: str) -> list[str]:
    """SQuAD-style tokens: lower case, no punctuation or English articles; CJK by character."""
    text = text.lower()
    text = "".join(" " if unicodedata.category(ch).startswith("P") or ch in string.punctuation else ch for ch in text)
    tokens: list[str] = []
    for word in text.split():
        if word in ("a", "an", "the"):
            continue
        if any(_is_cjk(ch) for ch in word):
            tokens.extend(ch for ch in word)
        else:
            tokens.append(word)
    return tokens


def span_scores(prediction: str, golds: tuple[str, ...]) -> tuple[float, float]:
    """``(exact_match, f1)``, each the best over the gold spans."""
    pred = normalize_answer(prediction)
    best_em, best_f1 = 0.0, 0.0
    for gold in golds:
        ref = normalize_answer(gold)
        best_em = max(best_em, float(pred == ref))
        common = sum((Counter(pred) & Counter(ref)).values())
        if common:
            precision, recall = common / len(pred), common / len(ref)
            best_f1 = max(best_f1, 2 * precision * recall / (precision + recall))
    return best_em, best_f1


def extract_span(response: str) -> str:
    tail = answer_tail(response)
    if tail:
        return tail.strip(" .。*\"'«»“”「」")
    lines = [line.strip() for line in response.strip().split("\n") if line.strip()]
    return lines[-1] if lines else ""


# --------------------------------------------------------------------------- language

def langdetect_language(text: str) -> str:
    """langdetect's opinion (seeded, so repeatable), mapped to lid.176 codes; ``unk`` if it has none."""
    from langdetect import DetectorFactory, LangDetectException, detect

    DetectorFactory.seed = 0
    try:
        code = detect(text)
    except LangDetectException:
        return "unk"
    return {"zh-cn": "zh", "zh-tw": "zh"}.get(code, code)


@dataclass
class Judgement:
    """What scoring found in one response."""

    prediction: str
    correct: bool
    exact_match: float
    f1: float
    language: str  # the deciding detector's label ("unk" when undetectable)
    language_prob: float
    language_method: str  # script | fasttext | none
    langdetect: str
    language_ok: bool | None  # None: empty or undetectable
    failure_mode: str


def judge(item: BenchItem, response: str) -> Judgement:
    """Score one response to ``item`` (see the module docstring)."""
    from lensmap.languages.lid import identify_text, same_language

    text = response.strip()
    em = f1 = 0.0
    if item.benchmark == "mmlu":
        choice = extract_choice(text, item.options)
        prediction, correct = choice or "", choice == item.answer
    elif item.benchmark == "mgsm":
        value = extract_number(text)
        prediction = "" if value is None else f"{value:g}"
        correct = value is not None and abs(value - float(item.answer)) < 1e-6
    else:
        prediction = extract_span(text)
        em, f1 = span_scores(prediction, item.answers)
        correct = f1 >= 0.5
    if item.benchmark != "xquad":
        em = f1 = float(correct)
    language, prob, method = identify_text(text)
    second = langdetect_language(text) if method != "none" else "unk"
    if not text:
        ok, mode = None, "empty"
    elif method == "none":
        ok, mode = None, "undetectable_language"
    else:
        ok = same_language(language, item.language)
        mode = {(True, True): "ok", (True, False): "consistency_bottleneck",
                (False, True): "transfer_bottleneck", (False, False): "both"}[(bool(correct), ok)]
    return Judgement(prediction, bool(correct), em, f1, language, float(prob), method, second, ok, mode)
