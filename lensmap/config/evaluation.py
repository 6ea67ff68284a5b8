"""The config of ``lensmap eval``: a model, an output directory and the ``evaluation:`` section.

Config::

    model: qwen2.5-0.5b
    output: reports/eval-qwen
    evaluation: {benchmarks: [mgsm], languages: [fr, zh], n_items: 10}

A report config (``lensmap report``) works too: its ``evaluation:`` section is used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from lensmap.config.report import parse_config
from lensmap.config.sections import ModelSection, model_keys, validate_model_section, validate_output
from lensmap.evaluation.protocol import EvalSettings, validate_settings
from lensmap.schema import build, path_field, read_yaml


@dataclass(kw_only=True)
class EvalConfig(ModelSection):
    """The config of ``lensmap eval``."""

    output: str = path_field()
    evaluation: EvalSettings = field(default_factory=EvalSettings)
    title: str = ""


def load_eval_config(path: str | os.PathLike) -> EvalConfig:
    """Read an eval config; a report config with an ``evaluation:`` section works too."""
    data = read_yaml(path, "it needs at least model: and output:")
    if isinstance(data, dict) and "probes" in data:  # a report config
        report = parse_config(data)
        return EvalConfig(**model_keys(report), output=report.output, evaluation=report.evaluation, title=report.title)
    config = build(EvalConfig, data, "")
    validate_model_section(config)
    validate_output(config.output, "reports/eval")
    validate_settings(config.evaluation)
    return config
