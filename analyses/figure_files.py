"""Saving the analyses' figures: PNG through kaleido when it and a Chromium are installed, else plotly JSON."""

from __future__ import annotations

from pathlib import Path

from lensmap.io import atomic_write_text

FIGURES = Path(__file__).resolve().parents[1] / "figures"


def save_figure(fig, stem: str) -> str:
    """Write ``figures/<stem>.png`` (or ``.json`` without kaleido); return the file name."""
    png = FIGURES / f"{stem}.png"  # not with_suffix: model names hold dots (qwen2.5-0.5b)
    try:
        fig.write_image(str(png), width=1000, height=fig.layout.height or 450, scale=1)
        return png.name
    except Exception:  # no kaleido or no browser: keep the figure as plotly JSON
        return atomic_write_text(png.with_name(f"{stem}.json"), fig.to_json()).name
