"""Language-specific neurons of the zoo models: LAPE statistics, deactivation, activation similarity.

Resumable: every stage writes its file under analyses/results/<model>/neurons/ and is skipped
when that file exists. Run from the repository root, one model at a time:

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python analyses/neurons_zoo.py qwen2.5-0.5b
    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python analyses/neurons_zoo.py gemma-3-270m
    PYTHONPATH=$PWD python analyses/neurons_zoo.py --figures qwen2.5-0.5b gemma-3-270m
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

LANGUAGES = ["en", "fr", "es", "de", "ru", "zh", "ja"]
STATS_TOKENS = 10240  # per language (40 sequences of 256)
HELDOUT = dict(seq_len=128, tokens=768)  # 6 held-out sequences of 128 tokens per language
SIMILARITY_ITEMS = 40
ROOT = Path(__file__).parent / "results"


def log(out: Path, message: str) -> None:
    line = f"{time.strftime('%H:%M:%S')} {message}"
    print(line, flush=True)
    with open(out / "progress.log", "a") as f:
        f.write(line + "\n")


def run(model: str, heldout_tokens: int = HELDOUT["tokens"], similarity_items: int = SIMILARITY_ITEMS,
        heldout_seq_len: int = HELDOUT["seq_len"]) -> None:
    import lensmap
    from lensmap.io import atomic_write_csv, atomic_write_text
    from lensmap.metrics.neurons import NeuronStats, activation_similarity_frame, diagonal_dominance
    from lensmap.readout.neurons import (
        NeuronSettings,
        collect_neuron_stats,
        neuron_text,
        pooled_activations,
        run_deactivation,
        select_from_stats,
        similarity_items,
    )

    out = ROOT / model / "neurons"
    out.mkdir(parents=True, exist_ok=True)
    settings = NeuronSettings(languages=LANGUAGES, tokens=STATS_TOKENS, seq_len=256, batch_size=4,
                              similarity_items=similarity_items, n_boot=1000)
    handle = lensmap.load_model(model, dtype="float32")
    log(out, f"loaded {model}: {handle.n_layers} blocks, dtype {handle.dtype}")
    stats_path = out / "neuron_stats.npz"
    if stats_path.exists():
        stats = NeuronStats.load(stats_path)
    else:
        t0 = time.time()
        text = neuron_text(handle, settings, LANGUAGES, "train", settings.tokens)
        stats = collect_neuron_stats(handle, text, site=settings.site, batch_size=settings.batch_size)
        stats.info |= {"model": model, "source": "bible", "seq_len": settings.seq_len,
                       "tokens_per_language": settings.tokens, "seconds": round(time.time() - t0, 1)}
        stats.save(stats_path)
        log(out, f"statistics: {int(stats.tokens[0, 0])} tokens per language in {time.time() - t0:.0f} s")
    results = select_from_stats(stats, settings, model=model)
    atomic_write_csv(out / "neuron_stats.csv", stats.summary(model))
    atomic_write_csv(out / "language_neurons.csv", results.language_neurons)
    atomic_write_csv(out / "neuron_density.csv", results.density)
    atomic_write_csv(out / "neuron_overlap.csv", results.overlap)
    atomic_write_text(out / "neurons.json", json.dumps(results.settings, indent=2))
    log(out, "LAPE: " + ", ".join(f"{lang} {results.selection.count(lang)}" for lang in LANGUAGES))

    sim_path = out / "neuron_similarity.csv"
    if not sim_path.exists():
        t0 = time.time()
        pooled = pooled_activations(handle, similarity_items(settings, LANGUAGES), site=stats.site, batch_size=8)
        atomic_write_csv(sim_path, activation_similarity_frame(pooled, model=model, site=stats.site))
        log(out, f"similarity: {time.time() - t0:.0f} s")

    deact_path = out / "deactivation.csv"
    if not deact_path.exists():
        t0 = time.time()
        held = NeuronSettings(languages=LANGUAGES, seq_len=heldout_seq_len)
        heldout = neuron_text(handle, held, LANGUAGES, "heldout", heldout_tokens)
        frame = run_deactivation(handle, results.selection, heldout, site=stats.site, batch_size=2, progress=True)
        atomic_write_csv(deact_path, frame)
        log(out, f"deactivation: {time.time() - t0:.0f} s")
        log(out, diagonal_dominance(frame).to_string())
    log(out, "done")


def robustness(models: list[str]) -> None:
    """Neurons per language under other LAPE thresholds, from the saved statistics (no model)."""
    from lensmap.io import atomic_write_csv
    from lensmap.metrics.neurons import NeuronStats, lape_select

    for model in models:
        out = ROOT / model / "neurons"
        stats = NeuronStats.load(out / "neuron_stats.npz")
        prob = stats.probability()
        rows = []
        for q in (0.9, 0.95, 0.98):
            for fraction in (0.005, 0.01, 0.02):
                sel = lape_select(prob, stats.languages, tau_quantile=q, fraction=fraction)
                n_blocks = sel.selected.shape[0]
                quarter = max(1, n_blocks // 4)
                per_block = sel.selected.sum(dim=1).double()
                row = {"model": model, "tau_quantile": q, "tau": sel.tau, "fraction": fraction,
                       "n_selected": int(sel.selected.sum()),
                       "first_quarter": float(per_block[:quarter].sum() / per_block.sum()),
                       "last_quarter": float(per_block[-quarter:].sum() / per_block.sum())}
                row |= {lang: sel.count(lang) for lang in stats.languages}
                rows.append(row)
        frame = pd.DataFrame(rows)
        atomic_write_csv(out / "lape_robustness.csv", frame)
        print(frame.round(3).to_string(index=False))


def summary(models: list[str]) -> None:
    """The numbers analyses/neurons_zoo.md quotes, as markdown tables."""
    from lensmap.metrics.neurons import diagonal_dominance

    for model in models:
        out = ROOT / model / "neurons"
        print(f"\n### {model}\n")
        settings = json.loads((out / "neurons.json").read_text())
        print(f"tau {settings['tau']:.4f}, selected {settings['n_selected']} of {settings['n_blocks']} x "
              f"{settings['d_mlp']}, eligible {settings['n_eligible']}")
        dens = pd.read_csv(out / "neuron_density.csv")
        per_lang = dens.groupby("language", sort=False)["n_neurons"].sum()
        print("neurons per language: " + ", ".join(f"{k} {v}" for k, v in per_lang.sort_values().items()))
        per_block = dens.groupby("block")["n_neurons"].sum()
        print("assignments per block: " + " ".join(f"{b}:{v}" for b, v in per_block.items()))
        over = pd.read_csv(out / "neuron_overlap.csv")
        pairs = over[over.language_a < over.language_b].sort_values("jaccard", ascending=False)
        print(pairs.head(6)[["language_a", "language_b", "n_shared", "jaccard"]].round(3).to_string(index=False))
        sim = pd.read_csv(out / "neuron_similarity.csv")
        for metric in ("region_difference", "alignment_difference"):
            part = sim[sim.metric == metric].set_index("block")
            print(metric + ": " + " ".join(f"{b}:{v:.3f}[{lo:.3f},{hi:.3f}]" for b, v, lo, hi in
                                           zip(part.index, part.value, part.ci_low, part.ci_high)))
        if (out / "deactivation.csv").exists():
            deact = pd.read_csv(out / "deactivation.csv")
            for control in ("language", "random"):
                grid = deact[deact.control == control].pivot_table(index="neurons_of", columns="language",
                                                                   values="loss_increase")
                print(f"\n{control} (rows: whose neurons are off; n_sequences "
                      f"{deact.n_sequences.iloc[0]}):\n" + grid.reindex(index=LANGUAGES, columns=LANGUAGES)
                      .round(3).to_string())
            own = deact[(deact.neurons_of == deact.language)]
            print(own[["neurons_of", "control", "n_neurons", "base_loss", "loss_increase", "ci_low", "ci_high"]]
                  .round(3).to_string(index=False))
            print(diagonal_dominance(deact).round(3).to_string(index=False))


def figures(models: list[str]) -> None:
    from figure_files import save_figure  # analyses/figure_files.py

    from lensmap.figures.neurons import deactivation_heatmap, density_heatmap, overlap_heatmap, similarity_curves

    for model in models:
        out = ROOT / model / "neurons"
        read = lambda name: pd.read_csv(out / name)  # noqa: E731
        figs = {"density": density_heatmap(read("neuron_density.csv")),
                "overlap": overlap_heatmap(read("neuron_overlap.csv"))}
        if (out / "deactivation.csv").exists():
            figs["deactivation"] = deactivation_heatmap(read("deactivation.csv"))
        if (out / "neuron_similarity.csv").exists():
            figs["similarity"] = similarity_curves(read("neuron_similarity.csv"))
        for name, fig in figs.items():
            print(save_figure(fig, f"neurons_{model}_{name}"))

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="+")
    parser.add_argument("--figures", action="store_true")
    parser.add_argument("--robustness", action="store_true")
    parser.add_argument("--summary", action="store_true")
    parser.add_argument("--heldout-tokens", type=int, default=HELDOUT["tokens"],
                        help="held-out tokens per language for the deactivation (a shared CPU: fewer)")
    parser.add_argument("--similarity-items", type=int, default=SIMILARITY_ITEMS)
    parser.add_argument("--heldout-seq-len", type=int, default=HELDOUT["seq_len"])
    args = parser.parse_args()
    if args.summary:
        summary(args.models)
    elif args.robustness:
        robustness(args.models)
    elif args.figures:
        figures(args.models)
    else:
        for name in args.models:
            run(name, args.heldout_tokens, args.similarity_items, args.heldout_seq_len)
