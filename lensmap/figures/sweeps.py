"""Figures of a layer sweep and of cross-lingual patching, and the report section that states the result.

Drawn from the frames only: the drop curves (:func:`lensmap.metrics.sweeps.drop_curves`), the
halving sizes, the per-block profile and ``patching.csv`` / ``patching_switch.csv``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lensmap.figures.html import ReportSection
from lensmap.figures.style import language_color
from lensmap.frames import require_columns

DASH = {"input": "solid", "output": "dash"}


def drop_curves_figure(curves: pd.DataFrame, intervention: str | None = None) -> go.Figure:
    """Retained share of each metric against k, from the input side (solid) and the output side (dashed), per language."""
    frame = require_columns(curves, ["intervention", "direction", "k", "language", "metric", "retained"], "drop curves")
    intervention = intervention or frame["intervention"].iloc[0]
    frame = frame[(frame["intervention"] == intervention) & frame["direction"].isin(["input", "output"])]
    metrics = sorted(frame["metric"].unique())
    fig = make_subplots(rows=1, cols=max(1, len(metrics)), subplot_titles=metrics, shared_yaxes=True)
    for col, metric in enumerate(metrics, start=1):
        for (direction, language), sub in frame[frame["metric"] == metric].groupby(["direction", "language"]):
            sub = sub.sort_values("k")
            fig.add_trace(go.Scatter(x=sub["k"], y=sub["retained"], mode="lines", name=f"{language} {direction}",
                                     legendgroup=language, showlegend=col == 1,
                                     line=dict(color=language_color(language), dash=DASH[direction])), row=1, col=col)
        fig.add_hline(y=0.5, line_dash="dot", line_color="grey", row=1, col=col)
    fig.update_xaxes(title_text="k (blocks intervened on)")
    fig.update_yaxes(title_text="retained (1 = unchanged)", row=1, col=1)
    fig.update_layout(title=f"{intervention}: input side (solid, blocks 0..k−1) vs output side (dashed, last k blocks)",
                      height=380, template="plotly_white")
    return fig


def profile_figure(profile: pd.DataFrame) -> go.Figure:
    """Per block: the drop of perception and production when that block alone is intervened on."""
    frame = require_columns(profile, ["intervention", "block"], "layer profile")
    fig = go.Figure()
    for side, color in (("perception", "#1f77b4"), ("production", "#d62728")):
        if side in frame:
            for name, sub in frame.groupby("intervention"):
                fig.add_trace(go.Bar(x=sub["block"], y=sub[side], name=f"{side} ({name})", marker_color=color))
    fig.update_layout(title="Single-block interventions: drop of perception vs production", barmode="group",
                      xaxis_title="decoder block", yaxis_title="mean drop (1 − retained)", template="plotly_white")
    return fig


def patching_figure(patching: pd.DataFrame) -> go.Figure:
    """Probability of each concept (A = source's, B = target's) in each language after patching at each layer."""
    frame = require_columns(patching, "patching", "patching")
    pairs = list(frame.groupby(["source_language", "target_language"]).groups)
    fig = make_subplots(rows=1, cols=max(1, len(pairs)), subplot_titles=[f"X={x}, Y={y}" for x, y in pairs],
                        shared_yaxes=True)
    styles = {"A": "solid", "B": "dot"}
    for col, (x, y) in enumerate(pairs, start=1):
        sub = frame[(frame["source_language"] == x) & (frame["target_language"] == y)]
        for (concept, language), s in sub.groupby(["concept", "language"]):
            fig.add_trace(go.Scatter(x=s["layer"], y=s["prob"], mode="lines", name=f"concept {concept} in {language}",
                                     line=dict(color=language_color(language), dash=styles.get(concept, "solid")),
                                     showlegend=True), row=1, col=col)
    fig.update_xaxes(title_text="patched residual layer")
    fig.update_yaxes(title_text="probability of the word's first token", row=1, col=1)
    fig.update_layout(title="Patching the source's last-token residual (concept A → language X) into the target "
                            "(concept B → language Y)", height=380, template="plotly_white")
    return fig


def _fmt(value: float) -> str:
    return "none" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:g}"


def sweep_text(halving: pd.DataFrame, switches: pd.DataFrame, recommendations: Mapping) -> str:
    """The result in words: where each side halves, where patching switches, what the strategies choose."""
    parts = []
    if len(halving):
        table = halving.groupby(["intervention", "side", "direction", "metric"])["k_half"].median().reset_index()
        for (name, side), sub in table.groupby(["intervention", "side"]):
            items = "; ".join(f"{r.metric} from the {r.direction} side at k={_fmt(r.k_half)}" for r in sub.itertuples())
            parts.append(f"{name}, {side}: the median over languages halves {items}.")
    if len(switches):
        for (x, y), sub in switches.groupby(["source_language", "target_language"]):
            got = {r.switch: r for r in sub.itertuples()}
            if "language" in got and "concept" in got:
                lang, con = got["language"], got["concept"]
                order = ("before" if lang.layer < con.layer else "after" if lang.layer > con.layer else "at the same layer as")
                parts.append(f"Patching {x}→{y} ({lang.n_pairs} pairs): the output language switches to the source's at "
                             f"layer {lang.layer:.1f} (95 % CI {lang.ci_low:.1f}–{lang.ci_high:.1f}), {order} the concept "
                             f"(layer {con.layer:.1f}, {con.ci_low:.1f}–{con.ci_high:.1f}).")
    for name, rec in recommendations.items():
        parts.append(rec.describe())
    return "\n\n".join(parts) or "The sweep measured nothing."


def sweep_section(curves: pd.DataFrame, halving: pd.DataFrame, profile: pd.DataFrame, patching: pd.DataFrame,
                  switches: pd.DataFrame, recommendations: Mapping) -> ReportSection:
    """The report section of a sweep: the drop curves, the profile, the patching curves and the text."""
    figures = [drop_curves_figure(curves, name) for name in curves["intervention"].unique()]
    if len(profile):
        figures.append(profile_figure(profile))
    if len(patching):
        figures.append(patching_figure(patching))
    table = None
    if len(switches):
        table = switches[["source_language", "target_language", "switch", "layer", "ci_low", "ci_high", "n_pairs"]]
    return ReportSection("Layer sweeps and cross-lingual patching", sweep_text(halving, switches, recommendations),
                         figures, table)
