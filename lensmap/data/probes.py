"""Probe prompt sets built from real data (CLDR via babel) or read from a user's file.

Three sources of :class:`Prompt` lists:

- :func:`translation_probes` — few-shot word translation in the style of Wendler et al.
  ("Do Llamas Work in English?"), built from CLDR names of countries, languages, months or
  weekdays::

      Français: "Allemagne" - 中文: "德国"
      Français: "Espagne" - 中文: "西班牙"
      Français: "Japon" - 中文: "

  The answer (``日本``) follows the opening quote directly, so it has no leading space.

- :func:`cloze_probes` — a CLDR sequence (months or weekdays) in one language, cut off after
  a separator; the model should continue with the next name::

      janvier, février, mars,          -> answer " avril"
      一月、二月、三月、                  -> answer "四月"

  The separator is the locale's own list separator (``, `` in most locales, ``、`` in
  Chinese and Japanese), so the answer carries a leading space exactly when the separator
  ends with one.

- :func:`load_prompts_file` — the user's own prompts from JSONL or CSV/TSV.

Everything is seeded and repeatable; nothing touches the network.

A note on CLDR data: babel 2.18 resolves the ``stand-alone`` month and day names through
aliases that can leak between locales within one process (e.g. German stand-alone months
read as ``一月`` after Chinese was loaded), so only the ``format``/``wide`` names are used.
In a few languages (Russian, Polish, Greek, ...) those are the genitive forms
(``января`` rather than ``январь``).
"""

from __future__ import annotations

import csv
import json
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from babel import Locale
from babel.core import UnknownLocaleError

from lensmap.errors import LanguageError, LensmapWarning, ProbeError

__all__ = [
    "Prompt",
    "translation_probes",
    "cloze_probes",
    "load_prompts_file",
    "TRANSLATION_DOMAINS",
    "CLOZE_DOMAINS",
    "TERRITORY_CODES",
    "LANGUAGE_CODES",
]


@dataclass(frozen=True)
class Prompt:
    """One prompt fed to the model as plain text (no chat template).

    Attributes:
        text: the prompt text.
        probe: name of the probe set, e.g. ``"translation fr->zh territories"``,
            ``"cloze fr months"`` or a prompts file's stem.
        source: source language code (``''`` if none).
        target: target language code (``''`` if none).
        answer: the expected continuation exactly as it would follow ``text`` (with a leading
            space where the format needs one), ``''`` if unknown.
        answer_en: the English counterpart of the answer word (``''`` if unknown).
        item: an id of the item, e.g. the CLDR territory code ``'JP'``.
    """

    text: str
    probe: str
    source: str
    target: str
    answer: str = ""
    answer_en: str = ""
    item: str = ""


# Well-known sovereign countries (ISO 3166-1 alpha-2): no regions, no obscure territories.
TERRITORY_CODES: tuple[str, ...] = (
    "US", "GB", "FR", "DE", "IT", "ES", "PT", "NL", "BE", "CH", "AT", "SE", "NO", "DK",
    "FI", "IS", "IE", "PL", "CZ", "HU", "GR", "TR", "RU", "UA", "RO", "BG", "HR", "RS",
    "CN", "JP", "KR", "IN", "PK", "BD", "ID", "TH", "VN", "PH", "MY", "SG", "AU", "NZ",
    "CA", "MX", "BR", "AR", "CL", "CO", "PE", "VE", "CU", "EG", "MA", "DZ", "TN", "NG",
    "KE", "ET", "ZA", "SA", "IR", "IQ", "IL", "SY", "AF", "NP", "MN", "KZ",
)  # fmt: skip

# Widely spoken or widely known languages (ISO 639 codes as CLDR spells them).
LANGUAGE_CODES: tuple[str, ...] = (
    "en", "fr", "de", "es", "it", "pt", "nl", "sv", "da", "fi", "no", "pl", "cs", "hu",
    "ro", "el", "tr", "ru", "uk", "ar", "he", "fa", "hi", "bn", "ur", "ta", "zh", "ja",
    "ko", "th", "vi", "id", "ms", "sw", "la", "ga", "cy", "is",
)  # fmt: skip

