"""``lensmap sweep``: layer interventions from both sides, per-language metrics, patching, the cogsym layers.

    config → model (+ tuned delta) → tasks per language → sweep (one cached pass per batch,
    every setting replayed) → generation shares → patching → derived curves → recommendations → files
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from lensmap.analysis.recommend import Recommendation, recommend, write_recommendation
from lensmap.capture.ablation import Intervention, RevertSource, part_means
from lensmap.config.sweep import SweepConfig, SweepSettings, load_sweep_config, patch_language_pairs
from lensmap.data.text import bible_languages, bible_passages, generation_prompts
from lensmap.evaluation.benchmarks import SAMPLE_LANGUAGES, load_benchmark
from lensmap.figures.sweeps import sweep_section
from lensmap.io import atomic_write_csv, atomic_write_text
from lensmap.metrics.sweeps import Setting, drop_curves, halving_k, layer_profile, side_extent, sweep_settings
from lensmap.models.handle import ModelHandle
from lensmap.models.tokenizers import left_padded
from lensmap.outputs import prepare_output, staged_directory
from lensmap.readout.patching import patch_pairs, patching_frames
from lensmap.readout.sweeps import (
    Task,
    en_answer_task,
    evaluate_settings,
    generation_share,
    mmlu_task,
    sweep_frame,
    target_answer_task,
    text_task,
)
from lensmap.runs.common import Stopwatch, load_for


def language_passages(language: str, n: int) -> list[str]:
    """``n`` held-out passages in ``language``: Bible chapters where the Bible has it, else CLDR generation prompts."""
    if language in bible_languages():
        return bible_passages([language], "heldout")[language][:n]
    return generation_prompts(language, n)


def build_tasks(handle: ModelHandle, languages: list[str], settings: SweepSettings) -> list[Task]:
    """Every metric's items in every language (MMLU only where samples ship)."""
    tok, tasks = handle.tokenizer, []
    for lang in languages:
        if lang != "en":
            tasks.append(en_answer_task(tok, lang, settings.n, settings.seed))
            tasks.append(target_answer_task(tok, lang, settings.n, settings.seed))
        tasks.append(text_task(tok, lang, language_passages(lang, settings.text_n), settings.text_tokens))
        if settings.mmlu and lang in SAMPLE_LANGUAGES:
            tasks.append(mmlu_task(tok, lang, load_benchmark("mmlu", lang)[:settings.mmlu_n]))
    return tasks


def intervention_factories(handle: ModelHandle, languages: list[str], settings: SweepSettings,
                           source: RevertSource | None) -> dict[str, Any]:
    """``{label: blocks -> Intervention}`` for each configured intervention (means from reference text)."""
    out = {}
    means: dict = {}
    for name in settings.interventions:
        kind, _, part = name.partition("-")
        part = part or "block"
        if kind == "mean" and not any(key[1] == part for key in means):
            texts = [t for lang in languages for t in language_passages(lang, 4)]
            with left_padded(handle.tokenizer):
                enc = handle.tokenizer(texts, return_tensors="pt", padding=True, truncation=True,
                                       max_length=settings.text_tokens)
            means |= part_means(handle, range(handle.n_layers), part, enc["input_ids"], enc["attention_mask"])
        out[name] = (lambda blocks, kind=kind, part=part: Intervention(kind, blocks, part, means, source))
    return out


def generation_frame_values(handle: ModelHandle, languages: list[str], settings: SweepSettings,
                            grid: list[Setting], factories: dict[str, Any]) -> dict:
    """Per-item shares of greedy generations in the language, on every ``generation_stride``-th setting."""
    values: dict = {}
    if settings.generation_n == 0:
        return values
    for lang in languages:
        prompts = generation_prompts(lang, settings.generation_n, seed=settings.seed)
        for name, factory in factories.items():
            for setting in grid:
                if setting.k % settings.generation_stride:
                    continue
                shares = generation_share(handle, prompts, lang, factory(setting.blocks), settings.generation_tokens)
                values[(name, setting.direction, "generation_in_language", lang, setting.k)] = shares
    return values


@dataclass
class SweepResults:
    """Everything a sweep computed, before it is written."""

    handle: ModelHandle
    sweep: pd.DataFrame
    curves: pd.DataFrame
    halving: pd.DataFrame
    profile: pd.DataFrame
    patching: pd.DataFrame
    switches: pd.DataFrame
    recommendations: dict[str, Recommendation]
    timings: dict[str, float] = field(default_factory=dict)


