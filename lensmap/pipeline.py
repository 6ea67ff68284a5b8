"""``lensmap report``: config → model → vocabulary map → probes → lens readout → files.

Each step is a public function of its own module; this one only wires them together and
writes the outputs atomically (a failed run leaves no partial output directory).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import pandas as pd

from lensmap.config import ProbeConfig, ReportConfig, load_config
from lensmap.data.probes import Prompt, cloze_probes, load_prompts_file, translation_probes
from lensmap.io import atomic_write_csv, atomic_write_text, staged_directory
from lensmap.probing import ProbeResult, run_probes


def build_prompts(probes: list[ProbeConfig]) -> list[Prompt]:
    """Expand the config's probe entries into prompts."""
    prompts: list[Prompt] = []
    for probe in probes:
        if probe.kind == "translation":
            prompts += translation_probes(probe.source, probe.target, n=probe.n, shots=probe.shots,
                                          seed=probe.seed, domain=probe.domain or "territories")
        elif probe.kind == "cloze":
            prompts += cloze_probes(probe.target, n=probe.n, seed=probe.seed, domain=probe.domain or "months")
        else:
            prompts += load_prompts_file(probe.path)
    return prompts


def parallel_items(config: ReportConfig):
    """The parallel set the ``phases:`` section names."""
    from lensmap.data.parallel import bible_parallel, cldr_parallel, files_parallel, table_parallel

    section = config.phases
    languages = section.languages or config.languages
    if section.source == "cldr":
        return cldr_parallel(languages, section.domain, n=section.n, seed=section.seed)
    if section.source == "bible":
        return bible_parallel(languages, n=section.n, seed=section.seed)
    if section.source == "files":
        return files_parallel(section.files)
    return table_parallel(section.table, languages)


def analyse_phases(handle, config: ReportConfig, result: ProbeResult | None = None, *, progress: bool = True):
    """Similarity of parallel items, phase boundaries and the recommendation for one model.

    Returns ``(phases, similarity frame, recommendation, note)``; ``phases`` is None (and the
    note says why) when the model or the probes cannot carry a phase analysis, e.g. a model of
    fewer than 4 layers or no probe with a target language. ``result`` is the backbone's
    readout of the config's probes (computed here when not given).
    """
    from lensmap.errors import LensmapError
    from lensmap.metrics.similarity import run_similarity
    from lensmap.phases import alignment_items, detect_phases, target_mass_rows
    from lensmap.recommend import recommend

    section = config.phases
    if result is None:
        from lensmap.languages.vocab_map import build_vocabulary_map

        vmap = build_vocabulary_map(handle.tokenizer, config.languages, vocab_size=handle.vocab_size, progress=progress)
        result = run_probes(handle, build_prompts(config.probes), vmap.weights(), vmap.columns(),
                            batch_size=config.batch_size, progress=progress)
    similarity, states = run_similarity(handle, parallel_items(config), n_boot=section.n_boot, seed=section.seed,
                                        progress=progress)
    phases, note = None, ""
    try:
        phases = detect_phases(alignment_items(states), target_mass_rows(result), n_boot=section.phase_boot,
                               seed=section.seed)
    except LensmapError as error:
        note = f"No phase analysis: {error}."
    recommendation = recommend(handle, section.strategy, phases=phases, budget=section.budget,
                               layers=section.layers or None)
    return phases, similarity, recommendation, note