# Stable ASCII ids for months (CLDR keys 1..12) and weekdays (CLDR keys 0..6, 0 = Monday).
_MONTH_IDS: tuple[str, ...] = (
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
)  # fmt: skip
_WEEKDAY_IDS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

TRANSLATION_DOMAINS: tuple[str, ...] = ("territories", "languages", "months", "weekdays")
CLOZE_DOMAINS: tuple[str, ...] = ("months", "weekdays")

# Words containing any of these are skipped: they would clash with the prompt format
# (quotes, colons) or are qualified names such as "Norwegisch (Bokmål)".
_BAD_CHARS = frozenset('()[]{}（）［］"“”«»„:;/|&\n\r\t')

# Cloze context lengths: how many names precede the one to predict.
_CLOZE_CONTEXT_LENGTHS: tuple[int, ...] = (2, 3, 4, 5)


# --------------------------------------------------------------------------- locales


def _locale(code: str) -> Locale:
    """Parse a language code (``fr``, ``pt_BR``, ``zh-Hant``) or raise LanguageError."""
    if not isinstance(code, str) or not code.strip():
        raise LanguageError(
            f"Empty or invalid language code {code!r}. "
            "Give a CLDR locale code such as 'fr', 'zh' or 'pt_BR'."
        )
    try:
        return Locale.parse(code.strip().replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError) as exc:
        raise LanguageError(
            f"Unknown language code {code!r}: babel's CLDR data has no such locale ({exc}). "
            "Give a CLDR locale code such as 'fr', 'zh', 'ja' or 'pt_BR' "
            "(babel.localedata.locale_identifiers() lists them all)."
        ) from None


def _language_name(locale: Locale) -> str:
    """The language's own name for itself, first letter capitalised (``Français``, ``中文``)."""
    name = locale.get_display_name(locale) or str(locale)
    return name[:1].upper() + name[1:]


def _domain_words(locale: Locale, domain: str) -> dict[str, str]:
    """Item id -> CLDR word in ``locale`` for one domain (items the locale lacks are left out)."""
    if domain == "territories":
        names = locale.territories
        return {code: names[code] for code in TERRITORY_CODES if names.get(code)}
    if domain == "languages":
        names = locale.languages
        return {code: names[code] for code in LANGUAGE_CODES if names.get(code)}
    if domain == "months":
        months = locale.months["format"]["wide"]
        return {_MONTH_IDS[k - 1]: months[k] for k in range(1, 13) if months.get(k)}
    if domain == "weekdays":
        days = locale.days["format"]["wide"]
        return {_WEEKDAY_IDS[k]: days[k] for k in range(7) if days.get(k)}
    raise ProbeError(
        f"Unknown probe domain {domain!r}. "
        f"Use one of: {', '.join(TRANSLATION_DOMAINS)} (cloze probes: {', '.join(CLOZE_DOMAINS)})."
    )


def _usable(word: str) -> bool:
    """A word can go between quotes in a prompt: non-empty and free of format-breaking chars."""
    return bool(word.strip()) and not any(ch in _BAD_CHARS for ch in word)


def _check_counts(**counts: int | None) -> None:
    for name, value in counts.items():
        if name == "n" and value is None:
            continue
        minimum = 0 if name == "shots" else 1
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ProbeError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def _take(n: int | None, default: int, available: int, probe: str) -> int:
    """How many items to use: ``n`` (or ``default`` if None), capped at ``available``.

    An explicit ``n`` larger than what the probe has triggers a :class:`LensmapWarning` naming
    the probe and the real number, which is what every output then holds.
    """
    if n is None:
        return min(default, available)
    if n > available:
        warnings.warn(
            f"probe {probe!r}: n={n} asked for more prompts than it has; it has {available} usable "
            f"item(s), so it uses n={available}.",
            LensmapWarning,
            stacklevel=3,
        )
    return min(n, available)


