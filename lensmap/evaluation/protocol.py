"""The four-scenario protocol: prompts → responses → per-item judgements → summary frames."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from lensmap.errors import ConfigError
from lensmap.evaluation.benchmarks import BENCHMARKS, LETTERS, BenchItem, load_benchmark
from lensmap.evaluation.generation import GenerationSettings, generate_responses, render_chat
from lensmap.evaluation.likelihood import choose, continuation_logprobs
from lensmap.evaluation.scenarios import SCENARIOS, answer_line_start, build_prompt
from lensmap.evaluation.scoring import FAILURE_MODES, judge
from lensmap.frames import columns
from lensmap.languages.lid import check_language_field
from lensmap.metrics.intervals import wilson
from lensmap.models.handle import ModelHandle
from lensmap.schema import build, path_field

SUMMARY_COLUMNS = columns("eval_summary")


@dataclass
class EvalSettings:
    """What is evaluated (``evaluation:`` in a config; see docs/evaluation.md)."""

    benchmarks: list[str] = field(default_factory=lambda: list(BENCHMARKS))
    languages: list[str] = field(default_factory=lambda: ["en", "fr", "de", "zh", "ja", "ru"])
    scenarios: list[str] = field(default_factory=lambda: list(SCENARIOS))
    n_items: int = 0  # per benchmark and language; 0 = all
    data: dict[str, str] = path_field(default_factory=dict)  # benchmark -> samples | path with {lang} | hf:NAME[:CONFIG]
    instructions: dict[str, dict[str, str]] = field(default_factory=dict)  # benchmark -> language -> text
    templates: dict[str, str] = field(default_factory=dict)  # scenario -> layout
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    choice_scoring: bool = True  # MMLU also scored by option likelihood (choice_accuracy), see likelihood.py


def settings_from(value: EvalSettings | Mapping[str, Any] | None) -> EvalSettings:
    """An :class:`EvalSettings` from itself, a parsed YAML mapping, or None (the defaults); validated."""
    if value is None:
        settings = EvalSettings()
    elif isinstance(value, EvalSettings):
        settings = value
    else:
        settings = build(EvalSettings, dict(value), "evaluation")
    return validate_settings(settings)


def validate_settings(settings: EvalSettings, where: str = "evaluation") -> EvalSettings:
    for name, allowed in (("benchmarks", BENCHMARKS), ("scenarios", SCENARIOS)):
        values = getattr(settings, name)
        if not values:
            raise ConfigError(f"{where}.{name} must list at least one of {', '.join(allowed)}")
        bad = [v for v in values if v not in allowed]
        if bad:
            raise ConfigError(f"{where}.{name}: unknown {bad[0]!r}; choose from {', '.join(allowed)}")
    check_language_field(settings.languages, f"{where}.languages")
    unknown = [b for b in settings.data if b not in BENCHMARKS]
    if unknown:
        raise ConfigError(f"{where}.data: unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}")
    gen = settings.generation
    if settings.n_items < 0 or gen.max_new_tokens < 1 or gen.batch_size < 1:
        raise ConfigError(f"{where}: n_items must be >= 0, generation.max_new_tokens and batch_size >= 1")
    return settings


def build_items(settings: EvalSettings) -> list[tuple[BenchItem, str, str]]:
    """Every ``(item, scenario, prompt)`` the settings ask for, in a fixed order."""
    rows = []
    for benchmark in settings.benchmarks:
        source = settings.data.get(benchmark, "samples")
        for language in settings.languages:
            items = load_benchmark(benchmark, language, source)
            if settings.n_items:
                items = items[: settings.n_items]
            for scenario in settings.scenarios:
                for item in items:
                    rows.append((item, scenario, build_prompt(item, scenario, instructions=settings.instructions,
                                                              templates=settings.templates)))
    return rows


def score_responses(
    rows: list[tuple[BenchItem, str, str]], responses: list[str], model: str = "",
    truncated: Sequence[bool] | None = None,
) -> pd.DataFrame:
    """``eval_items`` frame: one row per item and scenario, with the judgement of its response.

    ``truncated`` (one flag per response, default all False) marks responses that ran into
    ``max_new_tokens``; they are scored like any other and counted in the summary's ``n_truncated``.
    """
    records = []
    truncated = [False] * len(responses) if truncated is None else list(truncated)
    for (item, scenario, prompt), response, cut_short in zip(rows, responses, truncated, strict=True):
        j = judge(item, response)
        gold = item.answer if item.benchmark != "xquad" else " | ".join(item.answers)
        records.append({
            "model": model, "benchmark": item.benchmark, "scenario": scenario, "language": item.language,
            "item_id": item.id, "prompt": prompt, "response": response, "prediction": j.prediction, "gold": gold,
            "correct": j.correct, "exact_match": j.exact_match, "f1": j.f1, "detected_language": j.language,
            "detected_prob": round(j.language_prob, 4), "detected_by": j.language_method,
            "langdetect_language": j.langdetect, "language_ok": j.language_ok, "failure_mode": j.failure_mode,
            "truncated": bool(cut_short), "choice_prediction": None, "choice_correct": None,
        })
    return pd.DataFrame.from_records(records)


def summarize(items: pd.DataFrame) -> pd.DataFrame:
    """``eval_summary``: per benchmark × scenario × language.

    ``accuracy`` over all items; ``language_consistency`` over the items whose language could be
    judged (``n_undetectable`` and ``n_empty`` are reported beside it, never counted as wrong);
    ``n_truncated`` counts responses cut off by ``max_new_tokens`` (raise it when this is not 0);
    ``transfer_bottleneck`` / ``consistency_bottleneck`` / ``both_failures`` as fractions of all
    items.
    """
    if items.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    rows = []
    for (benchmark, scenario, language), group in items.groupby(["benchmark", "scenario", "language"], sort=False):
        modes = group["failure_mode"].value_counts()
        judged = group["language_ok"].dropna().astype(bool)
        n = len(group)
        rows.append({
            "benchmark": benchmark, "scenario": scenario, "language": language, "n": n,
            "accuracy": float(group["correct"].mean()),
            "language_consistency": float(judged.mean()) if len(judged) else np.nan,
            "transfer_bottleneck": modes.get("transfer_bottleneck", 0) / n,
            "consistency_bottleneck": modes.get("consistency_bottleneck", 0) / n,
            "both_failures": modes.get("both", 0) / n,
            "n_undetectable": int(modes.get("undetectable_language", 0)), "n_empty": int(modes.get("empty", 0)),
            "n_truncated": int(group["truncated"].sum()) if "truncated" in group else 0,
            "mean_f1": float(group["f1"].mean()),
            **_intervals(group),
        })
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _intervals(group: pd.DataFrame) -> dict[str, float]:
    """95 % Wilson intervals of the generation accuracy and, where scored, the option-likelihood accuracy."""
    n = len(group)
    low, high = wilson(int(group["correct"].sum()), n)
    out = {"accuracy_ci_low": low, "accuracy_ci_high": high,
           "choice_accuracy": np.nan, "choice_ci_low": np.nan, "choice_ci_high": np.nan}
    choice = group["choice_correct"].dropna() if "choice_correct" in group else pd.Series(dtype=bool)
    if len(choice):
        k = int(choice.astype(bool).sum())
        out["choice_accuracy"] = k / len(choice)
        out["choice_ci_low"], out["choice_ci_high"] = wilson(k, len(choice))
    return out


def score_choices(handle: ModelHandle, rows: list[tuple[BenchItem, str, str]], settings: EvalSettings,
                  *, progress: bool = True) -> list[str | None]:
    """Per row the option letter with the highest likelihood after the answer word (MMLU rows), else None."""
    picked = [k for k, (item, _, _) in enumerate(rows) if item.options]
    contexts, continuations = [], []
    for k in picked:
        item, scenario, prompt = rows[k]
        start, space = answer_line_start(item, scenario)
        contexts.append(render_chat(handle.tokenizer, prompt, settings.generation.chat_template) + start)
        continuations.append([space + letter for letter in LETTERS[: len(item.options)]])
    templated = bool(settings.generation.chat_template and getattr(handle.tokenizer, "chat_template", None))
    scores = continuation_logprobs(handle, contexts, continuations, batch_size=settings.generation.batch_size,
                                   special_tokens=not templated, progress=progress,
                                   desc=f"option likelihood {handle.name}")
    out: list[str | None] = [None] * len(rows)
    for k, row_scores in zip(picked, scores):
        out[k] = choose(row_scores, LETTERS[: len(row_scores)])
    return out


def evaluate_model(
    handle: ModelHandle,
    settings: EvalSettings | Mapping[str, Any] | None = None,
    *,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run the protocol on a loaded model: ``(eval_items, eval_summary)`` frames."""
    settings = settings_from(settings)
    rows = build_items(settings)
    responses = generate_responses(handle, [prompt for _, _, prompt in rows], settings.generation,
                                   progress=progress, desc=f"evaluating {handle.name}")
    items = score_responses(rows, [r.text for r in responses], model=handle.name,
                            truncated=[r.truncated for r in responses])
    if settings.choice_scoring and any(item.options for item, _, _ in rows):
        choices = score_choices(handle, rows, settings, progress=progress)
        items["choice_prediction"] = choices
        items["choice_correct"] = [None if c is None else c == item.answer for c, (item, _, _) in zip(choices, rows)]
    return items, summarize(items)


def settings_dict(settings: EvalSettings) -> dict[str, Any]:
    return dataclasses.asdict(settings)


__all__ = ["EvalSettings", "FAILURE_MODES", "SUMMARY_COLUMNS", "build_items", "evaluate_model", "score_responses",
           "settings_from", "summarize"]
