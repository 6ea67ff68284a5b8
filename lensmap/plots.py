"""Plotly figures drawn from lensmap's tidy frames (never from a model).

Every function takes one of the saved frames (``mass``, ``stats``, ``answers``), an optional
``model``/``probe`` filter, and returns a :class:`plotly.graph_objects.Figure` that renders
inline in Jupyter and embeds in the HTML report (:mod:`lensmap.report`).

Colours are fixed per language (:func:`language_color`), so English is the same blue in
every figure; the buckets ``other``, ``unk``, ``neutral`` and ``special`` are greys.

A word on honest reading: on small models the logit lens of the middle layers is close to a
uniform distribution over the vocabulary, and then a language's mass is simply its share of
the vocabulary. The figures therefore always show ``vocab_share`` next to the mass (dashed
lines, hover text, or the relative heatmap ``log2(mass / vocab_share)``).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

__all__ = [
    "BUCKETS",
    "LANGUAGE_COLORS",
    "answer_curves",
    "entropy_curve",
    "language_color",
    "language_order",
    "mass_curves",
    "mass_heatmap",
]

#: Non-language buckets of the vocabulary language map, in display order.
BUCKETS: tuple[str, ...] = ("other", "unk", "neutral", "special")

#: Fixed colour per language code; buckets in greys.
LANGUAGE_COLORS: dict[str, str] = {
    "en": "#1f77b4",
    "fr": "#d62728",
    "de": "#ff7f0e",
    "zh": "#2ca02c",
    "es": "#9467bd",
    "it": "#8c564b",
    "pt": "#e377c2",
    "ru": "#17becf",
    "ja": "#bcbd22",
    "ko": "#6a3d9a",
    "ar": "#11a579",
    "hi": "#e68310",
    "ms": "#3969ac",
    "id": "#b8860b",
    "vi": "#80ba5a",
    "tr": "#cf1c90",
    "nl": "#008695",
    "pl": "#a6761d",
    "sv": "#1b9e77",
    "uk": "#4b4bd6",
    "th": "#d95f02",
    "sw": "#66a61e",
    "bn": "#e7298a",
    "fa": "#7570b3",
    "he": "#a50f15",
    "el": "#08519c",
    "other": "#7f7f7f",
    "unk": "#a6a6a6",
    "neutral": "#c7c7c7",
    "special": "#525252",
}

# Colours for language codes missing from LANGUAGE_COLORS, picked by a stable hash.
_FALLBACK_COLORS: tuple[str, ...] = (
    "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd",
    "#31a354", "#756bb1", "#e6550d", "#969c00", "#ad494a", "#0f8b8d",
)

# Colours for lines that are not languages (probes in the entropy figure).
_SERIES_COLORS: tuple[str, ...] = (
    "#222222", "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d",
)

_TARGET_FALLBACK_COLOR = "#333333"

MASS_COLUMNS = ("model", "probe", "layer", "language", "mass", "vocab_share")
STATS_COLUMNS = ("model", "probe", "layer", "entropy", "max_entropy")
ANSWER_COLUMNS = ("model", "probe", "target", "layer", "word", "measure", "prob")


# --------------------------------------------------------------------------- helpers


def language_color(language: str) -> str:
    """Return the fixed hex colour of a language code or bucket (stable across figures)."""
    if language in LANGUAGE_COLORS:
        return LANGUAGE_COLORS[language]
    index = zlib.crc32(str(language).encode("utf-8")) % len(_FALLBACK_COLORS)
    return _FALLBACK_COLORS[index]


def language_order(languages: Iterable[str], preferred: Sequence[str] | None = None) -> list[str]:
    """Order languages for display: configured languages first, then the buckets.

    Configured languages keep the order of ``preferred`` when given (codes absent from
    ``languages`` are skipped), followed by any other configured language in order of first
    appearance; buckets come last in :data:`BUCKETS` order.
    """
    present = list(dict.fromkeys(str(x) for x in languages))
    configured = [x for x in present if x not in BUCKETS]
    ordered = [x for x in (preferred or []) if x in configured]
    ordered += [x for x in configured if x not in ordered]
    return ordered + [b for b in BUCKETS if b in present]


def _rgba(hex_color: str, alpha: float) -> str:
    """Convert ``#rrggbb`` to an ``rgba(...)`` string with the given opacity."""
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def _require_columns(frame: pd.DataFrame | None, columns: Sequence[str], name: str) -> pd.DataFrame:
    """Raise ValueError unless ``frame`` is a DataFrame holding every column in ``columns``."""
    if frame is None:
        raise ValueError(f"no {name} frame was given (got None)")
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"the {name} frame must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"the {name} frame lacks column(s) {missing}; it has {list(frame.columns)}"
        )
    return frame


