"""Unicode-script rules for token fragments that fastText cannot judge.

fastText is unreliable on one- or two-character fragments, but many scripts are written by a
single language (in practice, and among the 176 languages lid.176 knows). A token whose letters
all belong to such a script is labelled by the script alone:

* Han → ``zh``; Hiragana/Katakana (with or without Han) → ``ja``; Hangul → ``ko``.
  **Ambiguity:** Japanese writes kanji with the same Han characters, so a token made only of
  Han characters (e.g. ``日本``) is labelled ``zh`` even when the model uses it for Japanese;
  only tokens that contain kana are Japanese. Japanese mass is therefore under-counted and
  Chinese over-counted by the share of pure-kanji tokens. (Korean hanja likewise go to ``zh``.)
* Thai → th, Greek → el, Hebrew → he (Yiddish ligatures װ ױ ײ → yi), Georgian → ka,
  Armenian → hy, Bengali → bn (Assamese letters ৰ ৱ → as), Tamil → ta, Telugu → te,
  Gujarati → gu, Gurmukhi → pa, Kannada → kn, Malayalam → ml, Sinhala → si, Khmer → km,
  Lao → lo, Myanmar → my, Ethiopic → am, Tibetan → bo, Thaana → dv, Oriya → or.
  Greek letters are also used as mathematical symbols (``α``, ``μ``); such tokens still go to el.

Scripts shared by several languages (Latin, Cyrillic, Arabic, Devanagari, ...) and tokens that
mix scripts are left to fastText. A token without any letter (digits, punctuation, whitespace,
symbols, emoji) is *neutral*.

Scripts are read from ``unicodedata.name`` (first word of the character name), so the rules
follow the Unicode version of the running Python.
"""

from __future__ import annotations

import functools
import unicodedata

#: Internal tags for the two scripts that combine into Japanese.
HAN = "Han"
KANA = "Kana"
#: A letter of a script shared by several languages (or of an unknown script).
SHARED = "*"

#: Result kinds of :func:`classify_text`.
NEUTRAL = "neutral"
SCRIPT = "script"
AMBIGUOUS = "ambiguous"

#: First word of a Unicode character name → language (or HAN/KANA tag).
SCRIPT_LANGUAGE: dict[str, str] = {
    "HIRAGANA": KANA,
    "KATAKANA": KANA,
    "KATAKANA-HIRAGANA": KANA,
    "HANGUL": "ko",
    "THAI": "th",
    "GREEK": "el",
    "HEBREW": "he",
    "GEORGIAN": "ka",
    "ARMENIAN": "hy",
    "BENGALI": "bn",
    "TAMIL": "ta",
    "TELUGU": "te",
    "GUJARATI": "gu",
    "GURMUKHI": "pa",
    "KANNADA": "kn",
    "MALAYALAM": "ml",
    "SINHALA": "si",
    "KHMER": "km",
    "LAO": "lo",
    "MYANMAR": "my",
    "ETHIOPIC": "am",
    "TIBETAN": "bo",
    "THAANA": "dv",
    "ORIYA": "or",
    "IDEOGRAPHIC": HAN,  # 々 IDEOGRAPHIC ITERATION MARK (a letter); punctuation is not a letter
}

#: Scripts whose name words are known but shared by several languages (left to fastText).
SHARED_SCRIPTS = frozenset({"LATIN", "CYRILLIC", "ARABIC", "DEVANAGARI", "SYRIAC", "MONGOLIAN"})

#: Letters that move a script's default language to another language written in it.
LANGUAGE_MARKERS: dict[str, dict[str, str]] = {
    "he": {"\u05f0": "yi", "\u05f1": "yi", "\u05f2": "yi"},
    "bn": {"\u09f0": "as", "\u09f1": "as"},
}

#: Largest range of code points :func:`partial_language` enumerates for one byte prefix.
MAX_PARTIAL_RANGE = 1 << 16


def _name_tag(name: str) -> str | None:
    """Script tag for a character name: a language, HAN/KANA, SHARED, or None if not a script word."""
    words = name.split(" ", 2)
    first = words[0]
    if first in ("CJK", "HALFWIDTH", "FULLWIDTH") and len(words) > 1:
        second = words[1]
        if first == "CJK" and second in ("UNIFIED", "COMPATIBILITY") and "IDEOGRAPH" in name:
            return HAN
        if second in ("KATAKANA", "HANGUL"):
            return SCRIPT_LANGUAGE[second]
        if second in SHARED_SCRIPTS:
            return SHARED
        return None
    if first in SCRIPT_LANGUAGE:
        return SCRIPT_LANGUAGE[first]
    if first in SHARED_SCRIPTS:
        return SHARED
    return None


