"""Logit-lens language maps of the three zoo models on the same CLDR probes.

Runs lensmap's backbone (logit lens → per-language mass, entropy, answer probabilities) on
every installed zoo model and saves the tidy frames under ``analyses/results/<model>/`` and
PNG figures under ``figures/`` (PNG export needs ``pip install kaleido`` and a Chromium,
e.g. Debian's ``chromium``; without them the figures are saved as plotly JSON instead).

    python analyses/backbone_zoo.py            # all installed zoo models
    python analyses/backbone_zoo.py qwen2.5-0.5b
"""

from __future__ import annotations

import sys
from pathlib import Path

import lensmap as lm
from figure_files import save_figure  # analyses/figure_files.py (the script's folder is on sys.path)
from lensmap.io import atomic_write_csv
from lensmap.models.zoo import ZOO, is_installed
from lensmap.runs.report import write_outputs

ROOT = Path(__file__).resolve().parents[1]
LANGUAGES = ["en", "fr", "de", "zh"]


def probes() -> list[lm.Prompt]:
    return (
        lm.translation_probes("fr", "zh", n=40)
        + lm.translation_probes("zh", "de", n=40)
        + lm.translation_probes("de", "fr", n=40)
        + lm.cloze_probes("fr", n=24)
    )


def run(model: str) -> None:
    handle = lm.load_model(model, dtype="float32")
    vmap = lm.build_vocabulary_map(handle.tokenizer, LANGUAGES, vocab_size=handle.vocab_size)
    result = lm.run_probes(handle, probes(), vmap.weights(), vmap.columns(),
                           vocab_share=vmap.vocab_share().tolist())
    out = ROOT / "analyses" / "results" / model
    out.mkdir(parents=True, exist_ok=True)
    write_outputs(out, result, vmap.counts())
    for probe in result.mass["probe"].unique():
        tag = f"{model}_{probe.replace(' ', '_').replace('->', '-')}"
        print(save_figure(lm.plots.mass_heatmap(result.mass, probe=probe, relative=True), f"backbone_{tag}_relative"))
        if len(result.answers) and probe in set(result.answers["probe"]):
            print(save_figure(lm.plots.answer_curves(result.answers, probe=probe), f"backbone_{tag}_answers"))
    summary = result.answers[result.answers.measure == "word_start"].pivot_table(
        index=["probe", "layer"], columns="word", values="prob").round(4)
    atomic_write_csv(out / "word_start_summary.csv", summary.reset_index())


def main(argv: list[str]) -> None:
    models = argv or [name for name in ZOO if is_installed(name)]
    for model in models:
        print(f"== {model}", flush=True)
        run(model)


if __name__ == "__main__":
    main(sys.argv[1:])