def _select(
    frame: pd.DataFrame | None,
    columns: Sequence[str],
    name: str,
    *,
    probe: str | None,
    model: str | None,
) -> pd.DataFrame:
    """Check columns, filter by probe/model, and raise ValueError if nothing is left."""
    frame = _require_columns(frame, columns, name)
    if frame.empty:
        raise ValueError(f"the {name} frame is empty")
    sub = frame
    for column, value in (("model", model), ("probe", probe)):
        if value is None:
            continue
        kept = sub[sub[column] == value]
        if kept.empty:
            available = sorted(map(str, sub[column].unique()))
            scope = f" of model {model!r}" if column == "probe" and model is not None else ""
            raise ValueError(
                f"the {name} frame has no rows for {column}={value!r}; "
                f"available {column}s{scope}: {available}"
            )
        sub = kept
    return sub


def _single(sub: pd.DataFrame, column: str, name: str) -> str:
    """Return the one value of ``column`` in ``sub`` or ask the caller to choose one."""
    values = list(dict.fromkeys(sub[column]))
    if len(values) != 1:
        raise ValueError(
            f"the {name} frame holds several {column}s {sorted(map(str, values))}; "
            f"pass {column}=... to choose one"
        )
    return values[0]


def _pair_label(sub: pd.DataFrame) -> str:
    """Describe the source → target direction of a probe, if the frame carries it."""
    if "source" not in sub.columns or "target" not in sub.columns:
        return ""
    pairs = sub[["source", "target"]].fillna("").drop_duplicates()
    if len(pairs) != 1:
        return ""
    source, target = (str(v) for v in pairs.iloc[0])
    if not source and not target:
        return ""
    return f" ({source or '?'} → {target or '?'})"


def _prompt_label(sub: pd.DataFrame) -> str:
    """Return ``", n=K prompts"`` when the frame has one prompt count, else ``""``."""
    if "n_prompts" not in sub.columns:
        return ""
    counts = sub["n_prompts"].dropna().unique()
    return f", n={int(counts[0])} prompts" if len(counts) == 1 else ""


def _check_unique(sub: pd.DataFrame, keys: Sequence[str], name: str) -> None:
    """Raise ValueError when ``keys`` do not identify the rows of ``sub`` uniquely."""
    if sub.duplicated(list(keys)).any():
        raise ValueError(
            f"the {name} frame has several rows per {tuple(keys)} after filtering; "
            "filter it further (e.g. by source/target) before plotting"
        )


def _band(x: np.ndarray, low: np.ndarray, high: np.ndarray, color: str, name: str,
          group: str) -> go.Scatter:
    """A filled polygon between ``low`` and ``high`` (an error band), hidden from the legend."""
    return go.Scatter(
        x=np.concatenate([x, x[::-1]]),
        y=np.concatenate([high, low[::-1]]),
        fill="toself",
        fillcolor=_rgba(color, 0.15),
        line={"width": 0},
        hoverinfo="skip",
        showlegend=False,
        legendgroup=group,
        name=name,
    )


def _layer_axis(fig: go.Figure) -> None:
    """Label the x axis as layers with integer ticks."""
    fig.update_xaxes(title_text="layer (0 = embedding output)", dtick=1 if _few_layers(fig) else None)