# --------------------------------------------------------------------------- translation


def translation_probes(
    source: str,
    target: str,
    *,
    n: int | None = None,
    shots: int = 4,
    seed: int = 0,
    domain: str = "territories",
) -> list[Prompt]:
    """Few-shot word-translation prompts from CLDR names (Wendler et al. style).

    Each prompt has ``shots`` complete example lines followed by the query line, which ends
    right after the opening quote of the target word::

        Français: "Allemagne" - 中文: "德国"
        Français: "Japon" - 中文: "

    Language names are each language's own name for itself (``Locale(code).get_display_name(code)``),
    first letter capitalised. Items whose source and target words are equal (ignoring case)
    or contain characters such as parentheses or quotes are skipped. The few-shot examples
    never include the query item.

    Args:
        source: CLDR code of the source language (``'fr'``).
        target: CLDR code of the target language (``'zh'``).
        n: number of prompts (default: 40, or every usable item if there are fewer). Capped
            at the number of usable items in the domain (e.g. at most 12 for months, 7 for
            weekdays); an explicit ``n`` above that warns (:class:`~lensmap.errors.LensmapWarning`)
            with the real number.
        shots: number of example lines; capped at the number of other usable items.
        seed: seed for the choice and order of query items and of their examples.
        domain: ``'territories'`` (about 70 well-known countries), ``'languages'``,
            ``'months'`` or ``'weekdays'``.

    Returns:
        Prompts with ``probe = "translation {source}->{target} {domain}"``, ``answer`` = the
        target word (no leading space), ``answer_en`` = the English CLDR word, ``item`` = the
        item id (territory or language code, ``'jan'``..``'dec'``, ``'mon'``..``'sun'``).

    Raises:
        LanguageError: a language code babel does not know.
        ProbeError: an unknown domain, bad counts, or fewer than two usable items.
    """
    _check_counts(n=n, shots=shots)
    if domain not in TRANSLATION_DOMAINS:
        raise ProbeError(
            f"Unknown translation probe domain {domain!r}. Use one of: {', '.join(TRANSLATION_DOMAINS)}."
        )
    src_loc, tgt_loc, en_loc = _locale(source), _locale(target), _locale("en")
    src_words = _domain_words(src_loc, domain)
    tgt_words = _domain_words(tgt_loc, domain)
    en_words = _domain_words(en_loc, domain)

    pool = [
        item
        for item in src_words
        if item in tgt_words
        and _usable(src_words[item])
        and _usable(tgt_words[item])
        and src_words[item].casefold() != tgt_words[item].casefold()
    ]
    if len(pool) < 2:
        raise ProbeError(
            f"Only {len(pool)} usable {domain} item(s) for translation {source}->{target}: "
            "items whose source and target words are identical are skipped, so source and "
            "target must be different languages. Pick another language pair or domain."
        )

    src_name, tgt_name = _language_name(src_loc), _language_name(tgt_loc)

    def line(item: str, *, complete: bool) -> str:
        head = f'{src_name}: "{src_words[item]}" - {tgt_name}: "'
        return head + (f'{tgt_words[item]}"' if complete else "")

    probe = f"translation {source}->{target} {domain}"
    rng = random.Random(seed)
    queries = rng.sample(pool, _take(n, 40, len(pool), probe))
    k = min(shots, len(pool) - 1)
    prompts = []
    for item in queries:
        examples = rng.sample([other for other in pool if other != item], k)
        lines = [line(ex, complete=True) for ex in examples] + [line(item, complete=False)]
        prompts.append(
            Prompt(
                text="\n".join(lines),
                probe=probe,
                source=source,
                target=target,
                answer=tgt_words[item],
                answer_en=en_words.get(item, ""),
                item=item,
            )
        )
    return prompts


