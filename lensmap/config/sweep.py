"""The config of ``lensmap sweep`` and the ``sweep:`` section a report config may hold.

Config::

    model: qwen2.5-0.5b
    languages: [fr, de, zh, ja, ru]
    output: reports/sweep-qwen
    sweep:
      interventions: [skip]          # skip | zero-attention | zero-mlp | mean-attention | mean-mlp | revert
      directions: [input, output]    # input | output | single | window
      n: 40                          # translation items per language and metric

Paths are relative to the directory you run ``lensmap`` from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from lensmap.config.sections import ModelSection, validate_model_section, validate_output
from lensmap.errors import ConfigError
from lensmap.languages.lid import check_language_field
from lensmap.metrics.sweeps import DIRECTIONS
from lensmap.schema import build, check_choice, path_field, read_yaml

INTERVENTIONS = ("skip", "zero-attention", "zero-mlp", "mean-attention", "mean-mlp", "revert")


@dataclass
class PatchingSettings:
    """Cross-lingual activation patching: ``pairs`` of output languages ``X-Y`` (source-target)."""

    enabled: bool = True
    pairs: list[str] = field(default_factory=list)  # [] = each language with the next one (fr-de, de-zh, ...)
    n: int = 30  # pairs of prompts per language pair (before keeping those the model translates)
    input_language: str = "en"  # the language both prompts translate from


@dataclass
class SweepSettings:
    """What a sweep measures (the ``sweep:`` section)."""

    enabled: bool = True
    interventions: list[str] = field(default_factory=lambda: ["skip"])
    directions: list[str] = field(default_factory=lambda: ["input", "output"])
    ks: list[int] = field(default_factory=list)  # [] = every k = 0..L
    output_ks: list[int] = field(default_factory=list)  # [] = the same as ks (output-side skips are nearly free)
    window: int = 3  # blocks per sliding window (direction window)
    n: int = 40  # items per language for the translation metrics
    text_n: int = 20  # passages per language for the next-token loss
    text_tokens: int = 48
    mmlu: bool = True  # multiple-choice accuracy on the shipped MMLU samples (20 per language)
    mmlu_n: int = 20  # how many of them
    generation_n: int = 8  # prompts per language for the share of greedy generations in the language; 0 = off
    generation_tokens: int = 12
    generation_stride: int = 2  # generate only at k (or block) divisible by this, to save time
    revert_delta: str = path_field("")  # a `lensmap sft` weights directory: the model is loaded tuned, revert restores base
    budget: float = 0.1  # parameter budget of the cogsym recommendation (fraction of all parameters)
    batch_size: int = 8
    n_boot: int = 1000
    seed: int = 0
    patching: PatchingSettings = field(default_factory=PatchingSettings)


@dataclass(kw_only=True)
class SweepConfig(ModelSection):
    """The config of ``lensmap sweep``."""

    languages: list[str]
    output: str = path_field()
    title: str = ""
    sweep: SweepSettings = field(default_factory=SweepSettings)


def validate_sweep(settings: SweepSettings, languages: list[str], where: str = "sweep") -> SweepSettings:
    """Semantic checks of a ``sweep:`` section (names the field and how to fix it)."""
    if not settings.interventions:
        raise ConfigError(f"{where}.interventions must list at least one of {', '.join(INTERVENTIONS)}")
    for i, name in enumerate(settings.interventions):
        check_choice(name, INTERVENTIONS, f"{where}.interventions[{i}]")
    if "revert" in settings.interventions and not settings.revert_delta:
        raise ConfigError(f"{where}: revert needs {where}.revert_delta: a weights directory written by `lensmap sft`")
    if settings.revert_delta and not os.path.isdir(settings.revert_delta):
        raise ConfigError(f"{where}.revert_delta: {settings.revert_delta!r} is not a directory")
    if not settings.directions:
        raise ConfigError(f"{where}.directions must list at least one of {', '.join(DIRECTIONS)}")
    for i, name in enumerate(settings.directions):
        check_choice(name, DIRECTIONS, f"{where}.directions[{i}]")
    for name in ("n", "mmlu_n", "text_n", "text_tokens", "window", "batch_size", "n_boot", "generation_tokens", "generation_stride"):
        if getattr(settings, name) < 1:
            raise ConfigError(f"{where}.{name} must be at least 1; got {getattr(settings, name)}")
    if settings.generation_n < 0:
        raise ConfigError(f"{where}.generation_n must be 0 (off) or more; got {settings.generation_n}")
    if not 0 < settings.budget <= 1:
        raise ConfigError(f"{where}.budget must be a fraction of the parameters in (0, 1]; got {settings.budget}")
    if any(k < 0 for k in settings.ks + settings.output_ks):
        raise ConfigError(f"{where}.ks and output_ks must be block counts >= 0; got {settings.ks}, {settings.output_ks}")
    for i, pair in enumerate(settings.patching.pairs):
        parts = pair.split("-")
        if len(parts) != 2 or parts[0] == parts[1]:
            raise ConfigError(f"{where}.patching.pairs[{i}] must be two different languages like fr-zh; got {pair!r}")
        check_language_field(parts, f"{where}.patching.pairs[{i}]")
    if settings.patching.n < 1:
        raise ConfigError(f"{where}.patching.n must be at least 1; got {settings.patching.n}")
    return settings


def patch_language_pairs(settings: SweepSettings, languages: list[str]) -> list[tuple[str, str]]:
    """The (X, Y) output-language pairs to patch: the configured ones, else each language with the next."""
    if settings.patching.pairs:
        return [tuple(p.split("-")) for p in settings.patching.pairs]  # type: ignore[misc]
    others = [lang for lang in languages if lang != settings.patching.input_language]
    return [(a, b) for a, b in zip(others, others[1:])]


def parse_sweep_config(data) -> SweepConfig:
    config = build(SweepConfig, data, "")
    validate_model_section(config)
    if not config.languages:
        raise ConfigError("languages must list at least one language code, e.g. [fr, de, zh, ja, ru]")
    check_language_field(config.languages, "languages")
    validate_output(config.output, "reports/sweep")
    validate_sweep(config.sweep, config.languages)
    return config


def load_sweep_config(path: str | os.PathLike) -> SweepConfig:
    """Read and validate a sweep config."""
    return parse_sweep_config(read_yaml(path, "it needs at least model:, languages: and output:"))
