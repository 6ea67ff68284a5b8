"""Figures and report sections of ``lensmap sft``: before/after, variant by variant.

All figures are drawn from the saved frames (``sft_comparison.csv``, ``training_curves.csv``,
``language_mass.csv`` with a ``variant`` column), never from a model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from lensmap.figures.html import ReportSection
from lensmap.figures.style import language_order
from lensmap.frames import require_columns

VARIANT_COLORS = {"base": "#7f7f7f", "selective": "#1f77b4", "full": "#d62728", "random": "#ff7f0e",
                  "lora": "#2ca02c"}


def _variants(frame: pd.DataFrame) -> list[str]:
    seen = list(pd.unique(frame["variant"]))
    return [v for v in VARIANT_COLORS if v in seen] + [v for v in seen if v not in VARIANT_COLORS]


def scenario_bars(comparison: pd.DataFrame, metric: str = "language_consistency") -> go.Figure:
    """Grouped bars: ``metric`` per scenario (x) and variant (colour), item-weighted over languages."""
    require_columns(comparison, ["variant", "scenario", "n", metric], "sft_comparison")
    frame = comparison.assign(weighted=comparison[metric] * comparison["n"])
    grouped = frame.groupby(["variant", "scenario"], sort=False)[["weighted", "n"]].sum().reset_index()
    grouped[metric] = grouped["weighted"] / grouped["n"]
    fig = go.Figure()
    for variant in _variants(grouped):
        sub = grouped[grouped["variant"] == variant]
        fig.add_bar(x=sub["scenario"], y=sub[metric], name=variant, marker_color=VARIANT_COLORS.get(variant),
                    hovertemplate=f"{variant}<br>%{{x}}<br>{metric} %{{y:.1%}}<extra></extra>")
    fig.update_layout(barmode="group", title=f"{metric.replace('_', ' ')} per scenario, every variant",
                      yaxis=dict(title=metric.replace("_", " "), tickformat=".0%", range=[0, 1.02]),
                      template="plotly_white", height=420)
    return fig


def language_heatmap(comparison: pd.DataFrame, scenario: str, metric: str = "language_consistency") -> go.Figure:
    """Variant × language heatmap of ``metric`` in one scenario (item-weighted over benchmarks)."""
    require_columns(comparison, ["variant", "scenario", "language", "n", metric], "sft_comparison")
    sub = comparison[comparison["scenario"] == scenario]
    sub = sub.assign(weighted=sub[metric] * sub["n"]).groupby(["variant", "language"])[["weighted", "n"]].sum()
    table = (sub["weighted"] / sub["n"]).unstack("language")
    table = table.reindex(index=[v for v in _variants(table.reset_index()) if v in table.index],
                          columns=language_order(table.columns))
    fig = go.Figure(go.Heatmap(z=table.to_numpy(), x=list(table.columns), y=list(table.index), zmin=0, zmax=1,
                               colorscale="Blues", text=np.vectorize(lambda v: f"{v:.0%}")(table.to_numpy()),
                               texttemplate="%{text}", hovertemplate="%{y} · %{x}: %{z:.1%}<extra></extra>"))
    fig.update_layout(title=f"{metric.replace('_', ' ')} in the {scenario} scenario", template="plotly_white",
                      height=120 + 45 * len(table.index))
    return fig


def training_curves(curves: pd.DataFrame) -> go.Figure:
    """Training loss per optimiser step, one line per variant."""
    require_columns(curves, ["variant", "step", "loss"], "training_curves")
    fig = go.Figure()
    for variant in _variants(curves):
        sub = curves[curves["variant"] == variant]
        fig.add_scatter(x=sub["step"], y=sub["loss"], mode="lines+markers", name=variant,
                        line=dict(color=VARIANT_COLORS.get(variant)))
    fig.update_layout(title="training loss (Q, R, A tokens)", xaxis_title="optimiser step", yaxis_title="loss (nats)",
                      template="plotly_white", height=380)
    return fig


def mass_difference(mass: pd.DataFrame, variant: str, probe: str, languages: Sequence[str] | None = None) -> go.Figure:
    """Heatmap of ``variant`` − ``base`` language mass per layer (x) and language (y) on one probe."""
    require_columns(mass, ["variant", "probe", "layer", "language", "mass"], "language_mass")
    sub = mass[mass["probe"] == probe]
    pivot = {name: sub[sub["variant"] == name].pivot_table(index="language", columns="layer", values="mass")
             for name in ("base", variant)}
    diff = pivot[variant] - pivot["base"]
    order = [lang for lang in language_order(diff.index, languages) if lang in diff.index]
    diff = diff.reindex(order)
    limit = float(np.nanmax(np.abs(diff.to_numpy()))) or 1.0
    fig = go.Figure(go.Heatmap(z=diff.to_numpy(), x=list(diff.columns), y=order, zmid=0, zmin=-limit, zmax=limit,
                               colorscale="RdBu_r", colorbar=dict(title="Δ mass"),
                               hovertemplate="layer %{x}<br>%{y}: Δ %{z:+.4f}<extra></extra>"))
    fig.update_layout(title=f"{variant} − base: language mass, {probe}", xaxis_title="layer (0 = embedding output)",
                      template="plotly_white", height=140 + 32 * len(order))
    return fig


def variants_table(records: list[dict]) -> pd.DataFrame:
    rows = []
    for r in records:
        t = r["trainable"]
        rows.append({"variant": r["variant"], "layers": ", ".join(map(str, t["layers"])) if len(t["layers"]) < 40
                     else f"all {len(t['layers'])}", "trainable params": f"{t['trainable_params']:,}",
                     "fraction": f"{t['trainable_fraction']:.2%}", "optimised params": f"{r['optimised_params']:,}",
                     "changed tensors": r["changed_tensors"], "frozen bit-identical": r["frozen_bit_identical"],
                     "steps": r["steps"], "train time (s)": r["train_seconds"]})
    return pd.DataFrame(rows)


def headline_table(comparison: pd.DataFrame) -> pd.DataFrame:
    """Per variant and scenario: item-weighted accuracy and consistency, and the change from base."""
    frame = comparison.assign(acc=comparison["accuracy"] * comparison["n"],
                              con=comparison["language_consistency"] * comparison["n"])
    table = frame.groupby(["variant", "scenario"], sort=False)[["acc", "con", "n"]].sum()
    table["accuracy"] = table["acc"] / table["n"]
    table["language_consistency"] = table["con"] / table["n"]
    table = table[["accuracy", "language_consistency", "n"]].reset_index()
    base = table[table["variant"] == "base"].set_index("scenario")
    for metric in ("accuracy", "language_consistency"):
        table[f"Δ {metric} vs base"] = table.apply(
            lambda row: row[metric] - base[metric].get(row["scenario"], np.nan), axis=1)
    return table


def sft_sections(records: list[dict], comparison: pd.DataFrame, curves: pd.DataFrame,
                 mass: pd.DataFrame) -> list[ReportSection]:
    """The report of one ``lensmap sft`` run."""
    sections = [ReportSection(
        "What was trained",
        "Each variant starts from the base model. Only the listed parameters are trained; every other "
        "parameter was checked to be bit-identical to the base after training. `optimised params` is what "
        "the optimiser updated (for LoRA, the adapters, merged back into those layers afterwards).",
        [training_curves(curves)] if not curves.empty else [], variants_table(records))]
    if not comparison.empty:
        scenarios = list(pd.unique(comparison["scenario"]))
        focus = "code_switched" if "code_switched" in scenarios else scenarios[0]
        sections.append(ReportSection(
            "Language consistency and accuracy, before and after",
            "Language consistency: the share of responses in the language of the question. Accuracy: the "
            "share answered correctly. Bars pool benchmarks and languages, weighting every item equally; "
            "the table gives the change against the base model.",
            [scenario_bars(comparison, "language_consistency"), scenario_bars(comparison, "accuracy"),
             language_heatmap(comparison, focus, "language_consistency")],
            headline_table(comparison).round(4)))
    if not mass.empty:
        figures = [mass_difference(mass, variant, probe)
                   for variant in _variants(mass) if variant != "base" for probe in pd.unique(mass["probe"])]
        sections.append(ReportSection(
            "What changed inside: language mass, tuned − base",
            "The logit lens on the same probes before and after training; red = more probability on that "
            "language's tokens at that layer than the base model gave.", figures))
    return sections
