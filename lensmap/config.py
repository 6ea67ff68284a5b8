"""The YAML config of ``lensmap report``: schema, defaults and validation.

Every check names the field that is wrong (``probes[1].target``) and how to fix it. Paths
in a config are relative to the directory you run ``lensmap`` from.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from lensmap.errors import ConfigError, LanguageError
from lensmap.evaluation.protocol import EvalSettings

PROBE_KINDS = ("translation", "cloze", "file")
DOMAINS = {"translation": ("territories", "languages", "months", "weekdays"), "cloze": ("months", "weekdays")}


@dataclass
class ProbeConfig:
    """One prompt set: CLDR ``translation`` or ``cloze`` probes, or a user ``file`` (JSONL/CSV)."""

    kind: str
    source: str = ""
    target: str = ""
    domain: str = ""
    n: int = 40
    shots: int = 4
    seed: int = 0
    path: str = ""


@dataclass
class VocabConfig:
    """How tokens are labelled with languages."""

    threshold: float = 0.5
    lexicon: dict[str, str] = field(default_factory=dict)  # language -> word-list file (one word per line)


@dataclass
class TunedLensConfig:
    """How a tuned lens is trained and evaluated (``tuned_lens:``; see docs/tuned_lens.md)."""

    languages: list[str] = field(default_factory=list)  # default: the config's languages
    sources: list[str] = field(default_factory=lambda: ["bible"])  # bible | flores | generated
    files: dict[str, str] = field(default_factory=dict)  # language -> your text file (one passage per line)
    tokens_per_language: int = 2048
    eval_tokens_per_language: int = 512
    seq_len: int = 128
    positions_per_sequence: int = 32
    batch_size: int = 8  # sequences per frozen forward pass (their positions are shuffled into steps)
    rows_per_step: int = 32  # positions per optimiser step
    lr: float = 1e-3
    warmup_steps: int = 10
    weight_decay: float = 0.0
    seed: int = 0
    max_minutes: float = 0.0  # 0 = no time limit
    evaluate: bool = True


@dataclass
class PhasesConfig:
    """Cross-lingual similarity, phase detection and the recommendation (``phases:``; docs/phases.md)."""

    enabled: bool = True
    source: str = "cldr"  # cldr | bible | files | table: the parallel items
    domain: str = "territories"  # cldr: territories | languages | months | weekdays
    n: int = 60  # parallel items (cldr, bible); 0 = all
    files: dict[str, str] = field(default_factory=dict)  # files: language -> FLORES-format file
    table: str = ""  # table: a TSV (one column per language) or JSONL file
    languages: list[str] = field(default_factory=list)  # default: the config's languages
    n_boot: int = 1000  # bootstrap resamples of the similarity intervals
    phase_boot: int = 200  # bootstrap resamples of the boundaries
    seed: int = 0
    strategy: str = "linguamap"  # linguamap | cogsym | custom
    budget: float = 0.05  # linguamap: largest fraction of parameters to train
    layers: list[int] = field(default_factory=list)  # custom: the blocks


@dataclass
class ReportConfig:
    """Everything ``lensmap report`` needs. Only model, languages, probes and output are required."""

    model: str
    languages: list[str]
    probes: list[ProbeConfig]
    output: str
    dtype: str = "auto"
    device: str = "cpu"
    trust_remote_code: bool = False
    lens: str = "logit"
    positions: str = "last"
    batch_size: int = 8
    vocab: VocabConfig = field(default_factory=VocabConfig)
    title: str = ""
    backend: str = "native"  # native | transformer-lens | nnsight: how the residual stream is captured
    device_map: str = ""  # "" (whole model on `device`) or auto | balanced | balanced_low_0 | sequential
    lens_path: str = ""  # lens: tuned — a saved lens directory ("" = lensmap's cache, trained there if missing)
    tuned_lens: TunedLensConfig = field(default_factory=TunedLensConfig)
    phases: PhasesConfig = field(default_factory=PhasesConfig)
    evaluate: bool = False  # also run the four-scenario evaluation (`evaluation:`) and add it to the report
    evaluation: EvalSettings = field(default_factory=EvalSettings)


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is list:
        return f"a list of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(tp, str(tp))


def _build(cls: type, data: Any, where: str) -> Any:
    """Build dataclass ``cls`` from parsed YAML ``data``, checking keys and types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'the config'} must be a mapping of keys to values, got {type(data).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(
            f"unknown key {unknown[0]!r} in {where or 'the config'}; allowed keys: {', '.join(fields)}"
        )
    missing = [name for name, f in fields.items()
               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and name not in data]
    if missing:
        raise ConfigError(f"{where or 'the config'} is missing the required key {missing[0]!r}")
    values = {name: _convert(hints[name], value, f"{where}.{name}" if where else name) for name, value in data.items()}
    return cls(**values)


def _convert(tp: Any, value: Any, where: str) -> Any:
    if tp is Any:  # a free-form section, checked by the code that reads it
        return value
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be {_type_name(tp)}, got {value!r}")
        (item,) = get_args(tp)
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return {str(k): _convert(get_args(tp)[1], v, f"{where}.{k}") for k, v in value.items()}
    if origin is Union:
        raise TypeError("unions are not used in the config schema")
    if tp is float and isinstance(value, str):  # YAML 1.1 reads 1e-5 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    ok = (
        (tp is bool and isinstance(value, bool))
        or (tp is int and isinstance(value, int) and not isinstance(value, bool))
        or (tp is float and isinstance(value, (int, float)) and not isinstance(value, bool))
        or (tp is str and isinstance(value, str))
    )
    if not ok:
        raise ConfigError(f"{where} must be {_type_name(tp)}, got {value!r}")
    return float(value) if tp is float else value


