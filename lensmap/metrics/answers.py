"""Answer tokens: which vocabulary ids stand for a prompt's expected answer.

Two measures of "the model is about to say the answer":

- :func:`answer_first_token` — the single token id the model must produce next, found by
  tokenizing the prompt with and without the answer.
- :func:`word_start_token_ids` — Wendler et al.'s measure ("Do Llamas Work in English?"):
  every token whose text (leading spaces stripped) is a non-empty prefix of the word,
  e.g. ``A``, ``Al``, ``All``, `` All`` ... for ``Allemagne``. Summing the lens probability
  over that set measures the word however the model would start it. :func:`disjoint_sets`
  removes ids shared between the target-language word's set and the English word's set,
  so the two probabilities do not count the same tokens.

Decoding a 150k vocabulary takes a moment, so decode it once with
:func:`decode_vocab_texts` (a plain ``list[str]``, easy to cache as JSON) and, for many
words, index it once with :func:`prefix_index`.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from lensmap.errors import ProbeError

__all__ = [
    "answer_first_token",
    "decode_vocab_texts",
    "prefix_index",
    "word_start_token_ids",
    "disjoint_sets",
]


def _tokenizer_name(tokenizer: Any) -> str:
    """A short name for a tokenizer in error messages."""
    name = getattr(tokenizer, "name_or_path", "") or ""
    return f"{type(tokenizer).__name__}({name!r})" if name else type(tokenizer).__name__


def _encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens (no BOS/EOS)."""
    return list(tokenizer.encode(text, add_special_tokens=False))


def answer_first_token(tokenizer: Any, prompt: str, answer: str) -> int:
    """The id of the first token the model must produce to continue ``prompt`` with ``answer``.

    Tokenizes ``prompt + answer`` and ``prompt`` alone (no special tokens). If the prompt's
    tokens are a prefix of the joint tokens, the next joint token is the answer's first
    token. If the tokenizer merges text across the boundary (the prompt's tokens are not a
    prefix), falls back to the first token of ``answer`` tokenized alone.

    Args:
        tokenizer: a Hugging Face tokenizer (anything with ``encode``/``decode``).
        prompt: the prompt text exactly as fed to the model.
        answer: the expected continuation exactly as it follows the prompt (keep its leading
            space if the format has one).

    Raises:
        ProbeError: the answer is empty, or its first token is the unknown token or decodes
            to nothing.
    """
    name = _tokenizer_name(tokenizer)
    if not answer:
        raise ProbeError(
            f"Empty answer for prompt {prompt[-40:]!r}: there is no answer token to look up. "
            "Give the prompt an answer, or leave it out of answer-token metrics."
        )
    prompt_ids = _encode(tokenizer, prompt)
    joint_ids = _encode(tokenizer, prompt + answer)
    n = len(prompt_ids)
    if len(joint_ids) > n and joint_ids[:n] == prompt_ids:
        token_id = joint_ids[n]
    else:
        alone = _encode(tokenizer, answer)
        if not alone:
            raise ProbeError(
                f"Answer {answer!r} tokenizes to no tokens with {name}. "
                "Check the answer text or use another tokenizer."
            )
        token_id = alone[0]

    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None and token_id == unk:
        raise ProbeError(
            f"The first token of answer {answer!r} is the unknown token with {name}: the "
            "tokenizer cannot spell this word. Use a model whose vocabulary covers the "
            "language, or drop this probe."
        )
    if tokenizer.decode([token_id]) == "":
        raise ProbeError(
            f"The first token ({token_id}) of answer {answer!r} decodes to nothing with "
            f"{name}. Check the answer for invisible characters, or drop this probe."
        )
    return int(token_id)


def decode_vocab_texts(tokenizer: Any, size: int | None = None) -> list[str]:
    """Decoded text of every token id: ``texts[i] == tokenizer.decode([i])``.

    Takes well under a second to a few seconds for a 150k vocabulary. The result is a plain
    list, so it can be cached (e.g. as JSON) next to the model.

    Args:
        tokenizer: a Hugging Face tokenizer.
        size: length of the result; defaults to ``len(tokenizer)``. Pass the model's
            vocabulary (unembedding) size to cover padding rows: ids the tokenizer does not
            know get ``''``.
    """
    known = len(tokenizer)
    size = known if size is None else size
    texts = [tokenizer.decode([i]) for i in range(min(known, size))]
    texts.extend("" for _ in range(size - len(texts)))
    return texts


def prefix_index(vocab_texts: Sequence[str]) -> dict[str, list[int]]:
    """Map each token's text, leading spaces stripped, to the ids with that text.

    Only spaces are stripped (the word itself or the word after a space, as in Wendler et
    al.): a token such as ``"\\tA"`` or ``"\\nA"`` does not start a word. Tokens whose
    stripped text is empty are left out. Build it once and pass it as
    ``index`` to :func:`word_start_token_ids` when looking up many words.
    """
    index: dict[str, list[int]] = {}
    for token_id, text in enumerate(vocab_texts):
        stripped = text.lstrip(" ")
        if stripped:
            index.setdefault(stripped, []).append(token_id)
    return index


def word_start_token_ids(
    tokenizer: Any,
    word: str,
    *,
    vocab_texts: Sequence[str] | None = None,
    index: Mapping[str, list[int]] | None = None,
) -> list[int]:
    """All token ids that could start ``word`` (Wendler et al.'s measure).

    A token qualifies when its decoded text with leading spaces stripped is non-empty and a
    prefix of ``word`` (itself stripped of leading whitespace). So both ``All`` and `` All``
    count for ``Allemagne``, but not ``"\\tAll"``. The match is case-sensitive. A word of
    length L has only L prefixes, each looked up in a text -> ids index.

    Args:
        tokenizer: a Hugging Face tokenizer; only used when neither ``index`` nor
            ``vocab_texts`` is given (then the vocabulary is decoded, which is slow per word).
        word: the answer word, e.g. ``'Allemagne'`` or ``' avril'``.
        vocab_texts: precomputed :func:`decode_vocab_texts` output.
        index: precomputed :func:`prefix_index` output (fastest for many words).

    Returns:
        Sorted token ids (empty if no token starts the word).

    Raises:
        ProbeError: the word is empty or only whitespace.
    """
    target = word.lstrip()
    if not target:
        raise ProbeError(
            f"Empty word {word!r}: no token can start it. Give a non-empty answer word."
        )
    if index is None:
        if vocab_texts is None:
            vocab_texts = decode_vocab_texts(tokenizer)
        index = prefix_index(vocab_texts)
    ids: set[int] = set()
    for end in range(1, len(target) + 1):
        ids.update(index.get(target[:end], ()))
    return sorted(ids)


def disjoint_sets(a: Sequence[int], b: Sequence[int]) -> tuple[list[int], list[int]]:
    """Remove the ids ``a`` and ``b`` share from both; order kept, duplicates dropped.

    Used on the target-word and English-word token sets so that a shared prefix token
    (``Ja`` for ``Japon``/``Japan``) counts for neither language. Either result may be empty.
    """
    shared = set(a) & set(b)

    def keep(ids: Sequence[int]) -> list[int]:
        seen: set[int] = set()
        out = []
        for i in ids:
            if i not in shared and i not in seen:
                seen.add(i)
                out.append(int(i))
        return out

    return keep(a), keep(b)
