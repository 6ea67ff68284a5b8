"""Config sections that several commands share: the model, probes, vocabulary, tuned lens, phases.

Each section is a dataclass (its fields are the YAML keys, built by :func:`lensmap.schema.build`)
and a ``validate_*`` function for the checks types cannot express. A command's config
(:mod:`lensmap.config.report`, ``lens``, ``evaluation``, ``sft``) inherits :class:`ModelSection`
and holds the other sections as fields, so a model-loading option is written once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lensmap.errors import ConfigError, DeviceError
from lensmap.languages.lid import check_language_field
from lensmap.lenses.training import TrainSettings
from lensmap.models.devices import placement, validate_device
from lensmap.schema import check_choice, path_field

DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICE_MAPS = ("", "auto", "balanced", "balanced_low_0", "sequential")
PROBE_KINDS = ("translation", "cloze", "file")
DOMAINS = {"translation": ("territories", "languages", "months", "weekdays"), "cloze": ("months", "weekdays")}
TEXT_SOURCES = ("bible", "flores", "generated")
PARALLEL_SOURCES = ("cldr", "bible", "files", "table")


@dataclass(kw_only=True)
class ModelSection:
    """Which model to load and how (the keys every command's config starts with)."""

    model: str = path_field()  # a zoo name, a .gguf file, a model directory or a hub id
    dtype: str = "auto"  # auto = bfloat16 where the CPU/GPU runs it natively, else float32
    device: str = "cpu"
    device_map: str = ""  # "" (whole model on `device`) or auto | balanced | balanced_low_0 | sequential
    max_memory: dict[str, str] = field(default_factory=dict)  # with device_map: {cuda:0: 20GiB, cpu: 60GiB}
    offload_folder: str = path_field("")  # with device_map: where weights that fit on no device wait on disk
    trust_remote_code: bool = False


def model_keys(config: ModelSection) -> dict[str, Any]:
    """The model keys of any command's config, to build another command's config from it."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(ModelSection)}


def validate_model_section(config: ModelSection) -> None:
    """The model keys: a model named, a known dtype and device map."""
    if not config.model.strip():
        raise ConfigError("model must name a zoo model, a .gguf file, a model directory or a hub id")
    check_choice(config.dtype, DTYPES, "dtype")
    if config.device_map not in DEVICE_MAPS:
        raise ConfigError(f"device_map must be one of {', '.join(repr(d) for d in DEVICE_MAPS)} "
                          f"(\"\" keeps the whole model on `device`); got {config.device_map!r}")
    try:
        validate_device(config.device)
        placement(config.device_map or None, config.max_memory, config.offload_folder or None)
    except DeviceError as error:
        raise ConfigError(f"device: {error}") from None


def validate_output(output: str, example: str) -> None:
    """``output`` must name a directory."""
    if not output.strip():
        raise ConfigError(f"output must name a directory, e.g. {example}")


@dataclass
class ProbeConfig:
    """One prompt set: CLDR ``translation`` or ``cloze`` probes, or a user ``file`` (JSONL/CSV)."""

    kind: str
    source: str = ""
    target: str = ""
    domain: str = ""
    n: int | None = None  # default: 40, or every item the probe has if fewer
    shots: int = 4
    seed: int = 0
    path: str = path_field("")


def validate_probe(probe: ProbeConfig, languages: list[str], where: str) -> None:
    """A probe's kind, languages (which must be configured), domain and sizes."""
    check_choice(probe.kind, PROBE_KINDS, f"{where}.kind")
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
        check_choice(probe.domain, DOMAINS[probe.kind], f"{where}.domain")
    if (probe.n is not None and probe.n < 1) or probe.shots < 0:
        raise ConfigError(f"{where}: n must be at least 1 and shots at least 0")


@dataclass
class VocabConfig:
    """How tokens are labelled with languages."""

    threshold: float = 0.5
    lexicon: dict[str, str] = path_field(default_factory=dict)  # language -> word-list file (one word per line)


def validate_vocab(section: VocabConfig, languages: list[str]) -> None:
    if not 0.0 <= section.threshold <= 1.0:
        raise ConfigError(f"vocab.threshold must be between 0 and 1; got {section.threshold}")
    for lang, path in section.lexicon.items():
        if lang not in languages:
            raise ConfigError(f"vocab.lexicon.{lang}: {lang!r} is not in languages {languages}")
        if not Path(path).is_file():
            raise ConfigError(f"vocab.lexicon.{lang}: word-list file {path!r} does not exist")


@dataclass(kw_only=True)
class TunedLensConfig(TrainSettings):
    """How a tuned lens is trained and evaluated (``tuned_lens:``; see docs/tuned_lens.md).

    The training fields are :class:`~lensmap.lenses.training.TrainSettings`' (one definition);
    this section adds the text to train on and the evaluation.
    """

    languages: list[str] = field(default_factory=list)  # default: the config's languages
    sources: list[str] = field(default_factory=lambda: ["bible"])  # bible | flores | generated
    files: dict[str, str] = path_field(default_factory=dict)  # language -> your text file (one passage per line)
    eval_tokens_per_language: int = 512
    max_minutes: float = 0.0  # 0 = no time limit
    evaluate: bool = True

    def train_settings(self) -> TrainSettings:
        """The training fields alone, as the :class:`TrainSettings` that :func:`train_tuned_lens` takes."""
        from dataclasses import fields

        return TrainSettings(**{f.name: getattr(self, f.name) for f in fields(TrainSettings)})


def validate_tuned_lens(section: TunedLensConfig, languages: list[str], where: str = "tuned_lens") -> None:
    """Check the ``tuned_lens:`` section: languages, text sources and files, positive budgets."""
    langs = section.languages or languages
    check_language_field(langs, f"{where}.languages")
    for i, source in enumerate(section.sources):
        check_choice(source, TEXT_SOURCES, f"{where}.sources[{i}]")
    if not section.sources and not section.files:
        raise ConfigError(f"{where}: give text: sources: [bible] and/or files: {{en: my_text.txt}}")
    for lang, path in section.files.items():
        if lang not in langs:
            raise ConfigError(f"{where}.files.{lang}: {lang!r} is not one of the lens languages {langs}")
        if not Path(path).is_file():
            raise ConfigError(f"{where}.files.{lang}: text file {path!r} does not exist")
    if section.seq_len < 8:
        raise ConfigError(f"{where}.seq_len must be at least 8; got {section.seq_len}")
    if section.eval_tokens_per_language < 1:
        raise ConfigError(f"{where}.eval_tokens_per_language must be at least 1; got {section.eval_tokens_per_language}")
    if section.seed < 0 or section.max_minutes < 0:
        raise ConfigError(f"{where}: seed and max_minutes must not be negative")
    try:
        section.train_settings().check()
    except ConfigError:
        raise
    except Exception as error:  # TrainSettings.check names the field
        raise ConfigError(f"{where}.{error}") from None


@dataclass
class PhasesConfig:
    """Cross-lingual similarity, phase detection and the recommendation (``phases:``; docs/phases.md)."""

    enabled: bool = True
    source: str = "cldr"  # cldr | bible | files | table: the parallel items
    domain: str = "territories"  # cldr: territories | languages | months | weekdays
    n: int = 60  # parallel items (cldr, bible); 0 = all
    files: dict[str, str] = path_field(default_factory=dict)  # files: language -> FLORES-format file
    table: str = path_field("")  # table: a TSV (one column per language) or JSONL file
    languages: list[str] = field(default_factory=list)  # default: the config's languages
    n_boot: int = 1000  # bootstrap resamples of the similarity intervals
    phase_boot: int = 200  # bootstrap resamples of the boundaries
    seed: int = 0
    strategy: str = "linguamap"  # a recommendation strategy: linguamap | cogsym | custom | neurons
    budget: float = 0.05  # linguamap: largest fraction of parameters to train
    layers: list[int] = field(default_factory=list)  # custom: the blocks


def validate_phases(section: PhasesConfig, languages: list[str], strategies: tuple[str, ...]) -> None:
    """The ``phases:`` section (``strategies``: the recommendation strategies this command offers)."""
    if not section.enabled:
        return
    check_choice(section.source, PARALLEL_SOURCES, "phases.source")
    check_choice(section.strategy, strategies, "phases.strategy")
    langs = section.languages or languages
    if len(langs) < 2:
        raise ConfigError("phases: similarity needs at least two languages (phases.languages or languages); "
                          "or set phases: {enabled: false}")
    check_language_field(langs, "phases.languages")
    if section.source == "cldr":
        check_choice(section.domain, DOMAINS["translation"], "phases.domain")
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
