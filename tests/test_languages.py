"""Tests of the vocabulary language map on the real Qwen and Gemma tokenizers."""

from __future__ import annotations

import json

import pytest
import torch

from lensmap.errors import LanguageError
from lensmap.languages import (
    EXTRA_BUCKETS,
    METHODS,
    Lexicon,
    build_lexicons,
    build_vocabulary_map,
    decode_vocabulary,
    identify,
    lexicon_weights,
    lid_languages,
    validate_languages,
)
from lensmap.languages import vocab_map as vocab_map_module
from lensmap.languages.scripts import AMBIGUOUS, NEUTRAL, SCRIPT, classify_text, partial_language
from lensmap.languages.tokens import (
    BYTE_LEVEL,
    SENTENCEPIECE,
    byte_to_char,
    decode_byte_level,
    decode_sentencepiece,
)

LANGUAGES = ["en", "fr", "de", "zh", "ru", "ja", "ko"]


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    """A private lensmap cache directory for the vocabulary maps of this module.

    LENSMAP_CACHE points there only while a map is built, so the
    session's tokenizer fixtures keep using the real cache of converted zoo models.
    """
    return tmp_path_factory.mktemp("lensmap-cache")


@pytest.fixture(scope="module")
def qwen_map(qwen_tokenizer, cache_root):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LENSMAP_CACHE", str(cache_root))
        return build_vocabulary_map(qwen_tokenizer, LANGUAGES, progress=False)


def single_id(tokenizer, text: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert len(ids) == 1, f"{text!r} is not one token: {ids}"
    return ids[0]


# --------------------------------------------------------------------------- labels on Qwen

@pytest.mark.parametrize(
    ("text", "language", "method"),
    [
        ("的", "zh", "script"),
        (" the", "en", "fasttext"),
        (" которые", "ru", "fasttext"),
        ("こんにちは", "ja", "script"),
        (" 한국", "ko", "script"),
        (",", "neutral", "neutral"),
        ("，", "neutral", "neutral"),
        ("<|endoftext|>", "special", "special"),
    ],
)
def test_obvious_qwen_tokens(qwen_tokenizer, qwen_map, text, language, method):
    row = qwen_map.table.loc[single_id(qwen_tokenizer, text)]
    assert row["text"] == text
    assert (row["language"], row["method"]) == (language, method)


def test_table_shape_and_placeholders_are_special(qwen_tokenizer, qwen_map):
    table = qwen_map.table
    assert len(table) == len(qwen_tokenizer)
    assert {"token_id", "text", "language", "method", "confidence"} <= set(table.columns)
    assert (table["token_id"].to_numpy() == range(len(table))).all()
    assert set(table["method"]) <= set(METHODS)
    assert qwen_map.scheme == BYTE_LEVEL
    # The GGUF tokenizer pads the vocabulary with "[PAD151665]"... entries: not text.
    pad = qwen_tokenizer.convert_tokens_to_ids("[PAD151665]")
    assert table.loc[pad, "method"] == "special"


def test_weights_rows_sum_to_one(qwen_map):
    weights = qwen_map.weights()
    assert weights.dtype == torch.float32
    assert weights.shape == (qwen_map.vocab_size, len(LANGUAGES) + len(EXTRA_BUCKETS))
    assert qwen_map.columns() == LANGUAGES + list(EXTRA_BUCKETS)
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(1), torch.ones(qwen_map.vocab_size), atol=1e-5, rtol=0)
    assert qwen_map.weights() is weights  # cached on the instance
    share = qwen_map.vocab_share()
    assert list(share.index) == qwen_map.columns()
    assert share.sum() == pytest.approx(1.0)
    assert share["zh"] > 0.05 and share["en"] > 0.05


def test_weights_follow_labels(qwen_tokenizer, qwen_map):
    weights = qwen_map.weights()
    columns = qwen_map.columns()
    the = single_id(qwen_tokenizer, " the")
    assert weights[the, columns.index("en")] == 1.0
    eot = qwen_tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert weights[eot, columns.index("special")] == 1.0
    table = qwen_map.table
    # a language that is not configured goes to "other"
    other_row = table.index[(table["method"] == "fasttext") & (table["language"] == "pl")][0]
    assert weights[other_row, columns.index("other")] == 1.0
    unk_row = table.index[table["method"] == "unk"][0]
    assert weights[unk_row, columns.index("unk")] == 1.0


def test_counts(qwen_map):
    counts = qwen_map.counts()
    assert list(counts.index) == qwen_map.columns()
    assert counts["n_tokens"].sum() == qwen_map.vocab_size
    assert (counts[list(METHODS)].sum(axis=1) == counts["n_tokens"]).all()
    assert counts.loc["zh", "script"] > 10_000
    assert counts.loc["en", "fasttext"] > 10_000
    assert counts.loc["special", "special"] > 0