def _check_choice(value: str, choices: tuple[str, ...], where: str) -> None:
    if value not in choices:
        raise ConfigError(f"{where} must be one of {', '.join(choices)}; got {value!r}")


def validate(config: ReportConfig) -> ReportConfig:
    """Semantic checks beyond types: languages lid.176 knows, probe fields, ranges."""
    from lensmap.languages.lid import validate_languages

    if not config.languages:
        raise ConfigError("languages must list at least one language code, e.g. [en, fr, de, zh]")
    try:
        validate_languages(config.languages)
    except LanguageError as error:
        raise ConfigError(f"languages: {error}") from None
    if len(set(config.languages)) != len(config.languages):
        raise ConfigError(f"languages has duplicates: {config.languages}")
    if not config.probes:
        raise ConfigError("probes must list at least one probe, e.g. - {kind: translation, source: fr, target: zh}")
    _check_choice(config.dtype, ("auto", "float32", "bfloat16", "float16"), "dtype")
    _check_choice(config.lens, ("logit", "tuned"), "lens")
    if config.lens_path and config.lens != "tuned":
        raise ConfigError(f"lens_path is set ({config.lens_path!r}) but lens is {config.lens!r}; set lens: tuned")
    validate_tuned_lens(config.tuned_lens, config.languages)
    _check_choice(config.positions, ("last", "all"), "positions")
    _validate_phases(config.phases, config.languages)
    if config.evaluate:
        from lensmap.evaluation.protocol import validate_settings

        validate_settings(config.evaluation)
    _validate_backend(config)
    if config.batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1; got {config.batch_size}")
    if not 0.0 <= config.vocab.threshold <= 1.0:
        raise ConfigError(f"vocab.threshold must be between 0 and 1; got {config.vocab.threshold}")
    for lang, path in config.vocab.lexicon.items():
        if lang not in config.languages:
            raise ConfigError(f"vocab.lexicon.{lang}: {lang!r} is not in languages {config.languages}")
        if not Path(path).is_file():
            raise ConfigError(f"vocab.lexicon.{lang}: word-list file {path!r} does not exist")
    if not config.output.strip():
        raise ConfigError("output must name a directory, e.g. reports/demo")
    for i, probe in enumerate(config.probes):
        _validate_probe(probe, config.languages, f"probes[{i}]")
    return config


def _validate_phases(section: PhasesConfig, languages: list[str]) -> None:
    from lensmap.languages.lid import validate_languages

    if not section.enabled:
        return
    _check_choice(section.source, ("cldr", "bible", "files", "table"), "phases.source")
    _check_choice(section.strategy, ("linguamap", "cogsym", "custom"), "phases.strategy")
    langs = section.languages or languages
    if len(langs) < 2:
        raise ConfigError("phases: similarity needs at least two languages (phases.languages or languages); "
                          "or set phases: {enabled: false}")
    try:
        validate_languages(langs)
    except LanguageError as error:
        raise ConfigError(f"phases.languages: {error}") from None
    if section.source == "cldr":
        _check_choice(section.domain, DOMAINS["translation"], "phases.domain")
    if section.source == "files":
        if not section.files:
            raise ConfigError("phases.source: files needs phases.files: {en: en.txt, fr: fr.txt, ...}")
        for lang, path in section.files.items():
            if not Path(path).is_file():
                raise ConfigError(f"phases.files.{lang}: file {path!r} does not exist")
    if section.source == "table" and not Path(section.table).is_file():
        raise ConfigError(f"phases.table: file {section.table!r} does not exist (TSV or JSONL of aligned items)")
    if section.strategy == "custom" and not section.layers:
        raise ConfigError("phases.strategy: custom needs phases.layers: [..] (decoder blocks)")
    if not 0 < section.budget <= 1:
        raise ConfigError(f"phases.budget must be a fraction in (0, 1]; got {section.budget}")
    if section.n < 0 or section.n_boot < 10 or section.phase_boot < 10:
        raise ConfigError("phases: n must be >= 0, n_boot and phase_boot at least 10")


