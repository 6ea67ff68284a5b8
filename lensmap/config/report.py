"""The YAML config of ``lensmap report``: schema, defaults and validation.

Every check names the field that is wrong (``probes[1].target``) and how to fix it. Paths
in a config are relative to the directory you run ``lensmap`` from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from lensmap.analysis.recommend import STRATEGIES
from lensmap.capture import backends
from lensmap.config.sections import (
    ModelSection,
    PhasesConfig,
    ProbeConfig,
    TunedLensConfig,
    VocabConfig,
    validate_model_section,
    validate_output,
    validate_phases,
    validate_probe,
    validate_tuned_lens,
    validate_vocab,
)
from lensmap.config.sweep import SweepSettings, validate_sweep
from lensmap.errors import ConfigError
from lensmap.evaluation.protocol import EvalSettings, validate_settings
from lensmap.languages.lid import check_language_field
from lensmap.readout.neurons import NeuronSettings, validate_neuron_settings
from lensmap.schema import build, check_choice, path_field, read_yaml


@dataclass(kw_only=True)
class ReportConfig(ModelSection):
    """Everything ``lensmap report`` needs. Only model, languages, probes and output are required."""

    languages: list[str]
    probes: list[ProbeConfig]
    output: str = path_field()
    lens: str = "logit"
    positions: str = "last"
    batch_size: int = 8
    too_long: str = "error"  # a prompt longer than the model's context: error | truncate (keep its last tokens)
    vocab: VocabConfig = field(default_factory=VocabConfig)
    title: str = ""
    backend: str = "native"  # native | transformer-lens | nnsight: how the residual stream is captured
    lens_path: str = path_field("")  # lens: tuned — a saved lens directory ("" = lensmap's cache, trained there if missing)
    tuned_lens: TunedLensConfig = field(default_factory=TunedLensConfig)
    phases: PhasesConfig = field(default_factory=PhasesConfig)
    evaluate: bool = False  # also run the four-scenario evaluation (`evaluation:`) and add it to the report
    evaluation: EvalSettings = field(default_factory=EvalSettings)
    neurons: NeuronSettings | None = None  # language-specific neurons (docs/neurons.md), a section of the report
    sweep: SweepSettings = field(default_factory=lambda: SweepSettings(enabled=False))  # a sweep: section turns it on


def validate(config: ReportConfig) -> ReportConfig:
    """Semantic checks beyond types: languages lid.176 knows, probe fields, ranges."""
    if not config.languages:
        raise ConfigError("languages must list at least one language code, e.g. [en, fr, de, zh]")
    check_language_field(config.languages, "languages")
    if len(set(config.languages)) != len(config.languages):
        raise ConfigError(f"languages has duplicates: {config.languages}")
    if not config.probes:
        raise ConfigError("probes must list at least one probe, e.g. - {kind: translation, source: fr, target: zh}")
    validate_model_section(config)
    check_choice(config.lens, ("logit", "tuned"), "lens")
    if config.lens_path and config.lens != "tuned":
        raise ConfigError(f"lens_path is set ({config.lens_path!r}) but lens is {config.lens!r}; set lens: tuned")
    validate_tuned_lens(config.tuned_lens, config.languages)
    check_choice(config.positions, ("last", "all"), "positions")
    check_choice(config.too_long, ("error", "truncate"), "too_long")
    validate_phases(config.phases, config.languages, tuple(STRATEGIES))
    if config.evaluate:
        validate_settings(config.evaluation)
    if config.sweep.enabled:
        validate_sweep(config.sweep, config.languages)
    validate_backend(config.backend)
    if config.batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1; got {config.batch_size}")
    validate_vocab(config.vocab, config.languages)
    validate_output(config.output, "reports/demo")
    for i, probe in enumerate(config.probes):
        validate_probe(probe, config.languages, f"probes[{i}]")
    if config.neurons is not None:
        validate_neuron_settings(config.neurons, config.neurons.languages or config.languages)
    elif config.phases.enabled and config.phases.strategy == "neurons":
        raise ConfigError("phases.strategy: neurons needs the neuron analysis; add a neurons: section (docs/neurons.md)")
    return config


def validate_backend(name: str) -> None:
    """A known capture backend whose optional package is installed."""
    check_choice(name, tuple(backends.BACKENDS), "backend")
    if not backends.available_backends()[name]:
        extra = backends.BACKENDS[name].extra
        raise ConfigError(f'backend: {name} needs an optional package: pip install "lensmap[{extra}]"')


def parse_config(data: Any) -> ReportConfig:
    """Build and validate a :class:`ReportConfig` from parsed YAML (a dict)."""
    return validate(build(ReportConfig, data, ""))


def load_config(path: str | os.PathLike) -> ReportConfig:
    """Read, parse and validate a YAML config file."""
    return parse_config(read_yaml(path))
