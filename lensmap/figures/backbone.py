"""The backbone's figures and report sections: language mass, entropy and answer probability per layer.

Every function takes one of the saved frames (``mass``, ``stats``, ``answers``), an optional
``model``/``probe`` filter, and returns a :class:`plotly.graph_objects.Figure` that renders
inline in Jupyter and embeds in the HTML report (:mod:`lensmap.figures.html`). A frame that
lacks what a figure needs raises :class:`~lensmap.errors.FrameError`.

A word on honest reading: on small models the logit lens of the middle layers is close to a
uniform distribution over the vocabulary, and then a language's mass is simply its share of
the vocabulary. The figures therefore always show ``vocab_share`` next to the mass (dashed
lines, hover text, or the relative heatmap ``log2(mass / vocab_share)``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from lensmap.errors import FrameError
from lensmap.figures.html import ReportSection
from lensmap.figures.style import (
    BUCKETS,
    SERIES_COLORS,
    TARGET_FALLBACK_COLOR,
    error_band,
    language_color,
    language_order,
    layer_axis,
    pair_label,
    prompt_label,
)
from lensmap.frames import check_unique, select_rows, single_value

__all__ = ["answer_curves", "default_sections", "entropy_curve", "mass_curves", "mass_heatmap"]
# --------------------------------------------------------------------------- mass


#: Colour range of the relative heatmap, in log2 units (±5 = 32× above or below the share).
RELATIVE_LIMIT = 5.0


def _mass_matrices(sub: pd.DataFrame, order: list[str]) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Pivot mass and vocab_share into ``[language × layer]`` matrices in ``order``."""
    layers = sorted(int(x) for x in sub["layer"].unique())
    mass = sub.pivot(index="language", columns="layer", values="mass")
    share = sub.pivot(index="language", columns="layer", values="vocab_share")
    mass = mass.reindex(index=order, columns=layers).to_numpy(dtype=float)
    share = share.reindex(index=order, columns=layers).to_numpy(dtype=float)
    return layers, mass, share