DEVICE_MAPS = ("", "auto", "balanced", "balanced_low_0", "sequential")


def _validate_backend(config: ReportConfig) -> None:
    from lensmap.backends import BACKENDS, available_backends

    _check_choice(config.backend, tuple(BACKENDS), "backend")
    if not available_backends()[config.backend]:
        extra = BACKENDS[config.backend][3]
        raise ConfigError(f'backend: {config.backend} needs an optional package: pip install "lensmap[{extra}]"')
    if config.device_map not in DEVICE_MAPS:
        raise ConfigError(f"device_map must be one of {', '.join(repr(d) for d in DEVICE_MAPS)} "
                          f"(\"\" keeps the whole model on `device`); got {config.device_map!r}")


TEXT_SOURCES = ("bible", "flores", "generated")


def validate_tuned_lens(section: TunedLensConfig, languages: list[str], where: str = "tuned_lens") -> None:
    """Check the ``tuned_lens:`` section: languages, text sources and files, positive budgets."""
    from lensmap.languages.lid import validate_languages

    langs = section.languages or languages
    try:
        validate_languages(langs)
    except LanguageError as error:
        raise ConfigError(f"{where}.languages: {error}") from None
    for i, source in enumerate(section.sources):
        _check_choice(source, TEXT_SOURCES, f"{where}.sources[{i}]")
    if not section.sources and not section.files:
        raise ConfigError(f"{where}: give text: sources: [bible] and/or files: {{en: my_text.txt}}")
    for lang, path in section.files.items():
        if lang not in langs:
            raise ConfigError(f"{where}.files.{lang}: {lang!r} is not one of the lens languages {langs}")
        if not Path(path).is_file():
            raise ConfigError(f"{where}.files.{lang}: text file {path!r} does not exist")
    for name in ("tokens_per_language", "eval_tokens_per_language", "batch_size", "rows_per_step"):
        if getattr(section, name) < 1:
            raise ConfigError(f"{where}.{name} must be at least 1; got {getattr(section, name)}")
    if section.seq_len < 8:
        raise ConfigError(f"{where}.seq_len must be at least 8; got {section.seq_len}")
    for name in ("positions_per_sequence", "warmup_steps", "seed"):
        if getattr(section, name) < 0:
            raise ConfigError(f"{where}.{name} must not be negative; got {getattr(section, name)}")
    if not section.lr > 0 or section.weight_decay < 0 or section.max_minutes < 0:
        raise ConfigError(f"{where}: lr must be positive, weight_decay and max_minutes not negative")


def _validate_probe(probe: ProbeConfig, languages: list[str], where: str) -> None:
    _check_choice(probe.kind, PROBE_KINDS, f"{where}.kind")
    if probe.kind == "file":
        if not probe.path:
            raise ConfigError(f"{where}: a file probe needs path: (a JSONL or CSV file with a 'prompt' column)")
        if not Path(probe.path).is_file():
            raise ConfigError(f"{where}.path: prompts file {probe.path!r} does not exist")
        return
    needed = ("source", "target") if probe.kind == "translation" else ("target",)
    for key in needed:
        code = getattr(probe, key)
        if not code:
            raise ConfigError(f"{where}: a {probe.kind} probe needs {key}: (a language code)")
        if code not in languages:
            raise ConfigError(f"{where}.{key}: {code!r} is not in languages {languages}; add it there")
    if probe.kind == "translation" and probe.source == probe.target:
        raise ConfigError(f"{where}: source and target are both {probe.source!r}; pick two languages")
    if probe.domain:
        _check_choice(probe.domain, DOMAINS[probe.kind], f"{where}.domain")
    if probe.n < 1 or probe.shots < 0:
        raise ConfigError(f"{where}: n must be at least 1 and shots at least 0")


def parse_config(data: Any) -> ReportConfig:
    """Build and validate a :class:`ReportConfig` from parsed YAML (a dict)."""
    return validate(_build(ReportConfig, data, ""))


def read_yaml(path: str | os.PathLike, empty_hint: str = "see examples/demo.yaml for a minimal config") -> Any:
    """Parsed YAML of a config file; a missing, unreadable, invalid or empty file is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path} is not valid YAML{at}: {getattr(error, 'problem', error)}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None
    if data is None:
        raise ConfigError(f"{path} is empty; {empty_hint}")
    return data


def load_config(path: str | os.PathLike) -> ReportConfig:
    """Read, parse and validate a YAML config file."""
    return parse_config(read_yaml(path))
