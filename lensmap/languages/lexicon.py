"""Word lexicons that attribute short word-start fragments to the configured languages.

fastText cannot place fragments such as `` All`` (Allemagne), ``Gr`` (Grèce) or ``It`` (Italie):
they land in ``unk``, so a French target shows almost no mass even when the model predicts it.
A fragment that is still unknown after fastText and made only of letters is matched against a
lexicon per configured language: languages whose lexicon holds words starting with the fragment
(case-insensitively) share it, with weights proportional to the *fraction* of each lexicon's
words that start with it (so a bigger lexicon does not win by size).

Default lexicons come from CLDR through babel: names of territories, languages and scripts,
and the wide month and weekday names of ``babel.Locale(language)``, split into words. A user
word list (one word per line, ``#`` starts a comment line) can be added per language.
"""

from __future__ import annotations

import bisect
import functools
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from lensmap.errors import LanguageError

#: lid.176 codes that CLDR spells differently.
BABEL_ALIASES: dict[str, str] = {"tl": "fil", "sh": "sr_Latn"}

#: Separators between the words of a CLDR name (spaces, dashes, apostrophes, brackets, ...).
_WORD_SPLIT = re.compile(r"[\s\-\u2010-\u2015'\u2019.,;:()\[\]/&]+")


def split_words(name: str) -> list[str]:
    """Words of a name: split on spaces and punctuation, keep pieces that contain a letter."""
    return [w for w in _WORD_SPLIT.split(name) if any(ch.isalpha() for ch in w)]


@dataclass(frozen=True)
class Lexicon:
    """The case-folded, unique, sorted words of one language."""

    language: str
    words: tuple[str, ...]

    @classmethod
    def from_words(cls, language: str, words: Iterable[str]) -> Lexicon:
        """Build a lexicon from words or phrases (phrases are split into words)."""
        folded = {w.casefold() for phrase in words for w in split_words(phrase)}
        return cls(language, tuple(sorted(folded)))

    def __len__(self) -> int:
        return len(self.words)

    def count_prefix(self, fragment: str) -> int:
        """Number of words starting with ``fragment`` (case-insensitive)."""
        prefix = fragment.casefold()
        if not prefix:
            return 0
        lo = bisect.bisect_left(self.words, prefix)
        hi = bisect.bisect_left(self.words, prefix + "\U0010ffff", lo)
        return hi - lo

    def prefix_fraction(self, fragment: str) -> float:
        """Fraction of this lexicon's words that start with ``fragment``."""
        return self.count_prefix(fragment) / len(self.words) if self.words else 0.0


@functools.lru_cache(maxsize=None)
def cldr_names(language: str) -> tuple[str, ...]:
    """CLDR names in ``language`` (territories, languages, scripts, months, weekdays).

    Returns both the original names and their lower-case forms. Empty (with a warning) when
    CLDR has no locale for the language.
    """
    from babel import Locale
    from babel.core import UnknownLocaleError

    try:
        locale = Locale.parse(BABEL_ALIASES.get(language, language))
    except (UnknownLocaleError, ValueError):
        warnings.warn(
            f"CLDR (babel) has no locale for language {language!r}: its lexicon is empty unless "
            f"you pass a word list with lexicon_files={{{language!r}: 'words.txt'}}.",
            stacklevel=3,
        )
        return ()
    names: list[str] = []
    names += locale.territories.values()
    names += locale.languages.values()
    names += locale.scripts.values()
    names += (locale.months or {}).get("format", {}).get("wide", {}).values()
    names += (locale.days or {}).get("format", {}).get("wide", {}).values()
    names = [str(n) for n in names if n]
    return tuple(dict.fromkeys(names + [n.lower() for n in names]))


def read_word_file(path: str | Path) -> list[str]:
    """Words of a UTF-8 text file with one word per line (blank and ``#`` lines skipped)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise LanguageError(
            f"Lexicon word list {str(path)!r} does not exist. Pass the path of a UTF-8 text "
            "file with one word per line."
        )
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise LanguageError(f"Lexicon word list {str(path)!r} is not UTF-8 text ({exc}). Save it as UTF-8.") from None
    return [s for line in lines if (s := line.strip()) and not s.startswith("#")]


def build_lexicons(
    languages: list[str], lexicon_files: Mapping[str, str | Path] | None = None
) -> dict[str, Lexicon]:
    """One :class:`Lexicon` per configured language: CLDR names plus the user's word list."""
    files = dict(lexicon_files or {})
    unknown = [lang for lang in files if lang not in languages]
    if unknown:
        raise LanguageError(
            f"lexicon_files names language(s) {unknown} that are not configured {languages}; "
            "add them to the languages or remove their word lists."
        )
    lexicons: dict[str, Lexicon] = {}
    for lang in languages:
        words = list(cldr_names(lang))
        if lang in files:
            words += read_word_file(files[lang])
        lexicons[lang] = Lexicon.from_words(lang, words)
    return lexicons


def lexicon_weights(fragment: str, lexicons: Mapping[str, Lexicon]) -> dict[str, float]:
    """Soft attribution of ``fragment`` to languages; ``{}`` if no lexicon word starts with it.

    The weight of a language is the fraction of its lexicon's words that start with the
    stripped fragment, normalised so the weights sum to 1.
    """
    key = fragment.strip()
    if not key:
        return {}
    fractions = {lang: lex.prefix_fraction(key) for lang, lex in lexicons.items()}
    total = sum(fractions.values())
    if total <= 0:
        return {}
    return {lang: f / total for lang, f in fractions.items() if f > 0}
