"""Figures of a lens evaluation (the ``lens_eval.csv`` frame of :func:`lensmap.lenses.evaluation.evaluate_lenses`).

:func:`lens_eval_curves` draws, per layer, the KL of each lens to the model's final
distribution (log scale) next to its top-1 agreement with the final prediction. Colour is the
language (the same colours as every other lensmap figure), the dash is the lens: solid for the
tuned lens, dotted for the logit lens.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lensmap.errors import FrameError
from lensmap.figures.html import ReportSection, write_report
from lensmap.figures.style import language_color, language_order
from lensmap.frames import require_columns
from lensmap.lenses.evaluation import beats_baseline_everywhere, compare_lenses

__all__ = ["eval_section", "lens_eval_curves", "summary_table", "write_eval_html"]

_DASH = {"tuned": "solid", "logit": "dot"}
_OTHER_DASHES = ("dash", "dashdot", "longdash", "longdashdot")
_METRICS = {
    "kl": ("KL to the final distribution (nats, log scale; 0 at the last layer)", "KL %{y:.3f} nats"),
    "top1_agreement": ("top-1 agreement with the final prediction", "top-1 agreement %{y:.1%}"),
    "entropy": ("entropy of the lens distribution (nats)", "entropy %{y:.2f} nats"),
}


def _dash(lens: str, others: list[str]) -> str:
    if lens in _DASH:
        return _DASH[lens]
    return _OTHER_DASHES[others.index(lens) % len(_OTHER_DASHES)]


def lens_eval_curves(
    frame: pd.DataFrame,
    *,
    model: str | None = None,
    languages: Sequence[str] | None = None,
    metrics: Sequence[str] = ("kl", "top1_agreement"),
) -> go.Figure:
    """Per-layer curves of a lens evaluation: one panel per metric, one line per (language, lens).

    Args:
        frame: the evaluation frame (columns ``model, lens, language, layer, kl,
            top1_agreement`` and optionally ``entropy``, ``n_tokens``).
        model: the model to draw when the frame holds several.
        languages: languages to draw, in this order (default: every language of the frame,
            with the pooled ``all`` drawn in black).
        metrics: panels, from ``kl``, ``top1_agreement`` and ``entropy``.
    """
    require_columns(frame, "lens_eval", "lens evaluation")
    if frame.empty:
        raise FrameError("the lens evaluation frame is empty: nothing to draw")
    bad = [m for m in metrics if m not in _METRICS or m not in frame.columns]
    if not metrics or bad:
        raise FrameError(f"metrics must be among {[m for m in _METRICS if m in frame.columns]}; got {list(metrics)}")
    models = list(dict.fromkeys(frame["model"]))
    if model is None:
        if len(models) > 1:
            raise FrameError(f"the frame holds several models {models}; pick one with model=")
        model = models[0]
    sub = frame[frame["model"] == model]
    if sub.empty:
        raise FrameError(f"no rows for model {model!r}; the frame has {models}")
    present = list(dict.fromkeys(sub["language"]))
    if languages is None:
        languages = language_order([x for x in present if x != "all"]) + (["all"] if "all" in present else [])
    else:
        unknown = [x for x in languages if x not in present]
        if unknown:
            raise FrameError(f"languages {unknown} are not in the frame; it has {present}")
    lens_names = list(dict.fromkeys(sub["lens"]))
    others = [x for x in lens_names if x not in _DASH]
    fig = make_subplots(rows=1, cols=len(metrics), horizontal_spacing=0.09,
                        subplot_titles=[_METRICS[m][0] for m in metrics])
    for col, metric in enumerate(metrics, start=1):
        for lang in languages:
            color = "#111111" if lang == "all" else language_color(lang)
            for lens in lens_names:
                rows = sub[(sub["language"] == lang) & (sub["lens"] == lens)].sort_values("layer")
                if metric == "kl":  # the last layer is the model itself (KL 0): no place on a log axis
                    rows = rows[rows["kl"] > 0]
                if rows.empty:
                    continue
                label = f"{lang} · {lens}"
                fig.add_trace(go.Scatter(
                    x=rows["layer"], y=rows[metric], mode="lines+markers", name=label, legendgroup=label,
                    showlegend=col == 1,
                    line={"color": color, "dash": _dash(lens, others), "width": 3 if lang == "all" else 2},
                    marker={"size": 4},
                    hovertemplate=f"{label}<br>layer %{{x}}<br>{_METRICS[metric][1]}<extra></extra>",
                ), row=1, col=col)
        fig.update_xaxes(title_text="layer", dtick=2 if sub["layer"].max() > 12 else 1, row=1, col=col)
        if metric == "kl":
            fig.update_yaxes(type="log", row=1, col=col)
        elif metric == "top1_agreement":
            fig.update_yaxes(range=[0, 1.02], tickformat=".0%", row=1, col=col)
    n_tokens = ""
    if "n_tokens" in sub.columns:
        per_lang = sub[sub["language"] != "all"].groupby("language")["n_tokens"].max()
        if len(per_lang):
            n_tokens = f" — {int(per_lang.min()):,} held-out tokens per language"
    fig.update_layout(
        title={"text": f"Tuned vs logit lens on held-out text — {model}{n_tokens}"},
        legend={"title": {"text": "language · lens"}},
        height=460, template="plotly_white",
    )
    return fig


def eval_section(frame: pd.DataFrame, lens=None):
    """A report section with the evaluation figure and the per-layer comparison table."""
    table = summary_table(frame)
    verdict = ("The tuned lens has a lower held-out KL than the logit lens at every layer but the last, "
               "in every language." if beats_baseline_everywhere(frame)
               else "The tuned lens does NOT beat the logit lens everywhere: see the `worse in` column.")
    trained = ""
    if lens is not None and lens.info.get("result"):
        r = lens.info["result"]
        trained = (f"\n\nTrained on {r['tokens_per_language']:,} tokens per language "
                   f"({', '.join(r['languages'])}) in {r['steps']} steps, {r['seconds'] / 60:.1f} minutes"
                   + (" (stopped early at the time limit)" if r.get("stopped_early") else "") + ".")
    text = ("KL divergence from the model's final next-token distribution to each lens's distribution, "
            "on held-out text, per layer and language (lower is better; the last layer is the model itself), "
            "and how often the lens's top token is the model's. Solid lines: tuned lens; dotted: logit lens. "
            f"{verdict}{trained}")
    return ReportSection("Tuned lens vs logit lens on held-out text", text, [lens_eval_curves(frame)], table=table)


def write_eval_html(path: Path, frame: pd.DataFrame, lens=None, *, title: str = "") -> None:
    model = str(frame["model"].iloc[0]) if len(frame) else ""
    write_report(path, [eval_section(frame, lens)], title=title or f"Lens evaluation: {model}")


def summary_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per layer: KL of both lenses pooled over languages, and the languages where the tuned lens is worse."""
    side = compare_lenses(frame)
    pooled = side[side["language"] == "all"].set_index("layer")
    worse = (side[(side["language"] != "all") & (side["better"] == False)]  # noqa: E712 - object column
             .groupby("layer")["language"].apply(lambda s: ", ".join(s)))
    table = pd.DataFrame({
        "layer": pooled.index,
        "KL logit": pooled["kl_logit"].round(3).to_numpy(),
        "KL tuned": pooled["kl_tuned"].round(3).to_numpy(),
        "tuned / logit": pooled["ratio"].round(3).to_numpy(),
    })
    table["worse in"] = [worse.get(layer, "") for layer in pooled.index]
    return table
