"""Cross-lingual similarity, phase boundaries and recommendations on the three zoo models.

For every installed zoo model: CLDR territory names in en, fr, de, zh (80 aligned items) for
the similarity curves; the backbone's CLDR probes (fr→zh, zh→de, de→fr translations and French
month clozes) for the target-language mass; then the phase detector and both strategies. Saves
``analyses/results/<model>/phases/`` (similarity.csv, phases.json, recommendation_*.json,
curves.csv) and PNG figures under ``figures/`` (PNG needs kaleido and a Chromium; JSON otherwise).

    python analyses/phases_zoo.py              # every installed zoo model
    python analyses/phases_zoo.py gemma-3-270m
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lensmap as lm
from figure_files import save_figure  # analyses/figure_files.py (the script's folder is on sys.path)
from lensmap.data.parallel import cldr_parallel
from lensmap.io import atomic_write_csv, atomic_write_text
from lensmap.readout.states import run_similarity
from lensmap.models.zoo import ZOO, is_installed
from lensmap.figures.phases import add_phase_bands, phase_curves, similarity_curves
from lensmap.analysis.phases import alignment_items, detect_phases, target_mass_rows
from lensmap.analysis.recommend import recommend, write_recommendation

ROOT = Path(__file__).resolve().parents[1]
LANGUAGES = ["en", "fr", "de", "zh"]


def run(model: str) -> dict:
    handle = lm.load_model(model, dtype="float32")
    vmap = lm.build_vocabulary_map(handle.tokenizer, LANGUAGES, vocab_size=handle.vocab_size)
    prompts = (lm.translation_probes("fr", "zh", n=30) + lm.translation_probes("zh", "de", n=30)
               + lm.translation_probes("de", "fr", n=30) + lm.cloze_probes("fr", n=24))
    result = lm.run_probes(handle, prompts, vmap.weights(), vmap.columns(), vocab_share=vmap.vocab_share().tolist())
    similarity, states = run_similarity(handle, cldr_parallel(LANGUAGES, n=80))
    phases = detect_phases(alignment_items(states), target_mass_rows(result))
    out = ROOT / "analyses" / "results" / model / "phases"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_csv(out / "similarity.csv", similarity)
    atomic_write_csv(out / "curves.csv", phases.curves)
    atomic_write_csv(out / "language_mass.csv", result.mass)
    atomic_write_text(out / "phases.json", json.dumps(phases.to_dict(), indent=2))
    recs = {}
    for strategy in ("linguamap", "cogsym"):
        rec = recommend(handle, strategy, phases=phases)
        write_recommendation(rec, out / f"recommendation_{strategy}.json")
        recs[strategy] = rec
    for metric in ("cosine_gap", "retrieval_accuracy"):
        print(save_figure(similarity_curves(similarity, metric, phases), f"phases_{model}_{metric}"))
    print(save_figure(phase_curves(phases), f"phases_{model}_boundaries"))
    heat = add_phase_bands(lm.plots.mass_heatmap(result.mass, probe="translation fr->zh territories", relative=True),
                           phases)
    print(save_figure(heat, f"phases_{model}_mass_fr-zh"))
    return {"model": model, "n_layers": handle.n_layers, "phases": phases.to_dict(),
            "linguamap": recs["linguamap"].layers, "linguamap_fraction": recs["linguamap"].trainable_fraction,
            "cogsym": recs["cogsym"].layers, "cogsym_fraction": recs["cogsym"].trainable_fraction}


def main(argv: list[str]) -> None:
    models = argv or [name for name in ZOO if is_installed(name)]
    summary = [run(model) for model in models]
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
