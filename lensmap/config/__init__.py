"""Every command's YAML config: one file per command, built on the shared sections.

* :mod:`~lensmap.config.sections` — the sections several commands share (model, probes,
  vocabulary, tuned lens, phases);
* :mod:`~lensmap.config.report` (``lensmap report``), :mod:`~lensmap.config.lens`
  (``lensmap lens``), :mod:`~lensmap.config.evaluation` (``lensmap eval``),
  :mod:`~lensmap.config.sft` (``lensmap sft``).

The engine that turns YAML into these dataclasses is :mod:`lensmap.schema`; a library
function's own settings (``EvalSettings``, ``SFTSettings``, ``TrainSettings``) live beside it.
"""

from lensmap.config.report import ReportConfig, load_config, parse_config
from lensmap.config.sections import ModelSection, PhasesConfig, ProbeConfig, TunedLensConfig, VocabConfig

__all__ = ["ModelSection", "PhasesConfig", "ProbeConfig", "ReportConfig", "TunedLensConfig", "VocabConfig",
           "load_config", "parse_config"]
