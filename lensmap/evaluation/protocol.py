"""The four-scenario protocol: prompts → responses → per-item judgements → summary frames."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from lensmap.errors import ConfigError
from lensmap.evaluation.benchmarks import BENCHMARKS, BenchItem, load_benchmark
from lensmap.evaluation.generation import GenerationSettings, generate_responses
from lensmap.evaluation.scenarios import SCENARIOS, build_prompt
from lensmap.evaluation.scoring import FAILURE_MODES, judge
from lensmap.frames import columns
from lensmap.languages.lid import check_language_field
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
            "truncated": bool(cut_short),
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
        })
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


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
    return items, summarize(items)


def settings_dict(settings: EvalSettings) -> dict[str, Any]:
    return dataclasses.asdict(settings)


__all__ = ["EvalSettings", "FAILURE_MODES", "SUMMARY_COLUMNS", "build_items", "evaluate_model", "score_responses",
           "settings_from", "summarize"]