def _few_layers(fig: go.Figure) -> bool:
    """True when the figure spans at most 40 layers (then every layer gets a tick)."""
    xs = [np.asarray(t.x, dtype=float) for t in fig.data if getattr(t, "x", None) is not None]
    if not xs:
        return True
    allx = np.concatenate(xs)
    return bool(allx.size == 0 or np.nanmax(allx) - np.nanmin(allx) <= 40)


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
    sub = _select(mass, MASS_COLUMNS, "mass", probe=probe, model=model)
    model_name, probe_name = _single(sub, "model", "mass"), _single(sub, "probe", "mass")
    _check_unique(sub, ("layer", "language"), "mass")
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
        title={"text": f"{what} — {model_name} · {probe_name}{_pair_label(sub)}{_prompt_label(sub)}"},
        yaxis={"title": {"text": "language"}, "autorange": "reversed", "type": "category"},
        height=max(320, 60 + 34 * len(order)),
        template="plotly_white",
        plot_bgcolor="#d9d9d9",  # undefined cells (NaN) show as grey, not as white = 0
    )
    _layer_axis(fig)
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
    sub = _select(mass, MASS_COLUMNS, "mass", probe=probe, model=model)
    model_name, probe_name = _single(sub, "model", "mass"), _single(sub, "probe", "mass")
    _check_unique(sub, ("layer", "language"), "mass")
    order = language_order(pd.unique(sub["language"]), languages)
    if not include_buckets:
        order = [x for x in order if x not in BUCKETS]
    if not order:
        raise ValueError("the mass frame holds only buckets, no configured language to plot")
    fig = go.Figure()
    for lang in order:
        rows = sub[sub["language"] == lang].sort_values("layer")
        x = rows["layer"].to_numpy(dtype=int)
        y = rows["mass"].to_numpy(dtype=float)
        share = rows["vocab_share"].to_numpy(dtype=float)
        color = language_color(lang)
        if band and "mass_std" in rows.columns and rows["mass_std"].notna().any():
            std = rows["mass_std"].fillna(0.0).to_numpy(dtype=float)
            fig.add_trace(_band(x, np.clip(y - std, 0, 1), np.clip(y + std, 0, 1), color,
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
                       f"{probe_name}{_pair_label(sub)}{_prompt_label(sub)}"},
        yaxis={"title": {"text": "probability mass"}, "rangemode": "tozero"},
        legend={"title": {"text": "language"}},
        height=420,
        template="plotly_white",
        hovermode="closest",
    )
    _layer_axis(fig)
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
    sub = _select(stats, STATS_COLUMNS, "stats", probe=probe, model=model)
    _check_unique(sub, ("model", "probe", "layer"), "stats")
    pairs = list(dict.fromkeys(zip(sub["model"], sub["probe"])))
    several_models = sub["model"].nunique() > 1
    fig = go.Figure()
    for i, (model_name, probe_name) in enumerate(pairs):
        rows = sub[(sub["model"] == model_name) & (sub["probe"] == probe_name)].sort_values("layer")
        x = rows["layer"].to_numpy(dtype=int)
        y = rows["entropy"].to_numpy(dtype=float)
        color = _SERIES_COLORS[i % len(_SERIES_COLORS)]
        label = f"{model_name} · {probe_name}" if several_models else str(probe_name)
        if band and "entropy_std" in rows.columns and rows["entropy_std"].notna().any():
            std = rows["entropy_std"].fillna(0.0).to_numpy(dtype=float)
            fig.add_trace(_band(x, np.maximum(y - std, 0), y + std, color, f"{label} ± std", label))
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
    _layer_axis(fig)
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
    sub = _select(answers, ANSWER_COLUMNS, "answers", probe=probe, model=model)
    model_name, probe_name = _single(sub, "model", "answers"), _single(sub, "probe", "answers")
    _check_unique(sub, ("layer", "word", "measure"), "answers")
    target = str(sub["target"].fillna("").iloc[0])
    target_color = (
        language_color(target) if target and target != "en" else _TARGET_FALLBACK_COLOR
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
        raise ValueError(
            "the answers frame has no rows with word in {'target','english'} and measure in "
            "{'word_start','next_token'}"
        )
    fig.update_layout(
        title={"text": f"Answer probability, target vs English — {model_name} · "
                       f"{probe_name}{_pair_label(sub)}{_prompt_label(sub)}"},
        yaxis={"title": {"text": "probability" + (" (log)" if log_y else "")},
               "type": "log" if log_y else "linear",
               # a log axis starts at 1e-6: below that the lens says nothing readable
               **({"range": [-6, 0.05]} if log_y else {})},
        legend={"title": {"text": "solid = word start, dotted = next token"}},
        height=420,
        template="plotly_white",
    )
    _layer_axis(fig)
    return fig
