"""Batched generation for the evaluation: chat template, left padding, greedy by default.

Prompts are sorted by length before batching (less padding, the same outputs: each row is
generated independently of its batch mates under greedy decoding) and returned in input order.
Generation stops at the end-of-turn token or at any configured stop string; the stop string
and everything after it are cut from the response. A response that ran into
``max_new_tokens`` without stopping is flagged as truncated: its final answer is often missing,
and the evaluation reports how many there were rather than letting them pass as plain errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from lensmap.models.handle import ModelHandle
from lensmap.models.tokenizers import left_padded


@dataclass
class GenerationSettings:
    """How responses are generated (``evaluation.generation`` in a config)."""

    max_new_tokens: int = 192
    batch_size: int = 8
    greedy: bool = True
    temperature: float = 0.7  # used when greedy is false
    top_p: float = 0.95
    stop: list[str] = field(default_factory=lambda: ["\n\n\n"])
    chat_template: bool = True  # use the tokenizer's chat template when it has one
    seed: int = 0


def render_chat(tokenizer: Any, prompt: str, use_template: bool = True) -> str:
    """The text the model sees: the chat template's user turn plus the assistant header, or the raw prompt."""
    if use_template and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
    return prompt + "\n\n"


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    return text[:cut] if cut >= 0 else text


@dataclass
class Response:
    """One generated response: its text (stop string cut) and whether it hit ``max_new_tokens``."""

    text: str
    truncated: bool


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = ids if isinstance(ids, list) else [ids]
    return {int(i) for i in [*ids, tokenizer.eos_token_id] if i is not None}


def generate(
    handle: ModelHandle,
    prompts: Sequence[str],
    settings: GenerationSettings | None = None,
    *,
    progress: bool = True,
    desc: str = "generating",
) -> list[str]:
    """One response text per prompt (``prompts`` are user turns, rendered with :func:`render_chat`)."""
    return [r.text for r in generate_responses(handle, prompts, settings, progress=progress, desc=desc)]


def generate_responses(
    handle: ModelHandle,
    prompts: Sequence[str],
    settings: GenerationSettings | None = None,
    *,
    progress: bool = True,
    desc: str = "generating",
) -> list[Response]:
    """As :func:`generate`, with each response's truncation flag."""
    settings = settings or GenerationSettings()
    tokenizer, model = handle.tokenizer, handle.model
    texts = [render_chat(tokenizer, p, settings.chat_template) for p in prompts]
    order = sorted(range(len(texts)), key=lambda i: len(tokenizer(texts[i], add_special_tokens=False)["input_ids"]))
    templated = settings.chat_template and getattr(tokenizer, "chat_template", None)
    responses: list[Response] = [Response("", False)] * len(texts)
    eos = _eos_ids(model, tokenizer)
    torch.manual_seed(settings.seed)
    was_training = model.training
    model.eval()
    bar = tqdm(total=len(texts), desc=desc, unit="prompt", disable=not progress)
    try:
        with left_padded(tokenizer):
            _generate_batches(handle, texts, order, settings, bool(templated), eos, responses, bar)
    finally:
        bar.close()
        model.train(was_training)
    return responses


def _generate_batches(handle: ModelHandle, texts: list[str], order: list[int], settings: GenerationSettings,
                      templated: bool, eos: set[int], responses: list[Response], bar) -> None:
    """Generate ``texts`` in batches of similar length (``order``), filling ``responses`` in place."""
    tokenizer, model = handle.tokenizer, handle.model
    for start in range(0, len(order), settings.batch_size):
        batch = order[start:start + settings.batch_size]
        enc = tokenizer([texts[i] for i in batch], return_tensors="pt", padding=True,
                        add_special_tokens=not templated).to(handle.device)
        sampling = {} if settings.greedy else {"temperature": settings.temperature, "top_p": settings.top_p}
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=settings.max_new_tokens, do_sample=not settings.greedy,
                                 pad_token_id=tokenizer.pad_token_id, stop_strings=list(settings.stop) or None,
                                 tokenizer=tokenizer, **sampling)
        new_tokens = out[:, enc["input_ids"].shape[1]:]
        decoded = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        full_length = new_tokens.shape[1] >= settings.max_new_tokens
        for row, (i, text) in enumerate(zip(batch, decoded)):
            cut = cut_at_stop(text, settings.stop)
            ended = cut != text or any(int(t) in eos for t in new_tokens[row].tolist())
            responses[i] = Response(cut.strip(), truncated=full_length and not ended)
        bar.update(len(batch))
