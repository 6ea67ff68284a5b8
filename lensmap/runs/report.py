"""``lensmap report``: one config → every analysis of the backbone → one output directory.

Each step is a public function in its own module; this one only wires them together and
writes the outputs atomically (a failed run leaves no partial output directory):

    prompts → model → (tuned lens) → vocabulary map → lens readout → (phases) → (evaluation) → files
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from lensmap.analysis.phases import Phases, alignment_items, detect_phases, target_mass_rows
from lensmap.analysis.recommend import Recommendation, recommend, write_recommendation
from lensmap.capture.backends import get_backend
from lensmap.config.report import ReportConfig, load_config
from lensmap.config.sections import ProbeConfig
from lensmap.data.parallel import ParallelSet, bible_parallel, cldr_parallel, files_parallel, table_parallel
from lensmap.data.probes import Prompt, cloze_capacity, cloze_probes, load_prompts_file, translation_probes
from lensmap.errors import LensmapError
from lensmap.figures.backbone import default_sections
from lensmap.figures.evaluation import evaluation_sections
from lensmap.figures.html import ReportSection, write_report
from lensmap.figures.lens_eval import eval_section
from lensmap.figures.phases import add_phase_bands, phase_section
from lensmap.io import atomic_write_csv, atomic_write_text
from lensmap.languages.vocab_map import VocabularyMap, build_vocabulary_map
from lensmap.lenses.logit import LogitLens
from lensmap.metrics.answers import decode_vocab_texts
from lensmap.models.handle import ModelHandle
from lensmap.outputs import prepare_output, staged_directory
from lensmap.readout.probes import ProbeResult, run_probes
from lensmap.readout.states import run_similarity
from lensmap.runs.common import Stopwatch, load_for
from lensmap.runs.evaluation import write_evaluation
from lensmap.runs.lens import obtain_tuned_lens, read_eval

CONFIG_PROBE_DEFAULT_N = 40  # a probe without n: 40 prompts, or every one it has if fewer


def build_prompts(probes: list[ProbeConfig]) -> list[Prompt]:
    """Expand the config's probe entries into prompts (an ``n`` above what a probe has warns)."""
    prompts: list[Prompt] = []
    for probe in probes:
        if probe.kind == "translation":
            prompts += translation_probes(probe.source, probe.target, n=probe.n, shots=probe.shots,
                                          seed=probe.seed, domain=probe.domain or "territories")
        elif probe.kind == "cloze":
            domain = probe.domain or "months"
            n = probe.n if probe.n is not None else min(CONFIG_PROBE_DEFAULT_N, cloze_capacity(domain))
            prompts += cloze_probes(probe.target, n=n, seed=probe.seed, domain=domain)
        else:
            prompts += load_prompts_file(probe.path)
    return prompts


def parallel_items(config: ReportConfig) -> ParallelSet:
    """The parallel set the ``phases:`` section names."""
    section = config.phases
    languages = section.languages or config.languages
    if section.source == "cldr":
        return cldr_parallel(languages, section.domain, n=section.n, seed=section.seed)
    if section.source == "bible":
        return bible_parallel(languages, n=section.n, seed=section.seed)
    if section.source == "files":
        return files_parallel(section.files)
    return table_parallel(section.table, languages)


class PhaseOutputs(NamedTuple):
    """What the phase analysis of one model gives: ``phases`` is None when ``note`` says why."""

    phases: Phases | None
    similarity: pd.DataFrame
    recommendation: Recommendation
    note: str = ""


def analyse_phases(handle: ModelHandle, config: ReportConfig, result: ProbeResult | None = None, *,
                   progress: bool = True, neuron_density: pd.DataFrame | None = None) -> PhaseOutputs:
    """Similarity of parallel items, phase boundaries and the recommendation for one model.

    ``phases`` is None (and the note says why) when the model or the probes cannot carry a
    phase analysis, e.g. a model of fewer than 4 layers or no probe with a target language.
    ``result`` is the backbone's readout of the config's probes (computed here when not given).
    """
    section = config.phases
    if result is None:
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
    targets = None
    if neuron_density is not None:  # strategy neurons: the probes' target languages the neuron analysis covers
        targets = sorted({p.target for p in config.probes if p.target} & set(neuron_density["language"])) or None
    recommendation = recommend(handle, section.strategy, phases=phases, budget=section.budget,
                               layers=section.layers or None, neuron_density=neuron_density,
                               target_languages=targets)
    return PhaseOutputs(phases, similarity, recommendation, note)


