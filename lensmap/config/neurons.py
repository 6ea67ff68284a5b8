"""The config of ``lensmap neurons``: a model, languages, an output directory and the ``neurons:`` section.

Config::

    model: qwen2.5-0.5b
    output: reports/neurons-qwen
    languages: [en, fr, es, de, ru, zh, ja]
    neurons: {tokens: 20000, fraction: 0.01, site: act}
    stats: ""          # a saved neuron_stats.npz: select again without recomputing the statistics

A report config (``lensmap report``) with a ``neurons:`` section works too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from lensmap.config.report import parse_config
from lensmap.config.sections import ModelSection, validate_model_section, validate_output
from lensmap.errors import ConfigError
from lensmap.languages.lid import check_language_field
from lensmap.readout.neurons import NeuronSettings, validate_neuron_settings
from lensmap.schema import build, path_field, read_yaml


@dataclass(kw_only=True)
class NeuronsConfig(ModelSection):
    """The config of ``lensmap neurons``."""

    output: str = path_field()
    languages: list[str] = field(default_factory=list)
    neurons: NeuronSettings = field(default_factory=NeuronSettings)
    stats: str = path_field("")
    title: str = ""


def validate_neurons_config(config: NeuronsConfig) -> NeuronsConfig:
    validate_model_section(config)
    validate_output(config.output, "reports/neurons")
    languages = config.neurons.languages or config.languages
    if not languages:
        raise ConfigError("languages must list the languages to compare, e.g. [en, fr, de, zh, ja, ru]")
    check_language_field(languages, "neurons.languages" if config.neurons.languages else "languages")
    validate_neuron_settings(config.neurons, languages)
    if config.stats and not os.path.isfile(config.stats):
        raise ConfigError(f"stats: {config.stats!r} does not exist (a neuron_stats.npz a previous run wrote)")
    return config


def load_neurons_config(path: str | os.PathLike) -> NeuronsConfig:
    """Read a neurons config; a report config with a ``neurons:`` section works too."""
    data = read_yaml(path, "it needs at least model:, output:, languages:")
    if isinstance(data, dict) and "probes" in data:  # a report config
        report = parse_config(data)
        if report.neurons is None:
            raise ConfigError(f"{path} is a report config without a neurons: section; add neurons: {{}}")
        config = NeuronsConfig(model=report.model, dtype=report.dtype, device=report.device,
                               device_map=report.device_map, trust_remote_code=report.trust_remote_code,
                               output=report.output, languages=report.languages, neurons=report.neurons,
                               title=report.title)
    else:
        config = build(NeuronsConfig, data, "")
    return validate_neurons_config(config)
