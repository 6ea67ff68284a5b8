"""Decode every token id of a tokenizer to the surface string it stands for.

Three schemes, detected from the fast tokenizer's backend decoder (and the vocabulary when
there is no backend):

``byte_level``
    GPT-2 style byte-level BPE (GPT-2, Qwen2, SmolLM2, Llama-3). Each byte is written as one
    printable character (``Ġ`` is the space byte). Inverting that byte↔character table gives the
    token's bytes, which are UTF-8 decoded. A token holding only part of a multi-byte character
    cannot be decoded on its own and is marked *partial*.
``sentencepiece``
    SentencePiece pieces (Gemma, Llama-2): ``▁`` is a space; byte-fallback pieces ``<0xE4>``
    are single bytes, partial unless they are ASCII.
``wordpiece``
    BERT-style WordPiece: the continuation prefix (``##``) is removed; other tokens are taken
    as they are.
``decode``
    Anything else: ``tokenizer.decode([id])``; a result containing U+FFFD is marked partial.

Special and control tokens (``tokenizer.all_special_ids``, added tokens flagged special,
placeholder entries such as ``[PAD151665]`` or ``<unused12>``) and every id at or beyond the
tokenizer's size (embedding rows without a token) are marked *special*.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass

import numpy as np

from lensmap.errors import LanguageError
from lensmap.models.tokenizers import special_token_ids

BYTE_LEVEL = "byte_level"
SENTENCEPIECE = "sentencepiece"
WORDPIECE = "wordpiece"
DECODE = "decode"

SPACE_PIECE = "\u2581"  # ▁
BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
#: Vocabulary entries that are placeholders or control tokens even when not flagged special.
PLACEHOLDER = re.compile(r"\[PAD\d+\]|<unused\d+>|<extra_id_\d+>|<\|[^|<>\s]+\|>")


@dataclass
class DecodedVocabulary:
    """The surface strings of ids ``0..V-1``.

    ``texts``: ``V`` strings (partial tokens show undecodable bytes as ``\\xNN``).
    ``raw``: the bytes of partial tokens (``None`` for the others), used for script attribution.
    ``partial``, ``special``: bool arrays ``[V]``.
    ``scheme``: one of ``byte_level``, ``sentencepiece``, ``wordpiece``, ``decode``.
    ``n_tokenizer``: number of ids the tokenizer itself defines (``len(tokenizer)``).
    """

    texts: list[str]
    raw: list[bytes | None]
    partial: np.ndarray
    special: np.ndarray
    scheme: str
    n_tokenizer: int

    def __len__(self) -> int:
        return len(self.texts)


@functools.lru_cache(maxsize=1)
def byte_to_char() -> dict[int, str]:
    """GPT-2's byte → printable-character table (all 256 bytes).

    Bytes that are printable and not whitespace stand for themselves; the remaining ones are
    given the characters U+0100, U+0101, ... in byte order (so the space byte 0x20 becomes ``Ġ``).
    """
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {b: chr(b) for b in printable}
    next_char = 0x100
    for b in range(256):
        if b not in table:
            table[b] = chr(next_char)
            next_char += 1
    return table


@functools.lru_cache(maxsize=1)
def _char_to_byte_translation() -> dict[int, str]:
    """``str.translate`` table turning byte-level characters into latin-1 characters.

    Characters in 0..255 that are *not* part of the byte-level alphabet map to U+FFFF so that
    the following ``encode('latin-1')`` fails on them (such tokens are not byte-level encoded).
    """
    inverse: dict[int, str] = {ord(ch): chr(b) for b, ch in byte_to_char().items()}
    for cp in range(256):
        inverse.setdefault(cp, "\uffff")
    return inverse


def byte_level_bytes(token: str) -> bytes | None:
    """The bytes a byte-level token stands for, or None if it is not byte-level encoded."""
    try:
        return token.translate(_char_to_byte_translation()).encode("latin-1")
    except UnicodeEncodeError:
        return None


def _decode_bytes(raw: bytes) -> tuple[str, bytes | None]:
    """UTF-8 decode; returns ``(text, None)`` or, if incomplete, ``(text with \\xNN, raw)``."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="backslashreplace"), raw


def decode_byte_level(token: str) -> tuple[str, bytes | None] | None:
    """Decode one byte-level BPE token: ``(text, raw bytes if partial else None)``.

    Returns None when ``token`` is not written in the byte-level alphabet.
    """
    raw = byte_level_bytes(token)
    return None if raw is None else _decode_bytes(raw)


def decode_sentencepiece(piece: str) -> tuple[str, bytes | None]:
    """Decode one SentencePiece piece: ``▁`` → space, ``<0xNN>`` → that byte (partial if ≥ 0x80)."""
    match = BYTE_PIECE.fullmatch(piece)
    if match:
        return _decode_bytes(bytes([int(match.group(1), 16)]))
    return piece.replace(SPACE_PIECE, " "), None


