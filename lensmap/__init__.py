"""lensmap: which layers of a multilingual LLM speak which language.

The public API, one function per step of the flow (each takes and returns plain tensors,
dataclasses or DataFrames)::

    load_model → build_vocabulary_map → translation_probes / cloze_probes / load_prompts_file
    → capture_residuals → LogitLens.decode → read_layers → run_probes (all of it, as frames)
    → plots.* → report.write_report;  run_report(config) does everything for a YAML config.

Tuned lens: train_tuned_lens, TunedLens.load, evaluate_lenses. Other capture libraries
(TransformerLens, nnsight) and your own tensors: get_backend, as_handle, read_hidden.
Phases: cldr_parallel / bible_parallel → run_similarity → detect_phases → lensmap.recommend.recommend.
Evaluation: evaluate_model. Selective SFT: lensmap.training (train_sft, load_delta, run_sft).
"""

from lensmap import backends, plots, report
from lensmap.backends import as_handle, get_backend, read_hidden
from lensmap.capture import Residuals, capture_residuals, residual_hooks, select_positions
from lensmap.config import ReportConfig, load_config, parse_config
from lensmap.data.probes import Prompt, cloze_probes, load_prompts_file, translation_probes
from lensmap.errors import LensmapError
from lensmap.languages.vocab_map import VocabularyMap, build_vocabulary_map
from lensmap.lenses import (
    Lens, LogitLens, TrainSettings, TunedLens, check_last_layer_lens, compare_lenses, evaluate_lenses,
    train_tuned_lens,
)
from lensmap.metrics.mass import Readout, read_layers, reduce_logits
from lensmap.models.handle import ModelHandle
from lensmap.models.loading import load_model, load_tokenizer
from lensmap.data.parallel import ParallelSet, bible_parallel, cldr_parallel, files_parallel, table_parallel
from lensmap.evaluation import EvalSettings, evaluate_model
from lensmap.metrics.similarity import run_similarity
from lensmap.phases import Phases, alignment_items, detect_phases, target_mass_rows
from lensmap.pipeline import analyse_phases, run_report
from lensmap.recommend import Recommendation, write_recommendation  # recommend(): lensmap.recommend.recommend
from lensmap.probing import ProbeResult, run_probes

__version__ = "0.1.0"

__all__ = [
    "Lens", "LensmapError", "LogitLens", "ModelHandle", "ProbeResult", "Prompt", "Readout", "ReportConfig",
    "Residuals", "VocabularyMap", "build_vocabulary_map", "capture_residuals", "check_last_layer_lens",
    "cloze_probes", "load_config", "load_model", "load_prompts_file", "load_tokenizer", "parse_config",
    "plots", "read_layers", "reduce_logits", "report", "residual_hooks", "run_probes", "run_report",
    "select_positions", "translation_probes",
    "TrainSettings", "TunedLens", "compare_lenses", "evaluate_lenses", "train_tuned_lens",
    "as_handle", "backends", "get_backend", "read_hidden",
    "EvalSettings", "ParallelSet", "Phases", "Recommendation", "alignment_items", "analyse_phases", "bible_parallel",
    "cldr_parallel", "detect_phases", "evaluate_model", "files_parallel", "run_similarity",
    "table_parallel", "target_mass_rows", "write_recommendation",
]
