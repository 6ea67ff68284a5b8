"""The config of ``lensmap lens train|eval``: a model, its languages and the ``tuned_lens:`` section.

Either this short config or a report config (the same file ``lensmap report`` reads; its
``lens_path`` and ``tuned_lens:`` section are used)::

    model: qwen2.5-0.5b
    languages: [en, fr, de, zh]
    lens_path: lenses/qwen-tuned     # optional; default: lensmap's cache
    output: reports/lens-qwen        # optional; the evaluation is written here too
    tuned_lens: {tokens_per_language: 4096, sources: [bible]}
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from lensmap.config.report import parse_config
from lensmap.config.sections import (
    ModelSection,
    TunedLensConfig,
    model_keys,
    validate_model_section,
    validate_tuned_lens,
)
from lensmap.languages.lid import check_language_field
from lensmap.schema import build, check_choice, path_field, read_yaml


@dataclass(kw_only=True)
class LensConfig(ModelSection):
    """The config of ``lensmap lens train|eval`` when it is not a full report config."""

    languages: list[str]
    lens_path: str = path_field("")
    output: str = path_field("")  # where lens_eval.csv / lens_eval.html also go ("" = only beside the lens)
    lens: str = "tuned"
    tuned_lens: TunedLensConfig = field(default_factory=TunedLensConfig)
    title: str = ""


def parse_lens_config(data: Any) -> LensConfig:
    """A :class:`LensConfig` from parsed YAML; a report config (it has ``probes``) is accepted too."""
    if isinstance(data, dict) and "probes" in data:
        report = parse_config(data)
        return LensConfig(**model_keys(report), languages=report.languages, lens_path=report.lens_path, output=report.output,
                          tuned_lens=report.tuned_lens, title=report.title)
    config = build(LensConfig, data, "")
    check_language_field(config.languages, "languages")
    validate_model_section(config)
    check_choice(config.lens, ("tuned",), "lens")
    validate_tuned_lens(config.tuned_lens, config.languages)
    return config


def load_lens_config(path: str | os.PathLike) -> LensConfig:
    return parse_lens_config(read_yaml(path, "it needs at least model: and languages:"))
