"""Figures of the language-specific neurons, and the report section that states the findings in words.

All are drawn from the saved frames (``neuron_density.csv``, ``neuron_overlap.csv``,
``deactivation.csv``, ``neuron_similarity.csv``), never from the model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lensmap.figures.html import ReportSection
from lensmap.figures.style import error_band, language_color, language_order
from lensmap.frames import require_columns


def _languages(values) -> list[str]:
    return language_order(list(dict.fromkeys(values)))


def density_heatmap(density: pd.DataFrame) -> go.Figure:
    """Language-specific neurons per block (x) and language (y), as a share of the block's neurons."""
    require_columns(density, "neuron_density", "neuron_density")
    langs = _languages(density["language"])
    grid = density.pivot_table(index="language", columns="block", values="fraction", aggfunc="sum").reindex(langs)
    counts = density.pivot_table(index="language", columns="block", values="n_neurons", aggfunc="sum").reindex(langs)
    fig = go.Figure(go.Heatmap(z=grid.to_numpy() * 100, x=grid.columns, y=langs, colorscale="Blues",
                               customdata=counts.to_numpy(), colorbar=dict(title="% of block"),
                               hovertemplate="block %{x}, %{y}: %{customdata} neurons (%{z:.2f} %)<extra></extra>"))
    fig.update_layout(title="language-specific neurons (LAPE) per decoder block", xaxis_title="decoder block",
                      yaxis_title="language", template="plotly_white", height=360)
    return fig


def density_curves(density: pd.DataFrame) -> go.Figure:
    """One line per language: its neuron count per block."""
    require_columns(density, "neuron_density", "neuron_density")
    fig = go.Figure()
    for lang in _languages(density["language"]):
        part = density[density["language"] == lang].sort_values("block")
        fig.add_scatter(x=part["block"], y=part["n_neurons"], mode="lines+markers", name=lang,
                        line=dict(color=language_color(lang)))
    fig.update_layout(title="language-specific neurons per block", xaxis_title="decoder block",
                      yaxis_title="neurons", template="plotly_white", height=380)
    return fig


def overlap_heatmap(overlap: pd.DataFrame) -> go.Figure:
    """Neurons shared by each pair of languages (diagonal: each language's own count)."""
    require_columns(overlap, "neuron_overlap", "neuron_overlap")
    langs = _languages(overlap["language_a"])
    grid = overlap.pivot_table(index="language_a", columns="language_b", values="n_shared").reindex(index=langs,
                                                                                                     columns=langs)
    jac = overlap.pivot_table(index="language_a", columns="language_b", values="jaccard").reindex(index=langs,
                                                                                                   columns=langs)
    z = grid.to_numpy().astype(float)
    shown = z.copy()
    np.fill_diagonal(shown, np.nan)  # the diagonal (a language's own count) would swamp the colour scale
    fig = go.Figure(go.Heatmap(z=shown, x=langs, y=langs, colorscale="Purples", text=z.astype(int),
                               texttemplate="%{text}", customdata=jac.to_numpy(), colorbar=dict(title="shared"),
                               hovertemplate="%{y} & %{x}: %{text} shared (Jaccard %{customdata:.3f})<extra></extra>"))
    fig.update_layout(title="neurons shared by two languages (diagonal: the language's own count)",
                      template="plotly_white", height=420, yaxis_autorange="reversed")
    return fig


def deactivation_heatmap(deactivation: pd.DataFrame) -> go.Figure:
    """Loss increase when one language's neurons are off (rows) on each language's text (columns), beside the
    random control of the same size and blocks, on one colour scale."""
    require_columns(deactivation, "deactivation", "deactivation")
    langs = _languages(deactivation["language"])
    fig = make_subplots(rows=1, cols=2, subplot_titles=("that language's neurons off", "as many random neurons off"),
                        shared_yaxes=True, horizontal_spacing=0.06)
    top = float(deactivation["loss_increase"].abs().max() or 1.0)
    for col, control in enumerate(("language", "random"), start=1):
        sub = deactivation[deactivation["control"] == control]
        grid = sub.pivot_table(index="neurons_of", columns="language", values="loss_increase").reindex(index=langs,
                                                                                                       columns=langs)
        fig.add_trace(go.Heatmap(z=grid.to_numpy(), x=langs, y=langs, zmin=-top, zmax=top, colorscale="RdBu_r",
                                 texttemplate="%{z:.2f}", showscale=col == 2, colorbar=dict(title="Δ loss (nats)"),
                                 hovertemplate="off: %{y}, text: %{x}: Δ %{z:.3f}<extra></extra>"), row=1, col=col)
    fig.update_yaxes(title_text="whose neurons are off", autorange="reversed", row=1, col=1)
    fig.update_xaxes(title_text="language of the text")
    fig.update_layout(title="next-token loss increase after deactivation", template="plotly_white", height=440)
    return fig


