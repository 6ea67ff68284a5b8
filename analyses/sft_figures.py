"""PNG figures of a finished ``lensmap sft`` run (from its CSV files), for the write-up.

    python analyses/sft_figures.py analyses/results/qwen2.5-0.5b/sft_worked_lr1e-4 qwen2.5-0.5b-lr1e-4
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from figure_files import save_figure  # analyses/figure_files.py
from lensmap.figures.sft import language_heatmap, mass_difference, scenario_bars, training_curves


def main(run_dir: str, model: str) -> None:
    run = Path(run_dir)
    comparison = pd.read_csv(run / "sft_comparison.csv")
    curves = pd.read_csv(run / "training_curves.csv")
    print(save_figure(scenario_bars(comparison, "language_consistency"), f"sft_{model}_consistency"))
    print(save_figure(scenario_bars(comparison, "accuracy"), f"sft_{model}_accuracy"))
    print(save_figure(language_heatmap(comparison, "code_switched"), f"sft_{model}_consistency_by_language"))
    print(save_figure(training_curves(curves), f"sft_{model}_training_loss"))
    if (run / "language_mass.csv").is_file():
        mass = pd.read_csv(run / "language_mass.csv")
        for variant in json.loads((run / "variants.json").read_text()):
            for probe in mass["probe"].unique():
                name = f"sft_{model}_mass_diff_{variant['variant']}_{probe.replace(' ', '_').replace('->', '-')}"
                print(save_figure(mass_difference(mass, variant["variant"], probe), name))


if __name__ == "__main__":
    main(*sys.argv[1:3])