# --------------------------------------------------------------------------- cloze


def _list_separator(locale: Locale) -> str:
    """The locale's separator between list items: ``', '``, ``'、'``, ``'، '``, ...

    Taken from CLDR's list patterns (middle element). Some locales' patterns contain a word
    (Arabic ``'{0} و{1}'`` = "and"); those fall back to another pattern style without a word,
    then to the punctuation before the word (Arabic ``'، '``), then to ``', '``.
    """
    patterns = locale.list_patterns
    styles = ["standard"] + [s for s in patterns if s != "standard"]
    seps = []
    for style in styles:
        middle = patterns.get(style, {}).get("middle")
        if middle and "{0}" in middle and "{1}" in middle:
            seps.append(middle.replace("{0}", "").replace("{1}", ""))
    for sep in seps:
        if sep and not any(ch.isalpha() for ch in sep):
            return sep
    for sep in seps:
        head = ""
        for ch in sep:
            if ch.isalpha():
                break
            head += ch
        if head.strip():
            return head
    return ", "


def cloze_capacity(domain: str = "months") -> int:
    """How many distinct cloze prompts a domain has (one per start and context length)."""
    if domain not in CLOZE_DOMAINS:
        raise ProbeError(f"Unknown cloze probe domain {domain!r}. Use one of: {', '.join(CLOZE_DOMAINS)}.")
    return len(_CLOZE_CONTEXT_LENGTHS) * len(_MONTH_IDS if domain == "months" else _WEEKDAY_IDS)


def cloze_probes(
    target: str, *, n: int | None = None, seed: int = 0, domain: str = "months"
) -> list[Prompt]:
    """Sequence-completion prompts in one language: a few CLDR names in order, then the next.

    Each prompt is 2 to 5 consecutive month (or weekday) names joined by the locale's list
    separator and ending with that separator without its trailing space; the answer is the
    next name, with the separator's trailing space in front (``janvier, février, mars,`` ->
    ``' avril'``; ``一月、二月、三月、`` -> ``'四月'``). Sequences wrap around (December ->
    January, Sunday -> Monday; weekdays start on Monday). Prompts are zero-shot: no
    complete example sequences precede the query.

    The choice of (start, length) pairs depends only on ``seed``, ``n`` and ``domain``, not
    on the language, so the same arguments give parallel prompts (same ``item``) across
    languages.

    Args:
        target: CLDR code of the language (``'fr'``).
        n: number of prompts (default 24). Capped at the number of (start, length) pairs
            (48 for months, 28 for weekdays); an explicit ``n`` above that warns
            (:class:`~lensmap.errors.LensmapWarning`) with the real number.
        seed: seed for the choice and order of the pairs.
        domain: ``'months'`` or ``'weekdays'`` (CLDR ``format``/``wide`` names).

    Returns:
        Prompts with ``probe = "cloze {target} {domain}"``, ``source = ''``, ``answer_en`` =
        the English name, ``item`` like ``'jan-mar>apr'`` (first and last names shown, then
        the answer).

    Raises:
        LanguageError: a language code babel does not know.
        ProbeError: an unknown domain or bad ``n``.
    """
    _check_counts(n=n)
    if domain not in CLOZE_DOMAINS:
        raise ProbeError(
            f"Unknown cloze probe domain {domain!r}. Use one of: {', '.join(CLOZE_DOMAINS)}."
        )
    loc = _locale(target)
    words = _domain_words(loc, domain)
    en_words = _domain_words(_locale("en"), domain)
    ids = _MONTH_IDS if domain == "months" else _WEEKDAY_IDS
    missing = [i for i in ids if i not in words]
    if missing:
        raise ProbeError(
            f"CLDR has no {domain} names {missing} for {target!r}; pick another language."
        )

    sep = _list_separator(loc)
    sep_head = sep.rstrip()
    sep_tail = sep[len(sep_head):]
    size = len(ids)
    pairs = [(start, length) for length in _CLOZE_CONTEXT_LENGTHS for start in range(size)]
    probe = f"cloze {target} {domain}"
    rng = random.Random(seed)
    chosen = rng.sample(pairs, _take(n, 24, len(pairs), probe))

    prompts = []
    for start, length in chosen:
        context = [ids[(start + j) % size] for j in range(length)]
        nxt = ids[(start + length) % size]
        text = sep.join(words[i] for i in context) + sep_head
        prompts.append(
            Prompt(
                text=text,
                probe=probe,
                source="",
                target=target,
                answer=sep_tail + words[nxt],
                answer_en=en_words.get(nxt, ""),
                item=f"{context[0]}-{context[-1]}>{nxt}",
            )
        )
    return prompts