@dataclass
class ReportResults:
    """Everything one report computed, before it is written (each part None when switched off)."""

    handle: ModelHandle
    prompts: list[Prompt]
    vmap: VocabularyMap
    result: ProbeResult
    lens_name: str
    lens_eval: pd.DataFrame | None = None
    lens: Any = None
    phases: PhaseOutputs | None = None
    evaluation: tuple[pd.DataFrame, pd.DataFrame] | None = None
    neurons: Any = None  # lensmap.readout.neurons.NeuronResults when the config has a neurons: section
    sweep: Any = None  # lensmap.runs.sweep.SweepResults when the config has a sweep: section
    timings: dict[str, float] = field(default_factory=dict)


def compute_report(config: ReportConfig, *, progress: bool = True) -> ReportResults:
    """Run every analysis the config asks for; nothing is written."""
    clock = Stopwatch()
    prompts = build_prompts(config.probes)  # cheap; fails early on a bad prompts file
    backend = get_backend(config.backend)  # fails early (before the slow load) if its package is missing
    clock.lap("prompts")
    handle = load_for(config)
    clock.lap("load_model")
    lens, lens_eval, lens_name = LogitLens(handle), None, config.lens
    if config.lens == "tuned":  # load lens_path, or find it in the cache, or train it there
        lens, lens_dir = obtain_tuned_lens(handle, config, progress=progress)
        lens_eval, lens_name = read_eval(lens_dir), f"tuned ({lens_dir})"
        clock.lap("tuned_lens")
    vmap = build_vocabulary_map(handle.tokenizer, config.languages, vocab_size=handle.vocab_size,
                                threshold=config.vocab.threshold, lexicon_files=dict(config.vocab.lexicon) or None,
                                progress=progress)
    clock.lap("vocabulary_map")
    share = vmap.vocab_share()
    result = run_probes(
        handle, prompts, vmap.weights(), vmap.columns(), lens=lens, positions=config.positions,
        batch_size=config.batch_size, vocab_share=[float(share[c]) for c in vmap.columns()],
        vocab_texts=decode_vocab_texts(handle.tokenizer), progress=progress, backend=backend,
        too_long=config.too_long,
    )
    clock.lap("lens_readout")
    out = ReportResults(handle, prompts, vmap, result, lens_name, lens_eval, lens)
    if config.neurons is not None:  # before the phases: strategy neurons reads its density
        from lensmap.readout.neurons import analyse_neurons

        out.neurons = analyse_neurons(handle, config.neurons, config.languages, progress=progress)
        clock.lap("neurons")
    if config.phases.enabled:
        out.phases = analyse_phases(handle, config, result, progress=progress,
                                    neuron_density=out.neurons.density if out.neurons is not None else None)
        clock.lap("phases")
    if config.evaluate:
        from lensmap.evaluation.protocol import evaluate_model

        out.evaluation = evaluate_model(handle, config.evaluation, progress=progress)
        clock.lap("evaluation")
    if config.sweep.enabled:
        from lensmap.runs.sweep import compute_sweep

        out.sweep = compute_sweep(handle, config.languages, config.sweep, progress=progress)
        clock.lap("sweep")
    out.timings = clock.seconds
    return out


def report_sections(config: ReportConfig, results: ReportResults) -> list[ReportSection]:
    """The report's sections in order: backbone, phases (second), tuned lens, evaluation."""
    result = results.result
    sections = default_sections(result.mass, result.stats, result.answers if len(result.answers) else None)
    if results.lens_eval is not None:  # the tuned lens's held-out evaluation, from its directory
        sections.append(eval_section(results.lens_eval, results.lens))
    if results.phases is not None:
        phases = results.phases
        if phases.phases is not None:
            for section in sections:  # every layer-indexed figure gets the phase bands
                for fig in section.figures:
                    add_phase_bands(fig, phases.phases)
        sections.insert(1, phase_section(phases.phases, phases.similarity, phases.recommendation, phases.note))
    if results.evaluation is not None:
        sections += evaluation_sections(*results.evaluation)
    if results.neurons is not None:
        from lensmap.runs.neurons import section_for

        sections.append(section_for(results.neurons))
    if results.sweep is not None:
        from lensmap.figures.sweeps import sweep_section

        s = results.sweep
        sections.append(sweep_section(s.curves, s.halving, s.profile, s.patching, s.switches, s.recommendations))
    return sections


