"""Shared look of every lensmap figure: fixed colours per language, display order, bands, layer axes.

Colours are fixed per language (:func:`language_color`), so English is the same blue in
every figure; the buckets ``other``, ``unk``, ``neutral`` and ``special`` are greys.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

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
FALLBACK_COLORS: tuple[str, ...] = (
    "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd",
    "#31a354", "#756bb1", "#e6550d", "#969c00", "#ad494a", "#0f8b8d",
)

# Colours for lines that are not languages (probes in the entropy figure).
SERIES_COLORS: tuple[str, ...] = (
    "#222222", "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d",
)

TARGET_FALLBACK_COLOR = "#333333"



def language_color(language: str) -> str:
    """Return the fixed hex colour of a language code or bucket (stable across figures)."""
    if language in LANGUAGE_COLORS:
        return LANGUAGE_COLORS[language]
    index = zlib.crc32(str(language).encode("utf-8")) % len(FALLBACK_COLORS)
    return FALLBACK_COLORS[index]


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


def rgba(hex_color: str, alpha: float) -> str:
    """Convert ``#rrggbb`` to an ``rgba(...)`` string with the given opacity."""
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def pair_label(sub: pd.DataFrame) -> str:
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


def prompt_label(sub: pd.DataFrame) -> str:
    """Return ``", n=K prompts"`` when the frame has one prompt count, else ``""``."""
    if "n_prompts" not in sub.columns:
        return ""
    counts = sub["n_prompts"].dropna().unique()
    return f", n={int(counts[0])} prompts" if len(counts) == 1 else ""


def error_band(x: np.ndarray, low: np.ndarray, high: np.ndarray, color: str, name: str,
          group: str) -> go.Scatter:
    """A filled polygon between ``low`` and ``high`` (an error band), hidden from the legend."""
    return go.Scatter(
        x=np.concatenate([x, x[::-1]]),
        y=np.concatenate([high, low[::-1]]),
        fill="toself",
        fillcolor=rgba(color, 0.15),
        line={"width": 0},
        hoverinfo="skip",
        showlegend=False,
        legendgroup=group,
        name=name,
    )


def layer_axis(fig: go.Figure) -> None:
    """Label the x axis as layers with integer ticks."""
    fig.update_xaxes(title_text="layer (0 = embedding output)", dtick=1 if few_layers(fig) else None)


def few_layers(fig: go.Figure) -> bool:
    """True when the figure spans at most 40 layers (then every layer gets a tick)."""
    xs = [np.asarray(t.x, dtype=float) for t in fig.data if getattr(t, "x", None) is not None]
    if not xs:
        return True
    allx = np.concatenate(xs)
    return bool(allx.size == 0 or np.nanmax(allx) - np.nanmin(allx) <= 40)