@functools.lru_cache(maxsize=None)
def char_tag(ch: str) -> str | None:
    """Script tag of one character, or None when it is not a letter.

    Letters are Unicode category ``L*``; marks (``M*``) count as letters only when their name
    names a script (Indic vowel signs do; ``COMBINING ...`` accents and variation selectors do
    not). Letterlike symbols (U+2100–214F) and mathematical alphanumerics (U+1D400–1D7FF) are
    not letters. A letter whose script is not single-language returns :data:`SHARED`.
    """
    cp = ord(ch)
    if 0x2100 <= cp <= 0x214F or 0x1D400 <= cp <= 0x1D7FF:
        return None  # letterlike symbols and mathematical alphanumerics (ℝ, 𝑑) are symbols
    category = unicodedata.category(ch)
    name = unicodedata.name(ch, "")
    if not name and category == "Lo" and 0x20000 <= cp <= 0x3FFFF:
        return HAN  # CJK extensions newer than this Python's Unicode database
    if category[0] == "L":
        return _name_tag(name) or SHARED
    if category[0] == "M":
        return _name_tag(name)
    return None


def has_letters(text: str) -> bool:
    """True if ``text`` contains at least one letter (see :func:`char_tag`)."""
    return any(char_tag(ch) is not None for ch in text)


def is_letters_only(text: str) -> bool:
    """True if ``text`` is non-empty and every character is a letter (see :func:`char_tag`)."""
    return bool(text) and all(char_tag(ch) is not None for ch in text)


def resolve_tags(tags: set[str], text: str = "") -> str | None:
    """Language for a set of script tags, or None when they do not single one out.

    Han alone → zh; Han + kana or kana alone → ja; one single-language script → its language
    (with :data:`LANGUAGE_MARKERS` applied to ``text``); anything shared or mixed → None.
    """
    if not tags or SHARED in tags:
        return None
    if tags <= {HAN, KANA}:
        return "ja" if KANA in tags else "zh"
    if len(tags) != 1:
        return None
    language = next(iter(tags))
    for marker, other in LANGUAGE_MARKERS.get(language, {}).items():
        if marker in text:
            return other
    return language


def classify_text(text: str) -> tuple[str, str | None]:
    """Classify a decoded token by script.

    Returns ``(NEUTRAL, None)`` when it has no letters, ``(SCRIPT, language)`` when its letters
    single out a language, and ``(AMBIGUOUS, None)`` when fastText must decide.
    """
    tags = {tag for ch in text if (tag := char_tag(ch)) is not None}
    if not tags:
        return NEUTRAL, None
    language = resolve_tags(tags, text)
    return (SCRIPT, language) if language is not None else (AMBIGUOUS, None)


# --------------------------------------------------------------------------- partial bytes

def _sequence_length(lead: int) -> int:
    """Length of the UTF-8 sequence a lead byte starts (0 for a continuation or invalid byte)."""
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 0


def _incomplete_tail(raw: bytes) -> bytes:
    """The incomplete UTF-8 sequence at the end of ``raw`` (lead byte + continuations), or b""."""
    for back in range(1, min(4, len(raw)) + 1):
        byte = raw[-back]
        if 0x80 <= byte <= 0xBF:
            continue
        need = _sequence_length(byte)
        return raw[-back:] if need > back else b""
    return b""


_LEAD_MASK = {2: 0x1F, 3: 0x0F, 4: 0x07}
_SMALLEST = {2: 0x80, 3: 0x800, 4: 0x10000}


def _code_point_range(prefix: bytes) -> tuple[int, int] | None:
    """Smallest and largest code point whose UTF-8 encoding starts with ``prefix``.

    None when no valid character starts that way (overlong or out-of-range prefixes).
    """
    need = _sequence_length(prefix[0])
    value = prefix[0] & _LEAD_MASK[need]
    for byte in prefix[1:]:
        value = (value << 6) | (byte & 0x3F)
    free_bits = 6 * (need - len(prefix))
    low = max(value << free_bits, _SMALLEST[need])
    high = min((value << free_bits) | ((1 << free_bits) - 1), 0x10FFFF)
    return (low, high) if low <= high else None


@functools.lru_cache(maxsize=None)
def _range_language(low: int, high: int) -> str | None:
    """Language shared by every letter in code points ``low..high`` (non-letters ignored)."""
    if high - low >= MAX_PARTIAL_RANGE:
        return None
    tags: set[str] = set()
    for cp in range(low, high + 1):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        tag = char_tag(chr(cp))
        if tag is not None:
            tags.add(tag)
            if tag == SHARED or len(tags) > 2:
                return None
    return resolve_tags(tags)


def partial_language(raw: bytes) -> str | None:
    """Language of a token that is not valid UTF-8 on its own, by script, if it is certain.

    The complete characters inside the token decide when they contain letters; otherwise the
    incomplete character at its end does, when every letter its lead byte(s) could start
    belongs to one single-language script (e.g. ``E4 B8`` can only start a Han character).
    Returns None when the script does not single out a language.
    """
    core = raw.decode("utf-8", errors="ignore")
    kind, language = classify_text(core)
    if kind != NEUTRAL:
        return language
    tail = _incomplete_tail(raw)
    if not tail:
        return None
    bounds = _code_point_range(tail)
    return _range_language(*bounds) if bounds else None