def report_summary(config: ReportConfig, results: ReportResults) -> dict[str, str]:
    """The key facts at the top of the report."""
    handle, result = results.handle, results.result
    return {
        "model": f"{handle.name} ({handle.adapter.family}, {handle.n_layers} layers, {handle.info['dtype']})",
        "lens": results.lens_name,
        "backend": config.backend,
        "languages": ", ".join(config.languages),
        "prompts": f"{len(results.prompts)} in {result.mass['probe'].nunique()} probe set(s), "
                   f"positions: {config.positions}",
        "self-check": f"last-layer lens vs logits, max |Δ| = {handle.info.get('self_check_max_abs_diff', float('nan')):.3g}",
        "timings (s)": ", ".join(f"{k} {v}" for k, v in results.timings.items()),
    }


def write_report_outputs(out: Path, config: ReportConfig, results: ReportResults) -> None:
    """Write every file of one report into ``out`` (a staging directory)."""
    clock = Stopwatch()
    write_outputs(out, results.result, results.vmap.counts())
    if results.lens_eval is not None:
        atomic_write_csv(out / "lens_eval.csv", results.lens_eval)
    if results.phases is not None:
        atomic_write_csv(out / "similarity.csv", results.phases.similarity)
        write_recommendation(results.phases.recommendation, out / "recommendation.json")
        if results.phases.phases is not None:
            atomic_write_text(out / "phases.json", json.dumps(results.phases.phases.to_dict(), indent=2))
    if results.evaluation is not None:
        write_evaluation(out, *results.evaluation)
    if results.neurons is not None:
        from lensmap.runs.neurons import write_neurons

        write_neurons(out, results.neurons, results.handle.name)
    if results.sweep is not None:
        from lensmap.runs.sweep import write_sweep_outputs

        write_sweep_outputs(out, results.sweep, recommendation_file="recommendation_cogsym.json")
    sections = report_sections(config, results)
    handle = results.handle
    write_report(out / "report.html", sections, title=config.title or f"lensmap report: {handle.name}",
                 summary=report_summary(config, results))
    clock.lap("write")
    timings = results.timings | clock.seconds
    run_info = {
        "config": dataclasses.asdict(config),
        "model": handle.info | {"name": handle.name, "architecture": handle.adapter.family},
        "timings_seconds": timings,
        "n_prompts": len(results.prompts),
        "python": platform.python_version(),
    }
    atomic_write_text(out / "run.json", json.dumps(run_info, indent=2, default=str))


def run_report(config: ReportConfig | str | os.PathLike, *, progress: bool = True, overwrite: bool = False) -> Path:
    """Run the whole backbone for one config and write its output directory; return its path.

    Writes ``language_mass.csv``, ``layer_stats.csv``, ``answer_probs.csv``, ``prompts.csv``,
    ``vocabulary.csv``, ``run.json`` and ``report.html`` (self-contained, opens offline), and
    with the optional parts ``similarity.csv``, ``phases.json``, ``recommendation.json``,
    ``lens_eval.csv``, ``eval_items.csv`` and ``eval_summary.csv``.

    The output directory is checked before the model loads (:func:`lensmap.outputs.prepare_output`):
    a directory holding files lensmap did not write is refused unless ``overwrite``, and even
    then only lensmap's own files are replaced.
    """
    if not isinstance(config, ReportConfig):
        config = load_config(config)
    output = prepare_output(config.output, "report", overwrite=overwrite)
    results = compute_report(config, progress=progress)
    with staged_directory(output, command="report", overwrite=overwrite) as out:
        write_report_outputs(out, config, results)
    return output


def write_outputs(out: Path, result: ProbeResult, vocab_counts: pd.DataFrame) -> None:
    """Write the tidy CSV frames of one run into ``out``."""
    atomic_write_csv(out / "language_mass.csv", result.mass)
    atomic_write_csv(out / "layer_stats.csv", result.stats)
    atomic_write_csv(out / "answer_probs.csv", result.answers)
    atomic_write_csv(out / "prompts.csv", result.prompts)
    atomic_write_csv(out / "vocabulary.csv", vocab_counts.reset_index() if vocab_counts.index.name else vocab_counts)
