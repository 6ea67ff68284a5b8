"""``lensmap neurons CONFIG.yaml``: language-specific neurons of one model, written to a directory.

    text → statistics (streamed) → LAPE → deactivation (+ random control) → activation similarity → files

A report config with a ``neurons:`` section adds the same analysis as a section of ``report.html``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from lensmap.config.neurons import NeuronsConfig, load_neurons_config
from lensmap.figures.html import write_report
from lensmap.figures.neurons import neuron_section
from lensmap.io import atomic_write_csv, atomic_write_text
from lensmap.metrics.neurons import NeuronStats
from lensmap.outputs import prepare_output, staged_directory
from lensmap.readout.neurons import NeuronResults, analyse_neurons
from lensmap.runs.common import Stopwatch, load_for

NEURON_FILES = ("neuron_stats.npz", "neuron_stats.csv", "language_neurons.csv", "neuron_density.csv",
                "neuron_overlap.csv", "neurons.json")


def write_neurons(out: Path, results: NeuronResults, model: str = "") -> None:
    """Every file of the neuron analysis into ``out``; the thresholds go to ``neurons.json``."""
    results.stats.save(out / "neuron_stats.npz")
    atomic_write_csv(out / "neuron_stats.csv", results.stats.summary(model))
    atomic_write_csv(out / "language_neurons.csv", results.language_neurons)
    atomic_write_csv(out / "neuron_density.csv", results.density)
    atomic_write_csv(out / "neuron_overlap.csv", results.overlap)
    if results.deactivation is not None:
        atomic_write_csv(out / "deactivation.csv", results.deactivation)
    if results.similarity is not None:
        atomic_write_csv(out / "neuron_similarity.csv", results.similarity)
    if results.key_neurons is not None:
        atomic_write_csv(out / "key_neurons.csv", results.key_neurons)
    atomic_write_text(out / "neurons.json", json.dumps(results.settings, indent=2, default=str))


def section_for(results: NeuronResults):
    """The report section of these results."""
    return neuron_section(results.density, results.overlap, results.deactivation, results.similarity,
                          results.settings)


def run_neurons(config: NeuronsConfig | str | os.PathLike, *, progress: bool = True, overwrite: bool = False) -> Path:
    """Load the model, run the neuron analysis and write its output directory; return its path.

    Writes ``neuron_stats.npz`` (the statistics, to select again without the model),
    ``neuron_stats.csv``, ``language_neurons.csv``, ``neuron_density.csv``,
    ``neuron_overlap.csv``, ``neurons.json`` (every threshold), ``deactivation.csv``,
    ``neuron_similarity.csv``, ``run.json`` and ``report.html``.
    """
    if not isinstance(config, NeuronsConfig):
        config = load_neurons_config(config)
    output = prepare_output(config.output, "neurons", overwrite=overwrite)
    clock = Stopwatch()
    stats = NeuronStats.load(config.stats) if config.stats else None
    handle = load_for(config)
    clock.lap("load_model")
    results = analyse_neurons(handle, config.neurons, config.languages, stats=stats, progress=progress)
    clock.lap("neurons")
    with staged_directory(output, command="neurons", overwrite=overwrite) as out:
        write_neurons(out, results, handle.name)
        atomic_write_text(out / "run.json", json.dumps({"config": dataclasses.asdict(config), "model": handle.info,
                                                         "timings_seconds": clock.seconds}, indent=2, default=str))
        write_report(out / "report.html", [section_for(results)],
                     title=config.title or f"lensmap neurons: {handle.name}",
                     summary={"model": handle.name, "languages": ", ".join(results.stats.languages),
                              "site": results.stats.site,
                              "tokens per language": f"{int(results.stats.tokens[0, 0]):,}",
                              "time (s)": f"{clock.total:.0f}"})
    return output