def run_report(config: ReportConfig | str | os.PathLike, *, progress: bool = True) -> Path:
    """Run the whole backbone for one config and write its output directory; return its path.

    Writes ``language_mass.csv``, ``layer_stats.csv``, ``answer_probs.csv``, ``prompts.csv``,
    ``vocabulary.csv``, ``run.json`` and ``report.html`` (self-contained, opens offline).
    """
    from lensmap.backends import get_backend
    from lensmap.languages.vocab_map import build_vocabulary_map
    from lensmap.lenses.logit import LogitLens
    from lensmap.metrics.answers import decode_vocab_texts
    from lensmap.models.loading import load_model
    from lensmap.report import default_sections, write_report

    if not isinstance(config, ReportConfig):
        config = load_config(config)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 2)
        clock = now

    prompts = build_prompts(config.probes)  # cheap; fails early on a bad prompts file
    backend = get_backend(config.backend)  # fails early (before the slow load) if its package is missing
    lap("prompts")
    handle = load_model(config.model, dtype=config.dtype, device=config.device, device_map=config.device_map or None,
                        trust_remote_code=config.trust_remote_code)
    lap("load_model")
    lens, lens_eval, lens_note = LogitLens(handle), None, config.lens
    if config.lens == "tuned":  # load lens_path, or find it in the cache, or train it there
        from lensmap.lens_cli import obtain_tuned_lens, read_eval

        lens, lens_dir = obtain_tuned_lens(handle, config, progress=progress)
        lens_eval, lens_note = read_eval(lens_dir), f"tuned ({lens_dir})"
        lap("tuned_lens")
    lexicon = dict(config.vocab.lexicon) or None
    vmap = build_vocabulary_map(handle.tokenizer, config.languages, vocab_size=handle.vocab_size,
                                threshold=config.vocab.threshold, lexicon_files=lexicon, progress=progress)
    lap("vocabulary_map")
    share = vmap.vocab_share()
    result = run_probes(
        handle, prompts, vmap.weights(), vmap.columns(), lens=lens, positions=config.positions,
        batch_size=config.batch_size, vocab_share=[float(share[c]) for c in vmap.columns()],
        vocab_texts=decode_vocab_texts(handle.tokenizer), progress=progress, backend=backend,
    )
    lap("lens_readout")
    phase_outputs = None
    if config.phases.enabled:
        phase_outputs = analyse_phases(handle, config, result, progress=progress)
        lap("phases")
    eval_frames = None
    if config.evaluate:
        from lensmap.evaluation.protocol import evaluate_model

        eval_frames = evaluate_model(handle, config.evaluation, progress=progress)
        lap("evaluation")
    counts = vmap.counts()
    with staged_directory(config.output) as out:
        write_outputs(out, result, counts)
        run_info = {
            "config": dataclasses.asdict(config),
            "model": handle.info | {"name": handle.name, "architecture": handle.adapter.family},
            "timings_seconds": timings,
            "n_prompts": len(prompts),
            "python": platform.python_version(),
        }
        summary = {
            "model": f"{handle.name} ({handle.adapter.family}, {handle.n_layers} layers, {handle.info['dtype']})",
            "lens": lens_note,
            "backend": config.backend,
            "languages": ", ".join(config.languages),
            "prompts": f"{len(prompts)} in {result.mass['probe'].nunique()} probe set(s), positions: {config.positions}",
            "self-check": f"last-layer lens vs logits, max |Δ| = {handle.info.get('self_check_max_abs_diff', float('nan')):.3g}",
            "timings (s)": ", ".join(f"{k} {v}" for k, v in timings.items()),
        }
        sections = default_sections(result.mass, result.stats, result.answers if len(result.answers) else None)
        if lens_eval is not None:  # the tuned lens's held-out evaluation, from its directory
            from lensmap.lens_cli import eval_section

            atomic_write_csv(out / "lens_eval.csv", lens_eval)
            sections.append(eval_section(lens_eval, lens))
        if phase_outputs is not None:
            from lensmap.phase_plots import add_phase_bands, phase_section
            from lensmap.recommend import write_recommendation

            phases, similarity, recommendation, note = phase_outputs
            atomic_write_csv(out / "similarity.csv", similarity)
            write_recommendation(recommendation, out / "recommendation.json")
            if phases is not None:
                atomic_write_text(out / "phases.json", json.dumps(phases.to_dict(), indent=2))
                for section in sections:  # every layer-indexed figure gets the phase bands
                    for fig in section.figures:
                        add_phase_bands(fig, phases)
            sections.insert(1, phase_section(phases, similarity, recommendation, note))
        if eval_frames is not None:
            from lensmap.evaluation.plots import evaluation_sections
            from lensmap.evaluation.run import write_evaluation

            write_evaluation(out, *eval_frames)
            sections += evaluation_sections(*eval_frames)
        write_report(out / "report.html", sections, title=config.title or f"lensmap report: {handle.name}",
                     summary=summary)
        lap("write")
        run_info["timings_seconds"] = timings
        atomic_write_text(out / "run.json", json.dumps(run_info, indent=2, default=str))
    return Path(config.output)


def write_outputs(out: Path, result: ProbeResult, vocab_counts: pd.DataFrame) -> None:
    """Write the tidy CSV frames of one run into ``out``."""
    atomic_write_csv(out / "language_mass.csv", result.mass)
    atomic_write_csv(out / "layer_stats.csv", result.stats)
    atomic_write_csv(out / "answer_probs.csv", result.answers)
    atomic_write_csv(out / "prompts.csv", result.prompts)
    atomic_write_csv(out / "vocabulary.csv", vocab_counts.reset_index() if vocab_counts.index.name else vocab_counts)
