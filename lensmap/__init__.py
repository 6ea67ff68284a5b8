"""lensmap: which layers of a multilingual LLM speak which language.

The public API, one function per step of the flow (each takes and returns plain tensors,
dataclasses or DataFrames)::

    load_model → build_vocabulary_map → translation_probes / cloze_probes / load_prompts_file
    → capture_residuals → LogitLens.decode → read_layers → run_probes (all of it, as frames)
    → plots.* → report.write_report;  run_report(config) does everything for a YAML config.

Tuned lens: train_tuned_lens, TunedLens.load, evaluate_lenses. Other capture libraries
(TransformerLens, nnsight) and your own tensors: get_backend, as_handle, read_hidden.
Phases: cldr_parallel / bible_parallel → run_similarity → detect_phases → recommend.
Neurons: collect_neuron_stats → lape_select → run_deactivation; analyse_neurons, run_neurons.
Layer sweeps and patching: Intervention, intervene, compute_sweep, run_sweep.
Evaluation: evaluate_model. Selective SFT: lensmap.training (train_sft, load_delta), run_sft.

Where each part lives: docs/design.md.
"""

from lensmap import figures
from lensmap import figures as plots  # lm.plots.mass_heatmap(...): every figure
from lensmap.analysis.phases import Phases, alignment_items, detect_phases, target_mass_rows
from lensmap.analysis.recommend import Recommendation, recommend, write_recommendation
from lensmap.capture import backends
from lensmap.capture.ablation import Intervention, intervene
from lensmap.capture.backends import as_handle, get_backend
from lensmap.capture.hooks import residual_hooks
from lensmap.capture.inputs import select_positions
from lensmap.capture.residuals import Residuals, capture_residuals
from lensmap.config.report import ReportConfig, load_config, parse_config
from lensmap.data.parallel import ParallelSet, bible_parallel, cldr_parallel, files_parallel, table_parallel
from lensmap.data.probes import Prompt, cloze_probes, load_prompts_file, translation_probes
from lensmap.errors import LensmapError
from lensmap.evaluation.protocol import EvalSettings, evaluate_model
from lensmap.figures import html as report  # lm.report.write_report(...)
from lensmap.languages.vocab_map import VocabularyMap, build_vocabulary_map
from lensmap.lenses.base import Lens
from lensmap.lenses.evaluation import compare_lenses, evaluate_lenses
from lensmap.lenses.logit import LogitLens
from lensmap.lenses.training import TrainSettings, train_tuned_lens
from lensmap.lenses.tuned import TunedLens
from lensmap.metrics.hidden import read_hidden
from lensmap.metrics.mass import Readout, read_layers, reduce_logits
from lensmap.metrics.neurons import LapeSelection, NeuronStats, lape_select
from lensmap.models.handle import ModelHandle
from lensmap.models.loading import load_model, load_tokenizer
from lensmap.models.selfcheck import check_last_layer_lens
from lensmap.readout.neurons import NeuronSettings, analyse_neurons, collect_neuron_stats, run_deactivation
from lensmap.readout.probes import ProbeResult, run_probes
from lensmap.readout.states import run_similarity
from lensmap.runs.evaluation import run_evaluation
from lensmap.runs.neurons import run_neurons
from lensmap.runs.report import analyse_phases, run_report
from lensmap.runs.sft import run_sft
from lensmap.runs.sweep import compute_sweep, run_sweep
from lensmap.version import __version__  # noqa: F401

__all__ = [
    "Lens", "LensmapError", "LogitLens", "ModelHandle", "ProbeResult", "Prompt", "Readout", "ReportConfig",
    "Residuals", "VocabularyMap", "build_vocabulary_map", "capture_residuals", "check_last_layer_lens",
    "cloze_probes", "figures", "load_config", "load_model", "load_prompts_file", "load_tokenizer", "parse_config",
    "plots", "read_layers", "reduce_logits", "report", "residual_hooks", "run_probes", "run_report",
    "select_positions", "translation_probes",
    "TrainSettings", "TunedLens", "compare_lenses", "evaluate_lenses", "train_tuned_lens",
    "as_handle", "backends", "get_backend", "read_hidden",
    "EvalSettings", "ParallelSet", "Phases", "Recommendation", "alignment_items", "analyse_phases", "bible_parallel",
    "cldr_parallel", "detect_phases", "evaluate_model", "files_parallel", "recommend", "run_evaluation", "run_sft",
    "run_similarity", "table_parallel", "target_mass_rows", "write_recommendation",
    "LapeSelection", "NeuronSettings", "NeuronStats", "analyse_neurons", "collect_neuron_stats", "lape_select",
    "run_deactivation", "run_neurons",
    "Intervention", "compute_sweep", "intervene", "run_sweep",
]
