"""``lensmap eval CONFIG.yaml``: the four-scenario evaluation of one model, written to a directory.

A report config (``lensmap report``) with ``evaluate: true`` runs the same evaluation and
adds its sections to the report.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pandas as pd

from lensmap.config.evaluation import EvalConfig, load_eval_config
from lensmap.evaluation.protocol import evaluate_model
from lensmap.figures.evaluation import evaluation_sections
from lensmap.figures.html import write_report
from lensmap.io import atomic_write_csv, atomic_write_text
from lensmap.outputs import prepare_output, staged_directory
from lensmap.runs.common import Stopwatch, load_for


def write_evaluation(out: Path, items: pd.DataFrame, summary: pd.DataFrame) -> None:
    """``eval_items.csv`` and ``eval_summary.csv`` into ``out``."""
    atomic_write_csv(out / "eval_items.csv", items)
    atomic_write_csv(out / "eval_summary.csv", summary)


def run_evaluation(config: EvalConfig | str | os.PathLike, *, progress: bool = True,
                   overwrite: bool = False) -> Path:
    """Load the model, run the protocol and write ``eval_items.csv``, ``eval_summary.csv``,
    ``run.json`` and ``report.html`` into ``config.output`` (atomically)."""
    if not isinstance(config, EvalConfig):
        config = load_eval_config(config)
    output = prepare_output(config.output, "eval", overwrite=overwrite)
    clock = Stopwatch()
    handle = load_for(config)
    items, summary = evaluate_model(handle, config.evaluation, progress=progress)
    seconds = clock.total
    with staged_directory(output, command="eval", overwrite=overwrite) as out:
        write_evaluation(out, items, summary)
        atomic_write_text(out / "run.json", json.dumps({"config": dataclasses.asdict(config), "model": handle.info,
                                                         "seconds": round(seconds, 1)}, indent=2, default=str))
        write_report(out / "report.html", evaluation_sections(items, summary),
                     title=config.title or f"lensmap evaluation: {handle.name}",
                     summary={"model": handle.name, "items": str(len(items)), "time (s)": f"{seconds:.0f}"})
    return output
