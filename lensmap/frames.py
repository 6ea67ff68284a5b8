"""Every output table lensmap writes: its file, its columns in order, and what a reader needs.

This is the one home of the columns of every tidy frame (docs/outputs.md says what each
column means). The code that builds a frame orders it by :data:`TABLES`; the figures and the
analyses check a frame they are given with :func:`require_columns`, which raises a
:class:`~lensmap.errors.FrameError` naming the missing columns instead of failing deep inside
pandas or plotly. To add a table, add a :class:`Table` entry and document it in docs/outputs.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from lensmap.errors import FrameError

PROBE_KEYS = ("model", "probe", "source", "target")


@dataclass(frozen=True)
class Table:
    """One output table: ``columns`` as written; ``required`` the subset a reader (a figure) needs."""

    name: str
    file: str
    columns: tuple[str, ...]
    required: tuple[str, ...]


TABLES: dict[str, Table] = {t.name: t for t in (
    Table("language_mass", "language_mass.csv",
          (*PROBE_KEYS, "layer", "language", "mass", "mass_std", "vocab_share", "n_prompts"),
          ("model", "probe", "layer", "language", "mass", "vocab_share")),
    Table("layer_stats", "layer_stats.csv",
          (*PROBE_KEYS, "layer", "entropy", "entropy_std", "n_prompts", "max_entropy", "lens"),
          ("model", "probe", "layer", "entropy", "max_entropy")),
    Table("answer_probs", "answer_probs.csv",
          (*PROBE_KEYS, "layer", "word", "measure", "prob", "prob_std", "rank", "n_prompts"),
          ("model", "probe", "target", "layer", "word", "measure", "prob")),
    Table("prompts", "prompts.csv",
          ("probe", "item", "source", "target", "prompt", "answer", "answer_en", "answer_token", "english_token",
           "n_target_word_start", "n_english_word_start", "final_top_token"),
          ("probe", "prompt")),
    Table("similarity", "similarity.csv",
          ("model", "source", "target", "layer", "pooling", "metric", "value", "ci_low", "ci_high"),
          ("source", "target", "layer", "pooling", "metric", "value", "ci_low", "ci_high")),
    Table("lens_eval", "lens_eval.csv",
          ("model", "lens", "language", "layer", "kl", "kl_std", "top1_agreement", "entropy", "n_tokens"),
          ("model", "lens", "language", "layer", "kl", "top1_agreement")),
    Table("eval_items", "eval_items.csv",
          ("model", "benchmark", "scenario", "language", "item_id", "prompt", "response", "prediction", "gold",
           "correct", "exact_match", "f1", "detected_language", "detected_prob", "detected_by",
           "langdetect_language", "language_ok", "failure_mode", "truncated", "choice_prediction", "choice_correct"),
          ("benchmark", "scenario", "language", "correct", "failure_mode")),
    Table("eval_summary", "eval_summary.csv",
          ("benchmark", "scenario", "language", "n", "accuracy", "language_consistency", "transfer_bottleneck",
           "consistency_bottleneck", "both_failures", "n_undetectable", "n_empty", "n_truncated", "mean_f1",
           "accuracy_ci_low", "accuracy_ci_high", "choice_accuracy", "choice_ci_low", "choice_ci_high"),
          ("benchmark", "scenario", "language", "accuracy", "language_consistency")),
    Table("sft_comparison", "sft_comparison.csv",
          ("variant", "benchmark", "scenario", "language", "n", "accuracy", "language_consistency",
           "accuracy_ci_low", "accuracy_ci_high", "choice_accuracy", "choice_ci_low", "choice_ci_high"),
          ("variant", "scenario", "language", "n", "accuracy", "language_consistency")),
    Table("neuron_stats", "neuron_stats.csv",
          ("model", "site", "language", "block", "n_tokens", "d_mlp", "mean_probability", "mean_activation",
           "never_active"),
          ("language", "block", "n_tokens", "mean_probability")),
    Table("language_neurons", "language_neurons.csv",
          ("model", "site", "block", "neuron", "language", "probability", "entropy", "n_languages"),
          ("block", "neuron", "language")),
    Table("neuron_density", "neuron_density.csv",
          ("model", "site", "block", "language", "n_neurons", "fraction", "d_mlp"),
          ("block", "language", "n_neurons", "fraction")),
    Table("neuron_overlap", "neuron_overlap.csv",
          ("model", "site", "language_a", "language_b", "n_a", "n_b", "n_shared", "jaccard", "share_of_a"),
          ("language_a", "language_b", "n_shared", "jaccard")),
    Table("deactivation", "deactivation.csv",
          ("model", "site", "neurons_of", "control", "n_neurons", "language", "base_loss", "loss", "loss_increase",
           "ci_low", "ci_high", "n_sequences"),
          ("neurons_of", "control", "language", "loss_increase", "ci_low", "ci_high")),
    Table("neuron_similarity", "neuron_similarity.csv",
          ("model", "site", "block", "metric", "value", "ci_low", "ci_high", "n_items"),
          ("block", "metric", "value", "ci_low", "ci_high")),
    Table("sweep", "sweep.csv",
          ("model", "intervention", "direction", "k", "blocks", "language", "metric", "value", "ci_low", "ci_high",
           "n_items"),
          ("model", "intervention", "direction", "k", "language", "metric", "value", "ci_low", "ci_high")),
    Table("patching", "patching.csv",
          ("model", "source_language", "target_language", "layer", "concept", "language", "prob", "ci_low", "ci_high",
           "n_pairs"),
          ("source_language", "target_language", "layer", "concept", "language", "prob")),
    Table("patching_switch", "patching_switch.csv",
          ("model", "source_language", "target_language", "switch", "layer", "ci_low", "ci_high", "n_pairs"),
          ("source_language", "target_language", "switch", "layer", "ci_low", "ci_high")),
)}


def columns(name: str) -> list[str]:
    """The columns of output table ``name``, in the order they are written."""
    return list(table(name).columns)


def table(name: str) -> Table:
    """The :class:`Table` called ``name``; an unknown name lists the known ones."""
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"no output table {name!r}; known tables: {', '.join(TABLES)} "
                       "(add one to lensmap.frames.TABLES)") from None


def require_columns(frame: pd.DataFrame | None, needed: Sequence[str] | str, name: str) -> pd.DataFrame:
    """Return ``frame`` if it is a DataFrame holding every column ``needed`` (a list, or a table name).

    Raises :class:`FrameError` (a LensmapError) naming what is missing and what the frame has.
    """
    if isinstance(needed, str):
        needed = table(needed).required
    if frame is None:
        raise FrameError(f"no {name} frame was given (got None)")
    if not isinstance(frame, pd.DataFrame):
        raise FrameError(f"the {name} frame must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise FrameError(f"the {name} frame lacks column(s) {missing}; it has {list(frame.columns)}")
    return frame


def select_rows(
    frame: pd.DataFrame | None,
    needed: Sequence[str] | str,
    name: str,
    *,
    probe: str | None = None,
    model: str | None = None,
) -> pd.DataFrame:
    """Check columns, keep the rows of ``model`` and ``probe`` (when given); an empty result is an error."""
    frame = require_columns(frame, needed, name)
    if frame.empty:
        raise FrameError(f"the {name} frame is empty")
    sub = frame
    for column, value in (("model", model), ("probe", probe)):
        if value is None:
            continue
        kept = sub[sub[column] == value]
        if kept.empty:
            available = sorted(map(str, sub[column].unique()))
            scope = f" of model {model!r}" if column == "probe" and model is not None else ""
            raise FrameError(f"the {name} frame has no rows for {column}={value!r}; "
                             f"available {column}s{scope}: {available}")
        sub = kept
    return sub


def single_value(sub: pd.DataFrame, column: str, name: str):
    """The one value of ``column`` in ``sub``, or an error asking the caller to choose one."""
    values = list(dict.fromkeys(sub[column]))
    if len(values) != 1:
        raise FrameError(f"the {name} frame holds several {column}s {sorted(map(str, values))}; "
                         f"pass {column}=... to choose one")
    return values[0]


def check_unique(sub: pd.DataFrame, keys: Sequence[str], name: str) -> None:
    """An error when ``keys`` do not identify the rows of ``sub`` uniquely."""
    if sub.duplicated(list(keys)).any():
        raise FrameError(f"the {name} frame has several rows per {tuple(keys)} after filtering; "
                         "filter it further (e.g. by source/target) before plotting")