def _decoder_description(tokenizer) -> tuple[set[str], set[str]]:
    """Types of the backend decoder (recursively) and the patterns of its Replace steps.

    For a WordPiece decoder the continuation prefix is reported as a pattern ``prefix:##``.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None) if backend is not None else None
    if decoder is None:
        return set(), set()
    try:
        state = json.loads(decoder.__getstate__())
    except Exception:
        return set(), set()
    types: set[str] = set()
    patterns: set[str] = set()

    def walk(node: dict) -> None:
        types.add(str(node.get("type")))
        pattern = node.get("pattern")
        if isinstance(pattern, dict):
            patterns.update(str(v) for v in pattern.values())
        if node.get("type") == "WordPiece":
            patterns.add("prefix:" + str(node.get("prefix", "##")))
        for child in node.get("decoders") or []:
            walk(child)

    walk(state)
    return types, patterns


def _scheme_from_vocab(tokens: list[str | None]) -> str:
    """Guess the scheme from how often ``Ġ`` or ``▁`` appear in (a sample of) the vocabulary."""
    sample = [t for t in tokens[:: max(1, len(tokens) // 20000)] if t]
    if not sample:
        return DECODE
    space_bytes = sum("\u0120" in t for t in sample) / len(sample)
    space_pieces = sum(SPACE_PIECE in t for t in sample) / len(sample)
    if space_bytes > 0.05 and space_bytes >= space_pieces:
        return BYTE_LEVEL
    if space_pieces > 0.05:
        return SENTENCEPIECE
    return DECODE


def detect_scheme(tokenizer, tokens: list[str | None] | None = None) -> str:
    """The decoding scheme of ``tokenizer``: ``byte_level``, ``sentencepiece``, ``wordpiece``
    or ``decode``.

    Read from the fast tokenizer's backend decoder (ByteLevel; Metaspace or a Replace of
    ``▁``; WordPiece); without a backend decoder, guessed from the vocabulary ``tokens``.
    """
    types, patterns = _decoder_description(tokenizer)
    if "ByteLevel" in types:
        return BYTE_LEVEL
    if "Metaspace" in types or SPACE_PIECE in patterns:
        return SENTENCEPIECE
    if types == {"WordPiece"}:
        return WORDPIECE
    if types:
        return DECODE
    return _scheme_from_vocab(tokens or [])


def _added_texts(tokenizer) -> dict[int, str]:
    """Content of added tokens that are not special: literal text, not encoded."""
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    return {int(i): str(tok.content) for i, tok in added.items() if not getattr(tok, "special", False)}


def _wordpiece_prefix(tokenizer) -> str:
    """Continuation prefix of a WordPiece decoder (``##`` by default)."""
    _, patterns = _decoder_description(tokenizer)
    return next((p[len("prefix:"):] for p in patterns if p.startswith("prefix:")), "##")


def _fallback_decode(tokenizer, token_id: int) -> tuple[str, bytes | None]:
    """``tokenizer.decode([id])``; a replacement character marks the token partial."""
    text = tokenizer.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False)
    return (text, text.encode("utf-8", "surrogatepass")) if "\ufffd" in text else (text, None)


def decode_vocabulary(tokenizer, vocab_size: int | None = None) -> DecodedVocabulary:
    """Decode ids ``0..vocab_size-1`` (default ``len(tokenizer)``) of ``tokenizer``.

    ``vocab_size`` may exceed the tokenizer (embedding matrices are often padded: Qwen has
    151,936 rows for ~151,665 tokens); the extra ids are marked special with empty text. It
    may also be smaller, in which case ids beyond it are ignored.
    """
    n_tokenizer = len(tokenizer)
    size = n_tokenizer if vocab_size is None else int(vocab_size)
    if size <= 0:
        raise LanguageError(f"vocab_size must be a positive number of embedding rows, got {vocab_size!r}.")
    n_known = min(size, n_tokenizer)
    tokens: list[str | None] = list(tokenizer.convert_ids_to_tokens(list(range(n_known))))
    scheme = detect_scheme(tokenizer, tokens)
    special_ids = special_token_ids(tokenizer)
    added = _added_texts(tokenizer)
    continuation = _wordpiece_prefix(tokenizer) if scheme == WORDPIECE else ""

    texts: list[str] = [""] * size
    raw: list[bytes | None] = [None] * size
    special = np.zeros(size, dtype=bool)
    special[n_known:] = True
    for i, token in enumerate(tokens):
        if token is None or i in special_ids or PLACEHOLDER.fullmatch(token):
            texts[i] = token or ""
            special[i] = True
            continue
        if i in added:
            texts[i] = added[i]
            continue
        decoded = None
        if scheme == BYTE_LEVEL:
            decoded = decode_byte_level(token)
        elif scheme == SENTENCEPIECE:
            decoded = decode_sentencepiece(token)
        elif scheme == WORDPIECE:
            decoded = (token[len(continuation):] if token.startswith(continuation) else token), None
        if decoded is None:
            decoded = _fallback_decode(tokenizer, i)
        texts[i], raw[i] = decoded
    partial = np.fromiter((r is not None for r in raw), dtype=bool, count=size)
    return DecodedVocabulary(texts, raw, partial, special, scheme, n_tokenizer)