def _log2_ratio(mass: np.ndarray, share: np.ndarray) -> np.ndarray:
    """``log2(mass / share)`` with NaN where it is undefined (zero mass or zero share)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log2(mass / share)
    out[~np.isfinite(out)] = np.nan
    return out


def mass_heatmap(
    mass: pd.DataFrame,
    *,
    probe: str | None = None,
    model: str | None = None,
    relative: bool = False,
    languages: Sequence[str] | None = None,
) -> go.Figure:
    """Heatmap of per-language probability mass: layers on x, languages on y.

    With ``relative=True`` the colour is ``log2(mass / vocab_share)``, the enrichment over a
    uniform prediction, on a diverging scale centred at 0 (0 = what a uniform prediction
    gives). The hover shows mass, vocabulary share and their ratio in both modes.
    The frame must hold one model and one probe after filtering. ``languages`` optionally
    fixes the order of the configured languages (buckets always come last).
    """
    sub = select_rows(mass, "language_mass", "mass", probe=probe, model=model)
    model_name, probe_name = single_value(sub, "model", "mass"), single_value(sub, "probe", "mass")
    check_unique(sub, ("layer", "language"), "mass")
    order = language_order(pd.unique(sub["language"]), languages)
    layers, m, s = _mass_matrices(sub, order)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = m / s
    log_ratio = _log2_ratio(m, s)
    custom = np.stack([m, s, ratio], axis=-1)
    hover = (
        "layer %{x}<br>language %{y}<br>mass %{customdata[0]:.4f}"
        "<br>vocab share %{customdata[1]:.4f}<br>mass / share %{customdata[2]:.2f}×<extra></extra>"
    )
    if relative:
        # Clip the colour range at ±RELATIVE_LIMIT: a near-zero mass (e.g. at layer 0) would
        # otherwise give log2 ≈ -100 and wash every real preference out to white. The hover
        # still shows the true ratio.
        finite = np.abs(log_ratio[np.isfinite(log_ratio)])
        limit = float(min(RELATIVE_LIMIT, max(1.0, finite.max()))) if finite.size else 1.0
        heat = go.Heatmap(
            z=log_ratio, x=layers, y=order, customdata=custom, hovertemplate=hover,
            colorscale="RdBu_r", zmid=0.0, zmin=-limit, zmax=limit,
            colorbar={"title": {"text": "log2(mass /<br>vocab share)"}},
        )
        what = "Enrichment over vocabulary share, log2(mass / vocab share)"
    else:
        top = float(np.nanmax(m)) if np.isfinite(m).any() else 1.0
        heat = go.Heatmap(
            z=m, x=layers, y=order, customdata=custom, hovertemplate=hover,
            colorscale="Viridis", zmin=0.0, zmax=top if top > 0 else 1.0,
            colorbar={"title": {"text": "mass"}},
        )
        what = "Language mass by layer"
    fig = go.Figure(heat)
    fig.update_layout(
        title={"text": f"{what} — {model_name} · {probe_name}{pair_label(sub)}{prompt_label(sub)}"},
        yaxis={"title": {"text": "language"}, "autorange": "reversed", "type": "category"},
        height=max(320, 60 + 34 * len(order)),
        template="plotly_white",
        plot_bgcolor="#d9d9d9",  # undefined cells (NaN) show as grey, not as white = 0
    )
    layer_axis(fig)
    return fig


def mass_curves(
    mass: pd.DataFrame,
    *,
    probe: str | None = None,
    model: str | None = None,
    band: bool = True,
    include_buckets: bool = False,
    languages: Sequence[str] | None = None,
) -> go.Figure:
    """One line per configured language: mass over layers, and a dashed line at its vocab share.

    The dashed line has the language's colour and shows what a uniform prediction would give.
    With ``band=True`` a shaded band of ± ``mass_std`` (when the column exists) surrounds each
    line. Buckets are left out unless ``include_buckets=True``. The frame must hold one model
    and one probe after filtering.
    """
    sub = select_rows(mass, "language_mass", "mass", probe=probe, model=model)
    model_name, probe_name = single_value(sub, "model", "mass"), single_value(sub, "probe", "mass")
    check_unique(sub, ("layer", "language"), "mass")
    order = language_order(pd.unique(sub["language"]), languages)
    if not include_buckets:
        order = [x for x in order if x not in BUCKETS]
    if not order:
        raise FrameError("the mass frame holds only buckets, no configured language to plot")
    fig = go.Figure()
    for lang in order:
        rows = sub[sub["language"] == lang].sort_values("layer")
        x = rows["layer"].to_numpy(dtype=int)
        y = rows["mass"].to_numpy(dtype=float)
        share = rows["vocab_share"].to_numpy(dtype=float)
        color = language_color(lang)
        if band and "mass_std" in rows.columns and rows["mass_std"].notna().any():
            std = rows["mass_std"].fillna(0.0).to_numpy(dtype=float)
            fig.add_trace(error_band(x, np.clip(y - std, 0, 1), np.clip(y + std, 0, 1), color,
                                f"{lang} ± std", lang))
        fig.add_trace(go.Scatter(
            x=x, y=y, mode="lines+markers", name=lang, legendgroup=lang,
            line={"color": color, "width": 2.5}, marker={"size": 5},
            customdata=np.stack([share], axis=-1),
            hovertemplate=f"{lang}<br>layer %{{x}}<br>mass %{{y:.4f}}"
                          "<br>vocab share %{customdata[0]:.4f}<extra></extra>",
        ))
        fig.add_trace(go.Scatter(
            x=x, y=share, mode="lines", name=f"{lang} vocab share", legendgroup=lang,
            showlegend=False, line={"color": color, "width": 1.5, "dash": "dash"},
            hovertemplate=f"{lang} vocab share %{{y:.4f}}<extra></extra>",
        ))
    fig.update_layout(
        title={"text": f"Language mass vs vocabulary share (dashed) — {model_name} · "
                       f"{probe_name}{pair_label(sub)}{prompt_label(sub)}"},
        yaxis={"title": {"text": "probability mass"}, "rangemode": "tozero"},
        legend={"title": {"text": "language"}},
        height=420,
        template="plotly_white",
        hovermode="closest",
    )
    layer_axis(fig)
    return fig


# --------------------------------------------------------------------------- entropy


def entropy_curve(
    stats: pd.DataFrame,
    *,
    probe: str | None = None,
    model: str | None = None,
    band: bool = True,
) -> go.Figure:
    """Entropy of the lens distribution per layer, one line per (model, probe).

    A dotted horizontal line marks ``max_entropy`` (ln of the vocabulary size), labelled
    "uniform": layers close to it predict almost nothing. With ``band=True`` a band of
    ± ``entropy_std`` surrounds each line when that column exists.
    """
    sub = select_rows(stats, "layer_stats", "stats", probe=probe, model=model)
    check_unique(sub, ("model", "probe", "layer"), "stats")
    pairs = list(dict.fromkeys(zip(sub["model"], sub["probe"])))
    several_models = sub["model"].nunique() > 1
    fig = go.Figure()
    for i, (model_name, probe_name) in enumerate(pairs):
        rows = sub[(sub["model"] == model_name) & (sub["probe"] == probe_name)].sort_values("layer")
        x = rows["layer"].to_numpy(dtype=int)
        y = rows["entropy"].to_numpy(dtype=float)
        color = SERIES_COLORS[i % len(SERIES_COLORS)]
        label = f"{model_name} · {probe_name}" if several_models else str(probe_name)
        if band and "entropy_std" in rows.columns and rows["entropy_std"].notna().any():
            std = rows["entropy_std"].fillna(0.0).to_numpy(dtype=float)
            fig.add_trace(error_band(x, np.maximum(y - std, 0), y + std, color, f"{label} ± std", label))
        fig.add_trace(go.Scatter(
            x=x, y=y, mode="lines+markers", name=label, legendgroup=label,
            line={"color": color, "width": 2.5}, marker={"size": 5},
            hovertemplate=f"{label}<br>layer %{{x}}<br>entropy %{{y:.3f}} nats<extra></extra>",
        ))
    for model_name, rows in sub.groupby("model", sort=False):
        top = float(rows["max_entropy"].max())
        text = f"uniform (ln V = {top:.2f} nats)"
        if several_models:
            text = f"uniform, {model_name} (ln V = {top:.2f})"
        fig.add_hline(y=top, line={"color": "#888888", "dash": "dot", "width": 1.5},
                      annotation_text=text, annotation_position="top left")
    names = ", ".join(dict.fromkeys(map(str, sub["model"])))
    fig.update_layout(
        title={"text": f"Lens entropy by layer — {names}"},
        yaxis={"title": {"text": "entropy (nats)"}, "rangemode": "tozero"},
        legend={"title": {"text": "probe"}},
        height=420,
        template="plotly_white",
    )
    layer_axis(fig)
    return fig


# --------------------------------------------------------------------------- answers

_MEASURE_DASH = {"word_start": "solid", "next_token": "dot"}
_MEASURE_LABEL = {"word_start": "word start", "next_token": "next token"}


def answer_curves(
    answers: pd.DataFrame | None,
    *,
    probe: str | None = None,
    model: str | None = None,
    log_y: bool = False,
) -> go.Figure:
    """Probability of the answer in the target language vs in English, per layer.

    Solid lines show ``word_start`` (all tokens that begin the word), dotted lines
    ``next_token`` (the exact first token; its median rank is in the hover). The target line
    has the target language's colour, the English line English's. ``log_y`` sets a log y axis from 1e-6 to 1.
    The frame must hold one model and one probe after filtering.
    """
    sub = select_rows(answers, "answer_probs", "answers", probe=probe, model=model)
    model_name, probe_name = single_value(sub, "model", "answers"), single_value(sub, "probe", "answers")
    check_unique(sub, ("layer", "word", "measure"), "answers")
    target = str(sub["target"].fillna("").iloc[0])
    target_color = (
        language_color(target) if target and target != "en" else TARGET_FALLBACK_COLOR
    )
    colors = {"target": target_color, "english": language_color("en")}
    labels = {"target": f"target ({target})" if target else "target", "english": "English"}
    fig = go.Figure()
    for word in ("target", "english"):
        for measure in ("word_start", "next_token"):
            rows = sub[(sub["word"] == word) & (sub["measure"] == measure)].sort_values("layer")
            if rows.empty:
                continue
            ranks = (rows["rank"] if "rank" in rows.columns else pd.Series(np.nan, rows.index))
            name = f"{labels[word]} · {_MEASURE_LABEL[measure]}"
            rank_text = "<br>median rank %{customdata[0]:.0f}" if measure == "next_token" else ""
            fig.add_trace(go.Scatter(
                x=rows["layer"].to_numpy(dtype=int), y=rows["prob"].to_numpy(dtype=float),
                mode="lines+markers", name=name, legendgroup=word,
                line={"color": colors[word], "dash": _MEASURE_DASH[measure], "width": 2.2},
                marker={"size": 4},
                customdata=np.stack([ranks.to_numpy(dtype=float)], axis=-1),
                hovertemplate=f"{name}<br>layer %{{x}}<br>p %{{y:.4g}}{rank_text}<extra></extra>",
            ))
    if not fig.data:
        raise FrameError(
            "the answers frame has no rows with word in {'target','english'} and measure in "
            "{'word_start','next_token'}"
        )
    fig.update_layout(
        title={"text": f"Answer probability, target vs English — {model_name} · "
                       f"{probe_name}{pair_label(sub)}{prompt_label(sub)}"},
        yaxis={"title": {"text": "probability" + (" (log)" if log_y else "")},
               "type": "log" if log_y else "linear",
               # a log axis starts at 1e-6: below that the lens says nothing readable
               **({"range": [-6, 0.05]} if log_y else {})},
        legend={"title": {"text": "solid = word start, dotted = next token"}},
        height=420,
        template="plotly_white",
    )
    layer_axis(fig)
    return fig


# --------------------------------------------------------------------------- the report's sections


_INTRO = (
    "Each probe is a set of prompts whose answer is known. The lens decodes the residual "
    "stream after every layer (0 = embedding output, last = final block) into a distribution "
    "over the vocabulary; each token belongs to a language or to a bucket (other, unk, "
    "neutral, special), and a language's mass is the probability that falls on its tokens."
    "\n\n"
    "Read every mass against the language's share of the vocabulary: a uniform prediction "
    "gives each language exactly its vocabulary share. On small models the middle layers "
    "decode to a near-uniform distribution, so a mass close to the vocabulary share there "
    "says nothing about the model. Check the entropy figure of a probe before reading its "
    "middle layers."
)

_TEXT_HEATMAP = (
    "Colour is the share of the lens's probability that falls on each language or bucket; "
    "each column (layer) sums to 1. A bright cell is not yet evidence of a preference: "
    "compare it with the next figure, which divides by the vocabulary share."
)

_TEXT_RELATIVE = (
    "Colour is log2(mass / vocabulary share), the enrichment over a uniform prediction: "
    "0 (white) is what a uniform prediction gives, +1 twice as much, -1 half. Only cells "
    "clearly away from 0, at layers whose entropy is well below uniform, show a real "
    "language preference. Grey cells are undefined (zero mass or zero share)."
)

_TEXT_CURVES = (
    "Solid lines: mass of each configured language per layer, with a band of one standard "
    "deviation across prompts. Dashed line of the same colour: that language's vocabulary "
    "share. A flat curve at the dashed vocabulary-share line is not evidence of anything; "
    "what matters is where a curve leaves its dashed line. The table gives the last layer."
)

_TEXT_ENTROPY = (
    "Entropy of the lens distribution per layer. The dotted line is ln(vocabulary size), "
    "the entropy of a uniform prediction: layers near it decode to almost nothing, so their "
    "language masses reflect the vocabulary, not the model."
)

_TEXT_ANSWERS = (
    "Probability of the known answer in the target language versus its English form. "
    "Solid: total probability of every token that begins the word (tokens shared "
    "by both sets removed); dotted: the exact first token (hover for its median rank). An "
    "English line that rises before the target line suggests English as a pivot; at "
    "near-uniform layers both lines are tiny and carry no signal."
)


def _ranges(values: Sequence[int]) -> str:
    """Format sorted integers compactly: ``[2, 3, 4, 7]`` -> ``"2–4, 7"``."""
    out: list[str] = []
    values = sorted(values)
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        out.append(str(values[i]) if i == j else f"{values[i]}–{values[j]}")
        i = j + 1
    return ", ".join(out)


def _near_uniform_note(rows: pd.DataFrame, fraction: float = 0.9) -> str:
    """A sentence naming the layers whose entropy is at least ``fraction`` of uniform."""
    near = rows.loc[rows["entropy"] >= fraction * rows["max_entropy"], "layer"]
    layers = sorted({int(x) for x in near})
    if not layers:
        return f"No layer of this probe reaches {fraction:.0%} of the uniform entropy."
    return (
        f"Layers at {fraction:.0%} of the uniform entropy or above: {_ranges(layers)}. "
        "Treat their language masses as vocabulary shares."
    )


def _last_layer_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Mass, vocabulary share and enrichment of every language at the last layer."""
    last = rows[rows["layer"] == rows["layer"].max()]
    order = language_order(pd.unique(last["language"]))
    last = last.set_index("language").reindex(order)
    mass = last["mass"].to_numpy(dtype=float)
    share = last["vocab_share"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        enrich = np.log2(mass / share)
    enrich[~np.isfinite(enrich)] = np.nan
    return pd.DataFrame({
        "language": order,
        "bucket": ["yes" if x in BUCKETS else "" for x in order],
        f"mass at layer {int(rows['layer'].max())}": mass,
        "vocab share": share,
        "log2(mass / share)": enrich,
    })


def _probe_table(mass: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, probe): direction, layer count and prompt count."""
    rows = []
    for (model, probe), grp in mass.groupby(["model", "probe"], sort=False):
        rows.append({
            "model": model,
            "probe": probe,
            "source": grp["source"].iloc[0] if "source" in grp else "",
            "target": grp["target"].iloc[0] if "target" in grp else "",
            "layers": f"{int(grp['layer'].min())}–{int(grp['layer'].max())}",
            "prompts": int(grp["n_prompts"].max()) if "n_prompts" in grp else "",
        })
    return pd.DataFrame(rows)


def _has_rows(frame: pd.DataFrame | None, model: str, probe: str) -> bool:
    """True when ``frame`` has rows for this model and probe."""
    if frame is None or frame.empty or not {"model", "probe"} <= set(frame.columns):
        return False
    return bool(((frame["model"] == model) & (frame["probe"] == probe)).any())


def default_sections(
    mass: pd.DataFrame, stats: pd.DataFrame, answers: pd.DataFrame | None = None
) -> list[ReportSection]:
    """Build the standard report: an introduction, then per (model, probe) five sections.

    Per probe: absolute mass heatmap, heatmap relative to vocabulary share, mass curves
    (with a last-layer table), entropy curve, and answer curves when ``answers`` has rows
    for the probe. Each section carries a short text telling the reader how to read it.
    """
    if mass is None or mass.empty:
        raise FrameError("the mass frame is empty: nothing to report")
    sections = [ReportSection("How to read this report", _INTRO, table=_probe_table(mass))]
    several_models = mass["model"].nunique() > 1
    for model, probe in dict.fromkeys(zip(mass["model"], mass["probe"])):
        name = f"{model} · {probe}" if several_models else str(probe)
        rows = mass[(mass["model"] == model) & (mass["probe"] == probe)]
        sections.append(ReportSection(
            f"{name}: language mass by layer", _TEXT_HEATMAP,
            [mass_heatmap(mass, model=model, probe=probe)],
        ))
        sections.append(ReportSection(
            f"{name}: mass relative to vocabulary share", _TEXT_RELATIVE,
            [mass_heatmap(mass, model=model, probe=probe, relative=True)],
        ))
        sections.append(ReportSection(
            f"{name}: mass curves vs vocabulary share", _TEXT_CURVES,
            [mass_curves(mass, model=model, probe=probe)], table=_last_layer_table(rows),
        ))
        if _has_rows(stats, model, probe):
            srows = stats[(stats["model"] == model) & (stats["probe"] == probe)]
            sections.append(ReportSection(
                f"{name}: entropy", f"{_TEXT_ENTROPY}\n\n{_near_uniform_note(srows)}",
                [entropy_curve(stats, model=model, probe=probe)],
            ))
        else:
            sections.append(ReportSection(
                f"{name}: entropy", "No entropy rows were recorded for this probe, so the "
                "near-uniform layers cannot be identified; read the masses with care.",
            ))
        if _has_rows(answers, model, probe):
            sections.append(ReportSection(
                f"{name}: answer probability, target vs English", _TEXT_ANSWERS,
                [answer_curves(answers, model=model, probe=probe)],
            ))
    return sections
