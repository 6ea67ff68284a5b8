"""Figures of the phase analysis: similarity curves with intervals, phase bands on layer plots."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from lensmap.analysis.phases import Phases
from lensmap.analysis.recommend import Recommendation
from lensmap.figures.html import ReportSection
from lensmap.figures.style import error_band, language_color
from lensmap.frames import require_columns

PHASE_COLORS = {"align": "rgba(31,119,180,0.10)", "reason": "rgba(148,103,189,0.10)",
                "generate": "rgba(214,39,40,0.10)"}


def phase_spans(phases: Phases) -> list[tuple[str, float, float]]:
    """``(phase, x0, x1)`` bands in residual-layer coordinates, for the boundaries that were found."""
    a, g, n = phases.align_end.layer, phases.generate_start.layer, phases.n_layers
    spans = []
    if a is not None:
        spans.append(("align", -0.5, a + 0.5))
    if a is not None and g is not None and g > a + 1:
        spans.append(("reason", a + 0.5, g - 0.5))
    if g is not None:
        spans.append(("generate", g - 0.5, n + 0.5))
    return spans


def add_phase_bands(fig: go.Figure, phases: Phases) -> go.Figure:
    """Mark the align / reason / generate layers on a figure whose x axis is the residual layer.

    Line plots get shaded bands; heatmaps (which would hide a band) get dashed boundary lines.
    """
    opaque = any(trace.type == "heatmap" for trace in fig.data)
    for name, x0, x1 in phase_spans(phases):
        if opaque:
            fig.add_vline(x=x0, line_dash="dash", line_color="black", line_width=1.5)
            fig.add_annotation(x=(x0 + x1) / 2, y=1.0, yref="paper", yanchor="bottom", text=name, showarrow=False,
                               font_size=11)
        else:
            fig.add_vrect(x0=x0, x1=x1, fillcolor=PHASE_COLORS[name], line_width=0, layer="below",
                          annotation_text=name, annotation_position="top left", annotation_font_size=11)
    return fig


def similarity_curves(similarity: pd.DataFrame, metric: str, phases: Phases | None = None,
                      pooling: str = "mean") -> go.Figure:
    """One line per source language (mean over its targets) with its bootstrap interval."""
    require_columns(similarity, "similarity", "similarity")
    sub = similarity[(similarity["metric"] == metric) & (similarity["pooling"] == pooling)]
    fig = go.Figure()
    for source, part in sub.groupby("source", sort=False):
        curve = part.groupby("layer", as_index=False)[["value", "ci_low", "ci_high"]].mean()
        color = language_color(source)
        fig.add_trace(error_band(curve["layer"].to_numpy(), curve["ci_low"].to_numpy(), curve["ci_high"].to_numpy(),
                            color, source, source))
        fig.add_scatter(x=curve["layer"], y=curve["value"], mode="lines+markers", name=f"{source} → others",
                        line=dict(color=color), legendgroup=source)
    labels = {"cosine_gap": "cosine gap (translation − other), centred", "retrieval_accuracy": "translation retrieval",
              "translation_cosine": "cosine to translation, centred", "other_cosine": "cosine to non-translations"}
    fig.update_layout(title=f"{labels.get(metric, metric)} per layer ({pooling} pooling, 95 % bootstrap band)",
                      xaxis_title="layer (0 = embedding output)", yaxis_title=metric.replace("_", " "),
                      template="plotly_white", height=420)
    if metric == "retrieval_accuracy":
        fig.update_yaxes(range=[0, 1.02], tickformat=".0%")
    if phases is not None:
        add_phase_bands(fig, phases)
    return fig


def phase_curves(phases: Phases) -> go.Figure:
    """The two curves the boundaries were read from, on one figure (alignment on the right axis)."""
    c = phases.curves
    fig = go.Figure()
    fig.add_scatter(x=c["layer"], y=c["target_mass"], name="target-language mass", line=dict(color="#d62728"))
    fig.add_scatter(x=c["layer"], y=c["alignment"], name="alignment (cosine gap)", yaxis="y2",
                    line=dict(color="#1f77b4", dash="dot"))
    fig.update_layout(title=f"phase boundaries: {phases.structure}", template="plotly_white", height=400,
                      xaxis_title="layer (0 = embedding output)", yaxis=dict(title="target-language mass"),
                      yaxis2=dict(title="alignment", overlaying="y", side="right"))
    return add_phase_bands(fig, phases)


def phase_section(phases: Phases | None, similarity: pd.DataFrame, recommendation: Recommendation | None,
                  note: str = "") -> ReportSection:
    """The report section: verdict, boundaries with intervals, curves and the recommendation."""
    figures = []
    if not similarity.empty:
        figures += [similarity_curves(similarity, "cosine_gap", phases),
                    similarity_curves(similarity, "retrieval_accuracy", phases)]
    if phases is not None:
        figures.append(phase_curves(phases))
    lines = [note] if note else []
    if phases is not None:
        def show(b, name):
            if b.layer is None:
                return f"{name}: not found"
            return (f"{name}: residual layer {b.layer} (90 % bootstrap interval {b.ci_low:.0f}–{b.ci_high:.0f}, "
                    f"{b.stability:.0%} of resamples within one layer)")
        lines.append(f"Phase structure: {phases.structure}. " + "; ".join(
            [show(phases.align_end, "align → reason"), show(phases.generate_start, "reason → generate")]) + ".")
        lines += phases.reasons
    table = None
    if recommendation is not None:
        lines.append(recommendation.describe())
        table = pd.DataFrame([{"strategy": recommendation.strategy, "layers": ", ".join(map(str, recommendation.layers)),
                               "trainable params": f"{recommendation.trainable_params:,}",
                               "total params": f"{recommendation.total_params:,}",
                               "fraction": f"{recommendation.trainable_fraction:.2%}"}])
    text = ("Hidden states of parallel items are mean-pooled over each item's tokens and centred per layer; the "
            "cosine gap is how much closer an item is to its translation than to other items, retrieval is how "
            "often the nearest item in the other language is the translation (see docs/phases.md).\n\n"
            + "\n\n".join(lines))
    return ReportSection("Phases and the layers to fine-tune", text, figures, table)