def compute_sweep(handle: ModelHandle, languages: list[str], settings: SweepSettings, *,
                  source: RevertSource | None = None, progress: bool = True) -> SweepResults:
    """Run the sweep, the generation shares and the patching on a loaded model; nothing is written."""
    clock = Stopwatch()
    grid = sweep_settings(handle.n_layers, settings.directions, ks=settings.ks or None, window=settings.window,
                          output_ks=settings.output_ks or None)
    factories = intervention_factories(handle, languages, settings, source)
    tasks = build_tasks(handle, languages, settings)
    clock.lap("tasks")
    values = evaluate_settings(handle, tasks, grid, factories, batch_size=settings.batch_size, progress=progress)
    clock.lap("sweep")
    values |= generation_frame_values(handle, languages, settings, grid, factories)
    clock.lap("generation")
    frame = sweep_frame(values, handle.name, grid, n_boot=settings.n_boot, seed=settings.seed)
    curves = drop_curves(frame)
    halving = halving_k(curves)
    profile = layer_profile(curves)
    patch_parts, switch_parts = [], []
    if settings.patching.enabled:
        for x, y in patch_language_pairs(settings, languages):
            pairs = patch_pairs(handle.tokenizer, x, y, n=settings.patching.n,
                                input_language=settings.patching.input_language, seed=settings.seed)
            probs, switches = patching_frames(handle, pairs, batch_size=settings.batch_size, n_boot=settings.n_boot,
                                              seed=settings.seed, progress=progress)
            patch_parts.append(probs)
            switch_parts.append(switches)
        clock.lap("patching")
    recommendations = sweep_recommendations(handle, halving, curves, settings)
    return SweepResults(handle, frame, curves, halving, profile,
                        pd.concat(patch_parts, ignore_index=True) if patch_parts else pd.DataFrame(),
                        pd.concat(switch_parts, ignore_index=True) if switch_parts else pd.DataFrame(),
                        recommendations, clock.seconds)


def sweep_recommendations(handle: ModelHandle, halving: pd.DataFrame, curves: pd.DataFrame,
                          settings: SweepSettings) -> dict[str, Recommendation]:
    """``cogsym`` from the first intervention's evidence, beside ``cogsym-fixed`` and ``linguamap`` (no phases here)."""
    first = settings.interventions[0]
    sub = halving[halving["intervention"] == first]
    extent = side_extent(sub, handle.n_layers)
    side_curves = (curves[(curves["intervention"] == first) & curves["direction"].isin(["input", "output"])]
                   .groupby(["side", "direction", "k"])["retained"].mean().reset_index())
    evidence = {"intervention": first, **extent,
                "halving_k": sub.drop(columns=["model"]).to_dict("records"),
                "curves": side_curves.to_dict("records")}
    return {
        "cogsym": recommend(handle, "cogsym", budget=settings.budget, sweep=evidence),
        "cogsym-fixed": recommend(handle, "cogsym-fixed"),
        "linguamap": recommend(handle, "linguamap", budget=settings.budget),
    }


def write_sweep_outputs(out: Path, results: SweepResults, recommendation_file: str = "recommendation.json") -> None:
    """``sweep.csv``, ``patching.csv``, ``patching_switch.csv``, the cogsym recommendation and its baselines into ``out``.

    A report writes the cogsym recommendation as ``recommendation_cogsym.json`` beside the phases' own.
    """
    atomic_write_csv(out / "sweep.csv", results.sweep)
    if len(results.patching):
        atomic_write_csv(out / "patching.csv", results.patching)
        atomic_write_csv(out / "patching_switch.csv", results.switches)
    write_recommendation(results.recommendations["cogsym"], out / recommendation_file)
    others = {name: rec.to_dict() for name, rec in results.recommendations.items() if name != "cogsym"}
    atomic_write_text(out / "recommendation_baselines.json", json.dumps(others, indent=2))


def run_sweep(config: SweepConfig | str | os.PathLike, *, progress: bool = True, overwrite: bool = False) -> Path:
    """Run ``lensmap sweep`` for one config and write its output directory; return its path."""
    from lensmap.figures.html import write_report
    from lensmap.training.revert import apply_delta_keeping_base

    if not isinstance(config, SweepConfig):
        config = load_sweep_config(config)
    output = prepare_output(config.output, "sweep", overwrite=overwrite)
    handle = load_for(config)
    source = apply_delta_keeping_base(handle, config.sweep.revert_delta) if config.sweep.revert_delta else None
    results = compute_sweep(handle, config.languages, config.sweep, source=source, progress=progress)
    with staged_directory(output, command="sweep", overwrite=overwrite) as out:
        write_sweep_outputs(out, results)
        write_report(out / "report.html", [sweep_section(results.curves, results.halving, results.profile,
                                                         results.patching, results.switches,
                                                         results.recommendations)],
                     title=config.title or f"lensmap sweep: {handle.name}",
                     summary={"model": f"{handle.name} ({handle.n_layers} layers)",
                              "interventions": ", ".join(config.sweep.interventions),
                              "languages": ", ".join(config.languages),
                              "timings (s)": ", ".join(f"{k} {v}" for k, v in results.timings.items())})
        atomic_write_text(out / "run.json", json.dumps({"config": dataclasses.asdict(config),
                                                        "model": handle.info | {"name": handle.name},
                                                        "timings_seconds": results.timings}, indent=2, default=str))
    return output
