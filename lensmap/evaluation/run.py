"""``lensmap eval CONFIG.yaml``: the four-scenario evaluation of one model, written to a directory.

Config::

    model: qwen2.5-0.5b
    output: reports/eval-qwen
    evaluation: {benchmarks: [mgsm], languages: [fr, zh], n_items: 10}

A report config (``lensmap report``) with ``evaluate: true`` runs the same evaluation and
adds its sections to the report.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lensmap.errors import ConfigError
from lensmap.evaluation.protocol import EvalSettings, evaluate_model, validate_settings
from lensmap.io import atomic_write_csv, atomic_write_text, staged_directory


@dataclass
class EvalConfig:
    """The config of ``lensmap eval``."""

    model: str
    output: str
    evaluation: EvalSettings = field(default_factory=EvalSettings)
    dtype: str = "auto"
    device: str = "cpu"
    trust_remote_code: bool = False
    title: str = ""


def load_eval_config(path: str | os.PathLike) -> EvalConfig:
    """Read an eval config; a report config with an ``evaluation:`` section works too."""
    from lensmap.config import _build, _check_choice
    from lensmap.config import read_yaml

    data = read_yaml(path, 'it needs at least model: and output:')
    if isinstance(data, dict) and "probes" in data:  # a report config
        from lensmap.config import parse_config

        report = parse_config(data)
        return EvalConfig(report.model, report.output, report.evaluation, report.dtype, report.device,
                          report.trust_remote_code, report.title)
    config = _build(EvalConfig, data, "")
    _check_choice(config.dtype, ("auto", "float32", "bfloat16", "float16"), "dtype")
    if not config.output.strip():
        raise ConfigError("output must name a directory, e.g. reports/eval")
    validate_settings(config.evaluation)
    return config


def write_evaluation(out: Path, items: pd.DataFrame, summary: pd.DataFrame) -> None:
    atomic_write_csv(out / "eval_items.csv", items)
    atomic_write_csv(out / "eval_summary.csv", summary)


def run_evaluation(config: EvalConfig | str | os.PathLike, *, progress: bool = True) -> Path:
    """Load the model, run the protocol and write ``eval_items.csv``, ``eval_summary.csv``,
    ``run.json`` and ``report.html`` into ``config.output`` (atomically)."""
    from lensmap.evaluation.plots import evaluation_sections
    from lensmap.models.loading import load_model
    from lensmap.report import write_report

    if not isinstance(config, EvalConfig):
        config = load_eval_config(config)
    start = time.perf_counter()
    handle = load_model(config.model, dtype=config.dtype, device=config.device,
                        trust_remote_code=config.trust_remote_code)
    items, summary = evaluate_model(handle, config.evaluation, progress=progress)
    seconds = time.perf_counter() - start
    with staged_directory(config.output) as out:
        write_evaluation(out, items, summary)
        atomic_write_text(out / "run.json", json.dumps({"config": dataclasses.asdict(config), "model": handle.info,
                                                         "seconds": round(seconds, 1)}, indent=2, default=str))
        write_report(out / "report.html", evaluation_sections(items, summary),
                     title=config.title or f"lensmap evaluation: {handle.name}",
                     summary={"model": handle.name, "items": str(len(items)), "time (s)": f"{seconds:.0f}"})
    return Path(config.output)