@pytest.mark.parametrize("fragment", [" All", "Gr"])
def test_french_fragment_gets_lexicon_weight(qwen_tokenizer, qwen_map, fragment):
    token = single_id(qwen_tokenizer, fragment)
    row = qwen_map.table.loc[token]
    assert row["method"] == "lexicon"
    assert json.loads(row["lexicon_weights"])["fr"] > 0
    weights = qwen_map.weights()[token]
    assert weights[qwen_map.columns().index("fr")] > 0
    assert weights[qwen_map.columns().index("unk")] == 0


# --------------------------------------------------------------------------- decoding

def test_byte_level_decoding_keeps_leading_space(qwen_tokenizer, qwen_map):
    assert decode_byte_level("Ġthe") == (" the", None)
    the = qwen_tokenizer.convert_tokens_to_ids("Ġthe")
    assert qwen_map.table.loc[the, "text"] == " the"
    # not byte-level alphabet (a raw space) -> None
    assert decode_byte_level("a b") is None


def test_sentencepiece_decoding_keeps_leading_space(gemma_tokenizer):
    decoded = decode_vocabulary(gemma_tokenizer)
    assert decoded.scheme == SENTENCEPIECE
    the = gemma_tokenizer.convert_tokens_to_ids("\u2581the")
    assert decoded.texts[the] == " the"
    assert not decoded.partial[the]
    high = gemma_tokenizer.convert_tokens_to_ids("<0xE4>")
    assert decoded.partial[high] and decoded.raw[high] == b"\xe4"
    ascii_byte = gemma_tokenizer.convert_tokens_to_ids("<0x41>")
    assert decoded.texts[ascii_byte] == "A" and not decoded.partial[ascii_byte]
    assert decoded.special[gemma_tokenizer.convert_tokens_to_ids("<eos>")]
    assert decode_sentencepiece("\u2581Paris") == (" Paris", None)


def test_partial_byte_tokens(qwen_tokenizer, qwen_map):
    table = qwen_map.table
    lead = qwen_tokenizer.convert_tokens_to_ids(byte_to_char()[0xE4])  # starts only Han characters
    assert table.loc[lead, "method"] == "partial"
    assert table.loc[lead, "language"] == "zh"
    continuation = qwen_tokenizer.convert_tokens_to_ids(byte_to_char()[0x80])
    assert table.loc[continuation, "method"] == "partial"
    assert table.loc[continuation, "language"] == "unk"
    assert qwen_map.weights()[continuation, qwen_map.columns().index("unk")] == 1.0
    assert decode_byte_level(byte_to_char()[0xE4] + byte_to_char()[0xB8]) == ("\\xe4\\xb8", b"\xe4\xb8")


def test_extra_embedding_rows_are_special(qwen_tokenizer):
    decoded = decode_vocabulary(qwen_tokenizer, vocab_size=len(qwen_tokenizer) + 7)
    assert len(decoded) == len(qwen_tokenizer) + 7
    assert decoded.special[-7:].all()
    assert not decoded.special[single_id(qwen_tokenizer, " the")]
    with pytest.raises(LanguageError, match="vocab_size"):
        decode_vocabulary(qwen_tokenizer, vocab_size=0)