# --------------------------------------------------------------------------- files

_COLUMNS = ("prompt", "answer", "answer_en", "source", "target", "probe", "item")
_JSON_SUFFIXES = (".jsonl", ".json")
_TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t"}


def load_prompts_file(path: str | Path) -> list[Prompt]:
    """Read prompts from a JSONL (``.jsonl``/``.json``, one object per line) or CSV/TSV file.

    Columns/keys: ``prompt`` (required, used verbatim — trailing spaces matter), and the
    optional ``answer`` (also verbatim: keep its leading space if the format needs one),
    ``answer_en``, ``source``, ``target``, ``probe`` (default: the file's stem) and ``item``.
    Column names are matched case-insensitively; other columns are ignored. In JSONL files
    blank lines are skipped; a ``.json`` file holding one JSON array of objects is accepted
    too.

    Raises:
        ProbeError: missing file, unsupported extension, unreadable encoding, malformed JSON
            on a line, a record that is not an object, no ``prompt`` column, an empty prompt
            on a line, text that is not valid Unicode (a lone surrogate such as ``"\\ud800"``),
            a CSV quote that is never closed or other malformed quoting, or no prompts at all —
            each naming the file, the line and the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise ProbeError(
            f"Prompts file {str(path)!r} does not exist (or is not a file). Check the path."
        )
    suffix = path.suffix.lower()
    if suffix not in _JSON_SUFFIXES and suffix not in _TABLE_SUFFIXES:
        raise ProbeError(
            f"Prompts file {str(path)!r} has unsupported extension {path.suffix!r}. "
            "Use .jsonl or .json (one JSON object per line) or .csv / .tsv with a 'prompt' column."
        )
    try:
        content = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ProbeError(
            f"Prompts file {str(path)!r} is not valid UTF-8 ({exc}). Save it as UTF-8."
        ) from None

    if suffix in _JSON_SUFFIXES:
        records = _json_records(path, content)
    else:
        records = _table_records(path, content, _TABLE_SUFFIXES[suffix])

    prompts = [_record_to_prompt(path, where, record) for where, record in records]
    if not prompts:
        raise ProbeError(
            f"Prompts file {str(path)!r} contains no prompts. "
            "Add at least one record with a non-empty 'prompt'."
        )
    return prompts


def _json_records(path: Path, content: str) -> list[tuple[str, dict[str, Any]]]:
    """(location, object) pairs from JSON lines, or from one JSON array in a .json file."""
    if path.suffix.lower() == ".json" and content.lstrip().startswith("["):
        try:
            data = json.loads(content)
        except json.JSONDecodeError as exc:
            raise ProbeError(
                f"Prompts file {str(path)!r}: malformed JSON on line {exc.lineno} ({exc.msg}). "
                "Fix the JSON, or write one JSON object per line."
            ) from None
        records = [(f"record {i}", obj) for i, obj in enumerate(data, start=1)]
    else:
        records = []
        for lineno, raw in enumerate(content.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ProbeError(
                    f"Prompts file {str(path)!r}: malformed JSON on line {lineno} ({exc.msg}). "
                    "Each line must be one JSON object, e.g. "
                    '{"prompt": "janvier, février, mars,", "answer": " avril"}.'
                ) from None
            records.append((f"line {lineno}", obj))
    for where, obj in records:
        if not isinstance(obj, dict):
            raise ProbeError(
                f"Prompts file {str(path)!r}: {where} is a JSON {type(obj).__name__}, not an "
                'object. Write each prompt as an object such as {"prompt": "..."}.'
            )
    cleaned = [(where, {str(k).strip().lower(): v for k, v in obj.items()}) for where, obj in records]
    if cleaned and not any("prompt" in obj for _, obj in cleaned):
        keys = sorted({k for _, obj in cleaned for k in obj})
        raise ProbeError(
            f"Prompts file {str(path)!r} has no 'prompt' key (keys found: {', '.join(keys) or 'none'}). "
            "Name the field holding the prompt text 'prompt'."
        )
    return cleaned


def _table_records(path: Path, content: str, delimiter: str) -> list[tuple[str, dict[str, Any]]]:
    """(location, row) pairs from a CSV/TSV file with a header row."""
    lines = content.splitlines(keepends=True)
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return []
    except csv.Error as exc:
        raise ProbeError(f"Prompts file {str(path)!r}: unreadable header ({exc}). Fix the file.") from None
    columns = [h.strip().lower() for h in header]
    if "prompt" not in columns:
        found = ", ".join(repr(h) for h in header) or "none"
        kind = "tab" if delimiter == "\t" else "comma"
        raise ProbeError(
            f"Prompts file {str(path)!r} has no 'prompt' column (columns found: {found}). "
            f"Add a header row with a 'prompt' column ({kind}-separated)."
        )
    records = []
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):
                raise ProbeError(
                    f"Prompts file {str(path)!r}: the quote opened on line {start} is never closed, so "
                    "the rest of the file would be read as one field. Close the quote (inside a quoted "
                    'field write a quote as "").'
                ) from None
            raise ProbeError(
                f"Prompts file {str(path)!r}: malformed row on line {start} ({exc}). "
                'Check its quoting: a field that contains quotes must be quoted, with each quote doubled ("").'
            ) from None
        if not row or all(not cell.strip() for cell in row):
            continue
        record = {col: cell for col, cell in zip(columns, row) if col}
        records.append((f"line {start}", record))
    return records


def _record_to_prompt(path: Path, where: str, record: dict[str, Any]) -> Prompt:
    """Turn one record into a Prompt, checking its fields."""
    if "prompt" not in record:
        keys = ", ".join(repr(k) for k in record) or "none"
        raise ProbeError(
            f"Prompts file {str(path)!r}: no 'prompt' on {where} (fields found: {keys}). "
            "Give every record a 'prompt'."
        )
    values: dict[str, str] = {}
    for key in _COLUMNS:
        value = record.get(key)
        if value is None:
            values[key] = ""
        elif isinstance(value, (str, int, float)) and not isinstance(value, bool):
            values[key] = str(value)
        else:
            raise ProbeError(
                f"Prompts file {str(path)!r}: {key!r} on {where} is a {type(value).__name__}; "
                "it must be a string."
            )
    for key, value in values.items():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ProbeError(
                f"Prompts file {str(path)!r}: {key!r} on {where} is not valid Unicode text: character "
                f"{exc.start + 1} is a lone surrogate ({value[exc.start]!r}), which no tokenizer can encode. "
                "A JSON escape such as \\ud83d must be followed by its low half (\\ude00), or write the "
                "character itself."
            ) from None
    if not values["prompt"].strip():
        raise ProbeError(
            f"Prompts file {str(path)!r}: empty prompt on {where}. "
            "Give every record a non-empty 'prompt', or delete the record."
        )
    return Prompt(
        text=values["prompt"],
        probe=values["probe"].strip() or path.stem,
        source=values["source"].strip(),
        target=values["target"].strip(),
        answer=values["answer"],
        answer_en=values["answer_en"].strip(),
        item=values["item"].strip(),
    )
