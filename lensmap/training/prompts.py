"""Code-switched SFT examples with every token labelled by the part of the prompt it belongs to.

An item becomes one chat exchange: the user turn is the instruction (English) then the
question (target language); the assistant turn is the reasoning then an answer line
(``Réponse : 42``), both in the target language. With the tokenizer's chat template when it
has one, else a plain ``instruction, blank line, question, blank line, response`` layout.

Each token gets one span label:

====  =====================================================================
P     template and system text (role markers, default system prompt, separators)
I     the instruction
Q     the question
R     the reasoning
A     the answer line, plus the end-of-turn token that follows it (so the model learns to stop)
====  =====================================================================

The loss covers ``Q``, ``R`` and ``A`` by default (LinguaMap's setting); a token counts when
its first non-space character lies inside a span that is trained (a token
that merges the end of one span with a separator, like ``.\n\n``, belongs to that span).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lensmap.training.items import SFTItem, TrainingDataError

SPANS = "PIQRA"
DEFAULT_LOSS_SPANS = ("Q", "R", "A")
IGNORE_INDEX = -100

# The answer line's word, in the item's language; other languages get the bare answer.
ANSWER_WORDS = {"en": "Answer", "fr": "Réponse", "de": "Antwort", "es": "Respuesta", "it": "Risposta",
                "pt": "Resposta", "zh": "答案", "ja": "答え", "ko": "답", "ru": "Ответ", "ar": "الإجابة"}


@dataclass
class Example:
    """One tokenized training example.

    ``input_ids`` and ``labels`` are ``[seq]`` lists (labels are ``-100`` outside the trained
    spans); ``spans`` is a string of ``seq`` letters from :data:`SPANS`.
    """

    item_id: str
    language: str
    input_ids: list[int]
    labels: list[int]
    spans: str

    def __len__(self) -> int:
        return len(self.input_ids)


def answer_line(item: SFTItem) -> str:
    word = ANSWER_WORDS.get(item.language)
    return f"{word}: {item.answer}" if word else item.answer


def render(item: SFTItem, tokenizer: Any) -> tuple[str, list[tuple[str, str]], bool]:
    """``(text, segments, templated)``: the full example text and its labelled pieces in order."""
    user = f"{item.instruction}\n\n{item.question}"
    response = f"{item.reasoning}\n{answer_line(item)}"
    segments = [("I", item.instruction), ("Q", item.question), ("R", item.reasoning), ("A", answer_line(item))]
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": response}]
        return tokenizer.apply_chat_template(messages, tokenize=False), segments, True
    eos = tokenizer.eos_token or ""
    return f"{user}\n\n{response}{eos}", segments, False


def _char_labels(text: str, segments: Sequence[tuple[str, str]], item_id: str) -> list[str]:
    labels = ["P"] * len(text)
    cursor = 0
    for span, piece in segments:
        start = text.find(piece, cursor)
        if start < 0:
            raise TrainingDataError(f"item {item_id}: the {span} text was not found verbatim in the rendered prompt "
                                    "(the chat template rewrites it); use a tokenizer without that template change")
        labels[start:start + len(piece)] = [span] * len(piece)
        cursor = start + len(piece)
    return labels


def _token_span(text: str, char_span: list[str], start: int, end: int) -> str:
    """The span of a token's first non-space character (all-space tokens: of its last one)."""
    if end <= start:
        return "P"  # special tokens report empty offsets
    for i in range(start, end):
        if not text[i].isspace():
            return char_span[i]
    return char_span[end - 1]


def build_example(
    item: SFTItem,
    tokenizer: Any,
    *,
    loss_spans: Sequence[str] = DEFAULT_LOSS_SPANS,
    max_length: int = 512,
) -> Example:
    """Tokenize ``item`` and label every token (see the module docstring).

    Raises :class:`TrainingDataError` when the example is longer than ``max_length`` tokens
    (nothing is silently cut off) or the tokenizer cannot report character offsets.
    """
    bad = [span for span in loss_spans if span not in SPANS]
    if bad or not loss_spans:
        raise TrainingDataError(f"loss_spans must be letters from {', '.join(SPANS)}; got {list(loss_spans)}")
    text, segments, templated = render(item, tokenizer)
    char_span = _char_labels(text, segments, item.id)
    try:
        enc = tokenizer(text, add_special_tokens=not templated, return_offsets_mapping=True)
    except NotImplementedError:
        raise TrainingDataError("the tokenizer cannot report character offsets (a slow tokenizer); "
                                "load the model's fast tokenizer") from None
    ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
    spans = [_token_span(text, char_span, start, end) for start, end in offsets]
    answer_end = max(i for i, s in enumerate(spans) if s == "A")
    if answer_end + 1 < len(ids):  # the end-of-turn marker right after the answer counts as A
        spans[answer_end + 1] = "A"
    if len(ids) > max_length:
        raise TrainingDataError(f"item {item.id} is {len(ids)} tokens long, more than max_length {max_length}; "
                                "raise max_length or shorten the item")
    trained = set(loss_spans)
    labels = [tok if span in trained else IGNORE_INDEX for tok, span in zip(ids, spans)]
    return Example(item.id, item.language, ids, labels, "".join(spans))


def build_examples(items: Sequence[SFTItem], tokenizer: Any, **kwargs: Any) -> list[Example]:
    """:func:`build_example` for every item."""
    return [build_example(item, tokenizer, **kwargs) for item in items]


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch: ``input_ids``, ``attention_mask`` and ``labels``, each ``[batch, seq]``."""
    width = max(len(e) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example)
        ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