def tiny_wordpiece(with_decoder: bool):
    """A 6-token WordPiece tokenizer built in memory (no files, no network)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "hello": 1, "##ing": 2, "Москва": 3, "的": 4, "[CLS]": 5}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    if with_decoder:
        backend.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", cls_token="[CLS]")


def test_wordpiece_and_fallback_decoding():
    decoded = decode_vocabulary(tiny_wordpiece(with_decoder=True))
    assert decoded.scheme == "wordpiece"
    assert decoded.texts[1:5] == ["hello", "ing", "Москва", "的"]
    fallback = decode_vocabulary(tiny_wordpiece(with_decoder=False))
    assert fallback.scheme == "decode"
    assert fallback.texts[1] == "hello"
    assert fallback.special.tolist() == [True, False, False, False, False, True]


def test_build_with_more_embedding_rows_than_tokens():
    vocab_map = build_vocabulary_map(
        tiny_wordpiece(with_decoder=True), ["ru", "zh"], vocab_size=9, use_cache=False, progress=False
    )
    table = vocab_map.table
    assert len(table) == 9
    assert table["method"].tolist()[5:] == ["special"] * 4
    assert table.loc[4, "language"] == "zh"
    weights = vocab_map.weights()
    assert weights.shape == (9, 2 + len(EXTRA_BUCKETS))
    torch.testing.assert_close(weights.sum(1), torch.ones(9))
    assert weights[6:, vocab_map.columns().index("special")].eq(1).all()


# --------------------------------------------------------------------------- cache

def test_second_build_loads_from_cache(qwen_tokenizer, qwen_map, cache_root, monkeypatch):
    assert not qwen_map.from_cache
    assert list((cache_root / "vocab").glob("*.json.gz"))

    def must_not_label(*args, **kwargs):
        raise AssertionError("labelled again instead of loading the cache")

    monkeypatch.setenv("LENSMAP_CACHE", str(cache_root))
    monkeypatch.setattr(vocab_map_module, "label_vocabulary", must_not_label)
    again = build_vocabulary_map(qwen_tokenizer, LANGUAGES, progress=False)
    assert again.from_cache
    assert again.cache_key == qwen_map.cache_key
    assert again.table.equals(qwen_map.table)
    # another setting is another key: it must label again
    with pytest.raises(AssertionError, match="labelled again"):
        build_vocabulary_map(qwen_tokenizer, LANGUAGES, threshold=0.6, progress=False)


# --------------------------------------------------------------------------- languages

@pytest.mark.parametrize("bad", ["xx", "english"])
def test_unknown_language_raises(bad):
    with pytest.raises(LanguageError, match=repr(bad)) as info:
        validate_languages(["en", bad])
    assert "lid_languages" in str(info.value)
    if bad == "english":
        assert "'en'" in str(info.value)


def test_validate_languages_normalises_and_rejects_duplicates():
    assert validate_languages([" EN", "fr"]) == ["en", "fr"]
    with pytest.raises(LanguageError, match="twice"):
        validate_languages(["en", "en"])
    with pytest.raises(LanguageError, match="list"):
        validate_languages("en")


def test_build_rejects_bad_threshold(qwen_tokenizer):
    with pytest.raises(LanguageError, match="threshold"):
        build_vocabulary_map(qwen_tokenizer, ["en"], threshold=1.5, progress=False)


def test_lid_model():
    codes = lid_languages()
    assert len(codes) == 176 and {"en", "fr", "zh", "ja"} <= codes
    language, prob = identify("Bonjour tout le monde,\ncomment allez-vous aujourd'hui ?")
    assert language == "fr" and prob > 0.5
    assert identify("  \n ") == ("unk", 0.0)


# --------------------------------------------------------------------------- scripts and lexicons

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("日本", (SCRIPT, "zh")),  # kanji alone: zh (documented ambiguity)
        ("日本語です", (SCRIPT, "ja")),
        ("カタカナ", (SCRIPT, "ja")),
        ("한국어", (SCRIPT, "ko")),
        ("สวัสดี", (SCRIPT, "th")),
        (" Ελλάδα", (SCRIPT, "el")),
        ("ቤት", (SCRIPT, "am")),
        (" 123, ", (NEUTRAL, None)),
        ("𝑑", (NEUTRAL, None)),
        ("hello", (AMBIGUOUS, None)),
        ("привет", (AMBIGUOUS, None)),
        ("AI的", (AMBIGUOUS, None)),
    ],
)
def test_script_rules(text, expected):
    assert classify_text(text) == expected


def test_partial_language_from_lead_bytes():
    assert partial_language(b"\xe4\xb8") == "zh"
    assert partial_language(b"\xea\xb0") == "ko"  # U+AC00.. Hangul syllables
    assert partial_language(b"\x80") is None
    assert partial_language(b"\xc3") is None  # Latin-1 supplement: shared script
    assert partial_language(b"\xe0\x80") is None  # overlong: no character starts so


def test_lexicon_weights_are_fractions_not_counts():
    lexicons = {
        "en": Lexicon.from_words("en", ["Germany", "Greece", "Albania", "Spain", "France", "Italy"]),
        "fr": Lexicon.from_words("fr", ["Allemagne", "Grèce"]),
    }
    weights = lexicon_weights(" Gr", lexicons)
    # en: 1 of 6 words, fr: 1 of 2 words -> 1/6 : 1/2
    assert weights == pytest.approx({"en": 0.25, "fr": 0.75})
    assert lexicon_weights("gr", lexicons) == weights  # case-insensitive
    assert lexicon_weights("Zq", lexicons) == {}


def test_cldr_and_user_lexicons(tmp_path):
    words = tmp_path / "fr.txt"
    words.write_text("# my words\nZyxwfrançais\n\n", encoding="utf-8")
    lexicons = build_lexicons(["en", "fr"], {"fr": str(words)})
    assert lexicons["fr"].count_prefix("allem") > 0  # Allemagne, allemand (CLDR)
    assert lexicon_weights("Zyxw", lexicons) == {"fr": 1.0}
    with pytest.raises(LanguageError, match="missing.txt"):
        build_lexicons(["fr"], {"fr": str(tmp_path / "missing.txt")})
    with pytest.raises(LanguageError, match="not configured"):
        build_lexicons(["fr"], {"de": str(words)})
