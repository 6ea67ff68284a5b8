"""Figures of the four-scenario evaluation, drawn from ``eval_summary`` / ``eval_items`` frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from lensmap.evaluation.scenarios import SCENARIOS
from lensmap.figures.html import ReportSection
from lensmap.figures.style import language_order
from lensmap.frames import require_columns

MODE_COLORS = {"ok": "#2ca02c", "consistency_bottleneck": "#ff7f0e", "transfer_bottleneck": "#1f77b4",
               "both": "#d62728", "empty": "#7f7f7f", "undetectable_language": "#bcbd22"}


def scenario_language_heatmap(summary: pd.DataFrame, benchmark: str, metric: str) -> go.Figure:
    """Scenario (y) × language (x) heatmap of ``metric`` for one benchmark, values printed in the cells."""
    require_columns(summary, ["benchmark", "scenario", "language", metric], "eval_summary")
    sub = summary[summary["benchmark"] == benchmark]
    table = sub.pivot_table(index="scenario", columns="language", values=metric)
    table = table.reindex(index=[s for s in SCENARIOS if s in table.index],
                          columns=language_order(table.columns))
    z = table.to_numpy(dtype=float)
    text = np.where(np.isnan(z), "–", np.vectorize(lambda v: f"{v:.0%}")(np.nan_to_num(z)))
    fig = go.Figure(go.Heatmap(z=z, x=list(table.columns), y=list(table.index), zmin=0, zmax=1, colorscale="Blues",
                               text=text, texttemplate="%{text}",
                               hovertemplate="%{y} · %{x}: %{z:.1%}<extra></extra>"))
    fig.update_layout(title=f"{benchmark}: {metric.replace('_', ' ')}", template="plotly_white",
                      height=140 + 48 * len(table.index), yaxis=dict(autorange="reversed"))
    return fig


def failure_modes(items: pd.DataFrame, benchmark: str) -> go.Figure:
    """Stacked bars: the share of each failure mode per scenario and language."""
    require_columns(items, "eval_items", "eval_items")
    sub = items[items["benchmark"] == benchmark]
    shares = (sub.groupby(["scenario", "language"])["failure_mode"].value_counts(normalize=True)
              .rename("share").reset_index())
    shares["group"] = shares["scenario"] + " · " + shares["language"]
    order = [f"{s} · {l}" for s in SCENARIOS for l in language_order(sub["language"].unique())
             if ((shares["scenario"] == s) & (shares["language"] == l)).any()]
    fig = go.Figure()
    for mode, color in MODE_COLORS.items():
        part = shares[shares["failure_mode"] == mode].set_index("group").reindex(order)
        if part["share"].notna().any():
            fig.add_bar(x=order, y=part["share"].fillna(0), name=mode.replace("_", " "), marker_color=color)
    fig.update_layout(barmode="stack", title=f"{benchmark}: what went wrong, per scenario and language",
                      yaxis=dict(tickformat=".0%", title="share of items"), template="plotly_white", height=430)
    return fig


def evaluation_sections(items: pd.DataFrame, summary: pd.DataFrame) -> list[ReportSection]:
    """Report sections: per benchmark, accuracy and consistency heatmaps and the failure modes."""
    sections = []
    for benchmark in pd.unique(summary["benchmark"]):
        sub = summary[summary["benchmark"] == benchmark]
        figures = [scenario_language_heatmap(summary, benchmark, "accuracy"),
                   scenario_language_heatmap(summary, benchmark, "language_consistency"),
                   failure_modes(items, benchmark)]
        has_choice = "choice_accuracy" in sub and sub["choice_accuracy"].notna().any()
        if has_choice:
            figures.insert(1, scenario_language_heatmap(summary, benchmark, "choice_accuracy"))
        sections.append(ReportSection(
            f"Evaluation: {benchmark}",
            "Accuracy: the share of items answered correctly. Language consistency: the share of judged "
            "responses written in the question's language (responses without letters are counted apart, "
            "in n_undetectable). Transfer bottleneck: right language, wrong answer. Consistency bottleneck: "
            "right answer, wrong language." + _findings(sub, has_choice),
            figures,
            sub.drop(columns=["benchmark"]).round(3)))
    return sections


def _findings(sub: pd.DataFrame, has_choice: bool) -> str:
    """The section's result in words: overall rates with their n, and what limits them."""
    n = int(sub["n"].sum())
    text = (f" Over {n} scored responses: generation accuracy {sub['accuracy'].mul(sub['n']).sum() / n:.0%}, "
            f"language consistency {sub['language_consistency'].mean():.0%} (mean over cells).")
    if has_choice:
        text += (f" By option likelihood (the letter the model finds most likely right after the answer word, "
                 f"independent of generation length) accuracy is {sub['choice_accuracy'].mul(sub['n']).sum() / n:.0%}.")
    cut = int(sub["n_truncated"].sum()) if "n_truncated" in sub else 0
    if cut:
        text += (f" {cut} of {n} responses ran into max_new_tokens before their answer line; their generation "
                 "accuracy is a lower bound — raise evaluation.generation.max_new_tokens"
                 + (" or read choice_accuracy" if has_choice else "") + ".")
    return text