def similarity_curves(similarity: pd.DataFrame) -> go.Figure:
    """Language-region difference and semantic-alignment difference per block, with bootstrap bands."""
    require_columns(similarity, "neuron_similarity", "neuron_similarity")
    fig = go.Figure()
    names = {"region_difference": ("within-language − cross-language", "#d62728"),
             "alignment_difference": ("same meaning − different meaning (cross-language)", "#1f77b4")}
    for metric, (label, color) in names.items():
        part = similarity[similarity["metric"] == metric].sort_values("block")
        if part.empty:
            continue
        fig.add_trace(error_band(part["block"].to_numpy(), part["ci_low"].to_numpy(), part["ci_high"].to_numpy(),
                                 color, label, metric))
        fig.add_scatter(x=part["block"], y=part["value"], mode="lines+markers", name=label, line=dict(color=color),
                        legendgroup=metric)
    fig.update_layout(title="cosine of token-pooled MLP activations (95 % bootstrap band over items)",
                      xaxis_title="decoder block", yaxis_title="cosine difference", template="plotly_white",
                      height=400)
    return fig


# --------------------------------------------------------------------------- findings in words


def _where(density: pd.DataFrame) -> str:
    per_block = density.groupby("block")["n_neurons"].sum()
    n_blocks = len(per_block)
    total = per_block.sum()
    if total == 0:
        return "No language-specific neuron was selected."
    q = max(1, n_blocks // 4)
    first, last = per_block.iloc[:q].sum() / total, per_block.iloc[-q:].sum() / total
    top = per_block.sort_values(ascending=False).index[:3].tolist()
    return (f"The first quarter of the blocks (0–{q - 1}) holds {first:.0%} of the language-specific neurons and the "
            f"last quarter ({n_blocks - q}–{n_blocks - 1}) {last:.0%}; the densest blocks are "
            f"{', '.join(map(str, top))}.")


def _counts(overlap: pd.DataFrame) -> str:
    own = overlap[overlap["language_a"] == overlap["language_b"]].sort_values("n_a")
    counts = ", ".join(f"{r.language_a} {r.n_a}" for r in own.itertuples())
    pairs = overlap[overlap["language_a"] < overlap["language_b"]].sort_values("jaccard", ascending=False)
    best = ", ".join(f"{r.language_a}–{r.language_b} ({r.n_shared}, Jaccard {r.jaccard:.2f})"
                     for r in pairs.head(3).itertuples())
    return f"Neurons per language, fewest first: {counts}. The largest overlaps: {best}."


def _deactivation(deactivation: pd.DataFrame) -> str:
    from lensmap.metrics.neurons import diagonal_dominance

    dom = diagonal_dominance(deactivation)
    if dom.empty:
        return ""
    ok = dom[dom["dominant"]]["neurons_of"].tolist()
    bad = dom[~dom["dominant"]]["neurons_of"].tolist()
    text = (f"Switching a language's neurons off hurts that language more than every other language and more than "
            f"the random control for {len(ok)} of {len(dom)} languages" + (f" ({', '.join(ok)})" if ok else "") + ".")
    if bad:
        text += f" Not for {', '.join(bad)}."
    mean_own = dom["own"].mean()
    mean_rand = dom["random_own"].mean()
    return text + f" Mean own-language loss increase {mean_own:.3f} nats against {mean_rand:.3f} for random neurons."


def _similarity(similarity: pd.DataFrame) -> str:
    parts = []
    for metric, label in (("region_difference", "within-language minus cross-language cosine"),
                          ("alignment_difference", "same-meaning minus different-meaning cosine")):
        part = similarity[similarity["metric"] == metric]
        if part.empty:
            continue
        best = part.loc[part["value"].idxmax()]
        parts.append(f"The {label} peaks at block {int(best.block)} ({best.value:.3f}, 95 % interval "
                     f"{best.ci_low:.3f}–{best.ci_high:.3f}, {int(best.n_items)} items).")
    return " ".join(parts)


def neuron_section(density: pd.DataFrame, overlap: pd.DataFrame, deactivation: pd.DataFrame | None = None,
                   similarity: pd.DataFrame | None = None, settings: dict | None = None) -> ReportSection:
    """The report section: where the neurons sit, which languages share them, what switching them off does."""
    settings = settings or {}
    lines = []
    if settings:
        lines.append(f"LAPE at site {settings.get('site', 'act')}: τ = {settings.get('tau', float('nan')):.4g} "
                     f"(quantile {settings.get('tau_quantile')}), the lowest-entropy {settings.get('fraction', 0):.1%} "
                     f"of {settings.get('n_blocks', '?')} × {settings.get('d_mlp', '?')} neurons: "
                     f"{settings.get('n_selected', '?')} selected.")
    lines += [_where(density), _counts(overlap)]
    figures = [density_heatmap(density), density_curves(density), overlap_heatmap(overlap)]
    if deactivation is not None and not deactivation.empty:
        lines.append(_deactivation(deactivation))
        figures.append(deactivation_heatmap(deactivation))
    if similarity is not None and not similarity.empty:
        lines.append(_similarity(similarity))
        figures.append(similarity_curves(similarity))
    return ReportSection("Language-specific neurons", "\n\n".join(line for line in lines if line), figures)
