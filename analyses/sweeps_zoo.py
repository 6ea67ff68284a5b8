"""Layer sweeps (skip, input and output side) and cross-lingual patching on the zoo models.

Per model and language (fr, de, zh, ja, ru): 12 English-answer translation items, 12
target-answer items, 8 Bible passages (32 tokens), 8 of the shipped MMLU samples and 4 greedy
generations. French (and everything on qwen) was run on a coarse grid (every 4th k for qwen, every 3rd
for gemma, both sides); gemma's other languages on a finer one (input side k = 0, 1, 2, 3|4, 6|8, 12, L; output
side every k, which costs no block). Patching: fr→zh and de→ja (12 pairs each before the
filter). The sizes are small because the two shared CPU cores ran four agents at once.
Resumable: each language and each pair is saved under ``analyses/results/<model>/sweeps/parts/``
and skipped when present; ``--summarize`` merges whatever parts exist.

    OMP_NUM_THREADS=1 python analyses/sweeps_zoo.py qwen2.5-0.5b
    OMP_NUM_THREADS=1 python analyses/sweeps_zoo.py gemma-3-270m --summarize
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pandas as pd

import lensmap as lm
from lensmap.config.sweep import PatchingSettings, SweepSettings
from lensmap.figures.html import write_report
from lensmap.figures.sweeps import sweep_section
from lensmap.io import atomic_write_csv, atomic_write_text
from lensmap.metrics.sweeps import drop_curves, halving_k, layer_profile
from lensmap.readout.patching import patch_pairs, patching_frames
from lensmap.runs.sweep import compute_sweep, sweep_recommendations

ROOT = Path(__file__).resolve().parents[1]
LANGUAGES = ["fr", "de", "zh", "ja", "ru"]
PAIRS = [("fr", "zh"), ("de", "ja")]
FINE = True  # the k grid of every language after the first run of fr (see settings_for)


def settings_for(n_layers: int) -> SweepSettings:
    step = 4 if n_layers % 4 == 0 else 3
    if FINE:  # input side fine at small k, output side every k (it costs no block)
        ks = [0, 1, 2, 4, 8, 12, 24] if n_layers == 24 else [0, 1, 2, 3, 6, 12, 18]
        output_ks = list(range(n_layers + 1))
    else:  # the first run (fr): every step-th k from both sides
        ks, output_ks = list(range(0, n_layers + 1, step)), []
    return SweepSettings(n=12, text_n=8, text_tokens=32, mmlu_n=8, ks=ks, output_ks=output_ks,
                         generation_n=4, generation_tokens=8, generation_stride=2 * step, budget=0.1, n_boot=1000,
                         patching=PatchingSettings(enabled=False))


def run(model: str) -> None:
    out = ROOT / "analyses" / "results" / model / "sweeps"
    parts = out / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    handle = lm.load_model(model)
    settings = settings_for(handle.n_layers)
    timings = json.loads((out / "timings.json").read_text()) if (out / "timings.json").exists() else {}
    for lang in LANGUAGES[:1]:
        sweep_language(handle, settings, lang, parts, out, timings)
    for x, y in PAIRS:  # patching before the other languages, so a run cut short has both kinds of result
        patch_language_pair(handle, x, y, parts, out, timings)
    for lang in LANGUAGES[1:]:
        sweep_language(handle, settings, lang, parts, out, timings)
    summarize(handle, out, settings)


def sweep_language(handle, settings: SweepSettings, lang: str, parts: Path, out: Path, timings: dict) -> None:
    path = parts / f"sweep_{lang}.csv"
    if path.exists():
        return
    start = time.perf_counter()
    res = compute_sweep(handle, [lang], settings, progress=False)
    atomic_write_csv(path, res.sweep)
    timings[f"sweep_{lang}"] = round(time.perf_counter() - start, 1)
    atomic_write_text(out / "timings.json", json.dumps(timings, indent=2))
    print(handle.name, lang, timings[f"sweep_{lang}"], "s", flush=True)


def patch_language_pair(handle, x: str, y: str, parts: Path, out: Path, timings: dict) -> None:
    path = parts / f"patching_{x}_{y}.csv"
    if path.exists():
        return
    start = time.perf_counter()
    pairs = patch_pairs(handle.tokenizer, x, y, n=12)
    probs, switches = patching_frames(handle, pairs)
    atomic_write_csv(path, probs)
    atomic_write_csv(parts / f"switch_{x}_{y}.csv", switches)
    timings[f"patching_{x}_{y}"] = round(time.perf_counter() - start, 1)
    atomic_write_text(out / "timings.json", json.dumps(timings, indent=2))
    print(handle.name, "patching", x, y, timings[f"patching_{x}_{y}"], "s", flush=True)


def summarize(handle, out: Path, settings: SweepSettings) -> None:
    """Merge the parts that exist (a run cut short still gives its finished languages and pairs)."""
    parts = out / "parts"
    sweep = pd.concat([pd.read_csv(p) for p in sorted(parts.glob("sweep_*.csv"))], ignore_index=True)
    found = sorted(parts.glob("patching_*.csv"))
    patching = pd.concat([pd.read_csv(p) for p in found], ignore_index=True) if found else pd.DataFrame()
    found = sorted(parts.glob("switch_*.csv"))
    switches = pd.concat([pd.read_csv(p) for p in found], ignore_index=True) if found else pd.DataFrame()
    curves = drop_curves(sweep)
    halving = halving_k(curves)
    recs = sweep_recommendations(handle, halving, curves, settings)
    atomic_write_csv(out / "sweep.csv", sweep)
    atomic_write_csv(out / "patching.csv", patching)
    atomic_write_csv(out / "patching_switch.csv", switches)
    atomic_write_csv(out / "halving.csv", halving)
    for name, rec in recs.items():
        atomic_write_text(out / f"recommendation_{name}.json", json.dumps(rec.to_dict(), indent=2))
    write_report(out / "report.html", [sweep_section(curves, halving, layer_profile(curves), patching, switches, recs)],
                 title=f"lensmap sweep: {handle.name}")
    print(handle.name, "summarized:", sorted(sweep["language"].unique()), flush=True)


if __name__ == "__main__":
    names = [a for a in sys.argv[1:] if not a.startswith("--")] or ["qwen2.5-0.5b", "gemma-3-270m"]
    for name in names:
        if "--summarize" in sys.argv:  # merge what exists without running anything
            model_handle = lm.load_model(name, self_check=False)
            summarize(model_handle, ROOT / "analyses" / "results" / name / "sweeps", settings_for(model_handle.n_layers))
        else:
            run(name)
