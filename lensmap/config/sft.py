"""The YAML config of ``lensmap sft``: schema, defaults and validation.

A minimal config::

    model: qwen2.5-0.5b
    output: runs/sft-qwen
    select: {recommendation: reports/demo/recommendation.json}   # or layers: [21, 22, 23]

Everything else has a default: the shipped training set in all its languages, the variants
``selective``, ``full`` and ``random``, LinguaMap's optimiser settings. See docs/sft.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lensmap.config.sections import ModelSection, ProbeConfig, validate_model_section, validate_output, validate_probe
from lensmap.errors import ConfigError, TrainingError
from lensmap.evaluation.protocol import EvalSettings, validate_settings
from lensmap.languages.lid import check_language_field
from lensmap.schema import build, check_choice, path_field, read_yaml
from lensmap.training.trainer import SFTSettings, check_settings

VARIANTS = ("selective", "full", "random", "lora")
STRATEGIES = ("linguamap", "cogsym", "cogsym-fixed")


@dataclass
class SelectConfig:
    """Which layers the ``selective`` (and ``lora``) variant trains: exactly one of the three."""

    recommendation: str = path_field("")  # a recommendation.json from `lensmap report`
    layers: list[int] = field(default_factory=list)  # decoder-block indices
    strategy: str = ""  # cogsym (computed from the model alone) or linguamap (needs `report:`)
    report: str = path_field("")  # with strategy: linguamap, the report config whose phases place the layers


@dataclass(kw_only=True)
class SFTConfig(ModelSection):
    """Everything ``lensmap sft`` needs. Only model, output and select are required."""

    output: str = path_field()
    select: SelectConfig
    languages: list[str] = field(default_factory=list)  # training languages; empty = every language in the files
    train_files: list[str] = path_field(default_factory=list)  # JSONL items; empty = the shipped training set
    train_mmlu: dict[str, str] = path_field(default_factory=dict)  # language -> MMLU-format file, converted to items
    check_language: bool = True  # refuse items the language identifier places in another language
    variants: list[str] = field(default_factory=lambda: ["selective", "full", "random"])
    training: SFTSettings = field(default_factory=SFTSettings)
    random_seed: int = 0  # which random layers the `random` baseline trains
    evaluate: bool = True  # the four-scenario evaluation on base and every variant
    evaluation: EvalSettings = field(default_factory=EvalSettings)  # see docs/evaluation.md
    probes: list[ProbeConfig] = field(default_factory=list)  # lens readout before/after (language mass)
    lens_languages: list[str] = field(default_factory=lambda: ["en", "fr", "de", "zh"])
    dtype: str = "float32"  # the weights being trained; matmuls still run in bf16 (training.mixed_precision)
    title: str = ""


def validate_sft(config: SFTConfig) -> SFTConfig:
    """Semantic checks: one layer selection, known variants, files that exist, sane settings."""
    chosen = [name for name in ("recommendation", "layers", "strategy") if getattr(config.select, name)]
    if len(chosen) != 1:
        raise ConfigError("select needs exactly one of recommendation: FILE, layers: [..] or strategy: cogsym|linguamap"
                          + (f"; got {', '.join(chosen)}" if chosen else ""))
    if config.select.recommendation and not Path(config.select.recommendation).is_file():
        raise ConfigError(f"select.recommendation: file {config.select.recommendation!r} does not exist; "
                          "`lensmap report` writes recommendation.json")
    if config.select.strategy:
        check_choice(config.select.strategy, STRATEGIES, "select.strategy")
        if config.select.strategy == "linguamap" and not config.select.report:
            raise ConfigError("select.strategy: linguamap needs select.report: a report config whose phases place "
                              "the layers (or give the recommendation.json that report wrote)")
    if config.select.report and not Path(config.select.report).is_file():
        raise ConfigError(f"select.report: config file {config.select.report!r} does not exist")
    if not config.variants:
        raise ConfigError(f"variants must list at least one of {', '.join(VARIANTS)}")
    for i, variant in enumerate(config.variants):
        check_choice(variant, VARIANTS, f"variants[{i}]")
    if len(set(config.variants)) != len(config.variants):
        raise ConfigError(f"variants has duplicates: {config.variants}")
    for path in config.train_files:
        if not Path(path).is_file():
            raise ConfigError(f"train_files: {path!r} does not exist (JSONL with language, instruction, question, "
                              "reasoning, answer)")
    for lang, path in config.train_mmlu.items():
        if not Path(path).is_file():
            raise ConfigError(f"train_mmlu.{lang}: {path!r} does not exist (an MMLU-format CSV, JSONL or parquet file)")
    for name in ("languages", "lens_languages"):
        if getattr(config, name):
            check_language_field(getattr(config, name), name)
    validate_model_section(config)
    try:
        check_settings(config.training)
    except TrainingError as error:
        raise ConfigError(f"training: {error}") from None
    for i, probe in enumerate(config.probes):
        validate_probe(probe, config.lens_languages, f"probes[{i}]")
    if config.evaluate:
        validate_settings(config.evaluation)
    validate_output(config.output, "runs/sft")
    return config


def parse_sft_config(data: Any) -> SFTConfig:
    """Build and validate an :class:`SFTConfig` from parsed YAML (a dict)."""
    return validate_sft(build(SFTConfig, data, ""))


def load_sft_config(path: str | os.PathLike) -> SFTConfig:
    """Read, parse and validate an ``lensmap sft`` YAML file."""
    return parse_sft_config(read_yaml(path, 'it needs at least model:, output: and select:'))
