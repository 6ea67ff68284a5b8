"""One self-contained HTML report built from lensmap's figures.

The page opens offline: plotly.js is inlined exactly once in ``<head>`` and every figure is
embedded as a ``<div>`` plus a small script that draws it. No file, font or script is
fetched from the network. Plain text (headings, paragraphs, summary, tables) is escaped.

>>> from lensmap.figures.backbone import default_sections      # doctest: +SKIP
>>> sections = default_sections(mass, stats, answers)          # doctest: +SKIP
>>> write_report("out/report.html", sections, title="Qwen2.5 0.5B",
...              summary={"model": "qwen2.5-0.5b", "lens": "logit"})  # doctest: +SKIP
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import plotly.offline

from lensmap.io import atomic_write_text

__all__ = ["ReportSection", "render_report", "write_report"]


@dataclass
class ReportSection:
    """One section of the report: a heading, a short explanation, figures and a small table.

    ``text`` is plain text (it is escaped); blank lines separate paragraphs.
    """

    heading: str
    text: str = ""
    figures: list[go.Figure] = field(default_factory=list)
    table: pd.DataFrame | None = None


_CSS = """
:root { --ink: #1d2330; --muted: #5b6475; --line: #d9dee7; --accent: #1f5fa8; --bg: #ffffff; }
* { box-sizing: border-box; }
body { margin: 0; background: #f5f7fa; color: var(--ink);
       font: 16px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 28px 64px; background: var(--bg);
       min-height: 100vh; box-shadow: 0 0 0 1px var(--line); }
h1 { font-size: 1.9rem; margin: 0.2em 0 0.6em; }
h2 { font-size: 1.35rem; margin: 0; padding-top: 0.4em; }
section { border-top: 1px solid var(--line); margin-top: 28px; padding-top: 8px; }
p { max-width: 78ch; margin: 0.6em 0; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
nav.toc { background: #f8fafc; border: 1px solid var(--line); border-radius: 6px;
          padding: 10px 20px; margin: 18px 0; }
nav.toc h2 { font-size: 1.05rem; }
nav.toc ol { margin: 6px 0; padding-left: 1.4em; columns: 2; column-gap: 32px; }
nav.toc li { break-inside: avoid; }
table { border-collapse: collapse; margin: 12px 0; font-size: 0.92rem;
        font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 12px; text-align: left; }
th { background: #eef2f7; font-weight: 600; }
td { vertical-align: top; }
table.summary th { width: 14em; }
.figure { margin: 14px 0; border: 1px solid var(--line); border-radius: 6px; padding: 4px; }
.table-wrap { overflow-x: auto; }
footer { margin-top: 40px; color: var(--muted); font-size: 0.85rem; }
@media print { body { background: #fff; } main { box-shadow: none; } nav.toc ol { columns: 1; } }
"""

_FIGURE_CONFIG = {"displaylogo": False, "responsive": True}


# --------------------------------------------------------------------------- rendering


def _esc(value: object) -> str:
    """Escape any value for HTML text and attribute context."""
    return html.escape(str(value), quote=True)


def _paragraphs(text: str) -> str:
    """Escape plain text and split it into ``<p>`` elements at blank lines."""
    blocks = [" ".join(b.split()) for b in text.replace("\r\n", "\n").split("\n\n")]
    return "\n".join(f"<p>{_esc(b)}</p>" for b in blocks if b)


def _plotly_js() -> str:
    """The full plotly.js bundle, safe to place inside a ``<script>`` element."""
    return plotly.offline.get_plotlyjs().replace("</script", "<\\/script")


def _figure_html(fig: go.Figure, div_id: str) -> str:
    """Embed one figure as a div and a drawing script, without plotly.js itself."""
    if not isinstance(fig, go.Figure):
        raise TypeError(f"report figures must be plotly Figures, got {type(fig).__name__}")
    body = fig.to_html(
        full_html=False, include_plotlyjs=False, div_id=div_id, config=_FIGURE_CONFIG,
        default_height=f"{int(fig.layout.height or 450)}px",
    )
    return f'<div class="figure">{body}</div>'


def _table_html(table: pd.DataFrame) -> str:
    """Render a small DataFrame as an escaped HTML table."""
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"a section table must be a pandas DataFrame, got {type(table).__name__}")
    show_index = not isinstance(table.index, pd.RangeIndex)
    body = table.to_html(
        index=show_index, escape=True, border=0, classes="data", na_rep="–", max_rows=500,
        float_format=lambda v: f"{v:.4g}",
    )
    return f'<div class="table-wrap">{body}</div>'


def _summary_html(summary: Mapping[str, object] | None) -> str:
    """The key/value summary table shown at the top of the page."""
    if not summary:
        return ""
    rows = "\n".join(
        f"<tr><th scope=\"row\">{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in summary.items()
    )
    return f'<table class="summary">\n{rows}\n</table>'


def _toc_html(sections: Sequence[ReportSection]) -> str:
    """Numbered table of contents linking to each section."""
    items = "\n".join(
        f'<li><a href="#section-{i}">{_esc(s.heading)}</a></li>'
        for i, s in enumerate(sections, start=1)
    )
    return f'<nav class="toc"><h2>Contents</h2>\n<ol>\n{items}\n</ol></nav>'


def _section_html(index: int, section: ReportSection) -> str:
    """One ``<section>`` with heading, text, figures and table."""
    parts = [f'<section id="section-{index}">', f"<h2>{index}. {_esc(section.heading)}</h2>"]
    if section.text:
        parts.append(_paragraphs(section.text))
    for j, fig in enumerate(section.figures, start=1):
        parts.append(_figure_html(fig, f"lensmap-fig-{index}-{j}"))
    if section.table is not None:
        parts.append(_table_html(section.table))
    parts.append("</section>")
    return "\n".join(parts)


def render_report(
    sections: list[ReportSection], *, title: str, summary: dict[str, str] | None = None
) -> str:
    """Return the report as one self-contained HTML page (plotly.js inlined once, no URLs).

    The page has the title, the ``summary`` table (model, config, timings, ...), a table of
    contents, then each section. Output is deterministic for the same input.
    """
    body = "\n".join(_section_html(i, s) for i, s in enumerate(sections, start=1))
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n'
        '<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="generator" content="lensmap">\n'
        f"<title>{_esc(title)}</title>\n"
        f"<style>{_CSS}</style>\n"
        '<script type="text/javascript">window.PlotlyConfig = {MathJaxConfig: "local"};</script>\n'
        f'<script type="text/javascript">{_plotly_js()}</script>\n'
        "</head>\n<body>\n<main>\n"
        f"<h1>{_esc(title)}</h1>\n"
        f"{_summary_html(summary)}\n"
        f"{_toc_html(sections)}\n"
        f"{body}\n"
        "<footer>Generated by lensmap. This page is self-contained and works offline.</footer>\n"
        "</main>\n</body>\n</html>\n"
    )


def write_report(
    path: str | os.PathLike,
    sections: list[ReportSection],
    *,
    title: str,
    summary: dict[str, str] | None = None,
) -> Path:
    """Render the report and write it atomically to ``path``; return the path.

    The page is fully rendered before anything is written, and the write goes through a
    temporary file that is renamed into place, so ``path`` is never half-written.
    """
    text = render_report(sections, title=title, summary=summary)
    return atomic_write_text(path, text)
