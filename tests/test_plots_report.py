"""Tests for lensmap.plots and lensmap.report on small synthetic frames (no model, no network)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.offline
import pytest

from lensmap.figures.backbone import (
    BUCKETS,
    answer_curves,
    default_sections,
    entropy_curve,
    language_color,
    mass_curves,
    mass_heatmap,
)
from lensmap.figures.html import ReportSection, render_report, write_report

MODEL = "tiny-model"
PROBES = {"translate_fr_zh": ("fr", "zh"), "cloze_en_fr": ("en", "fr")}
LANGS = ["en", "fr", "zh"]
ALL = LANGS + list(BUCKETS)
LAYERS = range(5)
SHARES = {"en": 0.30, "fr": 0.10, "zh": 0.20, "other": 0.15, "unk": 0.15, "neutral": 0.05,
          "special": 0.05}
MAX_ENTROPY = math.log(5000)
# fraction of the uniform entropy per layer: near-uniform at layers 0-2, then sharper
ENTROPY_FRACTION = [0.97, 0.95, 0.93, 0.6, 0.3]


def _mass_frame(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for probe, (src, tgt) in PROBES.items():
        for layer in LAYERS:
            masses = rng.dirichlet(np.ones(len(ALL)))
            for lang, m in zip(ALL, masses):
                rows.append({
                    "model": MODEL, "probe": probe, "source": src, "target": tgt, "layer": layer,
                    "language": lang, "mass": float(m), "mass_std": float(m) / 10,
                    "vocab_share": SHARES[lang], "n_prompts": 8,
                })
    return pd.DataFrame(rows)


def _stats_frame() -> pd.DataFrame:
    rows = []
    for k, (probe, (src, tgt)) in enumerate(PROBES.items()):
        for layer in LAYERS:
            rows.append({
                "model": MODEL, "probe": probe, "source": src, "target": tgt, "layer": layer,
                "entropy": MAX_ENTROPY * (ENTROPY_FRACTION[layer] - 0.01 * k), "entropy_std": 0.1,
                "max_entropy": MAX_ENTROPY, "n_prompts": 8,
            })
    return pd.DataFrame(rows)


def _answers_frame() -> pd.DataFrame:
    rows = []
    for k, (probe, (src, tgt)) in enumerate(PROBES.items()):
        for layer in LAYERS:
            for w, word in enumerate(("target", "english")):
                for measure in ("next_token", "word_start"):
                    p = 10.0 ** (-4 + layer * 0.7 - w * 0.3 - k * 0.1)
                    p = p * (2 if measure == "word_start" else 1)
                    rows.append({
                        "model": MODEL, "probe": probe, "source": src, "target": tgt,
                        "layer": layer, "word": word, "measure": measure, "prob": min(p, 1.0),
                        "prob_std": 0.0,
                        "rank": float(100 - 20 * layer) if measure == "next_token" else np.nan,
                        "n_prompts": 8,
                    })
    return pd.DataFrame(rows)


@pytest.fixture
def mass() -> pd.DataFrame:
    return _mass_frame()


@pytest.fixture
def stats() -> pd.DataFrame:
    return _stats_frame()


@pytest.fixture
def answers() -> pd.DataFrame:
    return _answers_frame()


def _value(frame: pd.DataFrame, probe: str, layer: int, language: str, column: str) -> float:
    hit = frame[(frame.probe == probe) & (frame.layer == layer) & (frame.language == language)]
    assert len(hit) == 1
    return float(hit[column].iloc[0])


def _by_name(fig: go.Figure, name: str) -> go.BaseTraceType:
    hits = [t for t in fig.data if t.name == name]
    assert len(hits) == 1, f"expected one trace named {name!r}, got {[t.name for t in fig.data]}"
    return hits[0]


# --------------------------------------------------------------------------- frames


def test_synthetic_masses_sum_to_one(mass):
    sums = mass.groupby(["model", "probe", "layer"])["mass"].sum()
    assert np.allclose(sums, 1.0)
    assert math.isclose(sum(SHARES.values()), 1.0)


# --------------------------------------------------------------------------- heatmap


def test_heatmap_matrix_matches_frame_in_order(mass):
    probe = "translate_fr_zh"
    fig = mass_heatmap(mass, probe=probe)
    heat = fig.data[0]
    assert list(heat.y) == ALL  # configured languages first, then buckets in order
    assert [int(x) for x in heat.x] == list(LAYERS)
    z = np.asarray(heat.z, dtype=float)
    expected = np.array([[_value(mass, probe, layer, lang, "mass") for layer in LAYERS]
                         for lang in ALL])
    np.testing.assert_allclose(z, expected)
    np.testing.assert_allclose(z.sum(axis=0), 1.0)
    title = fig.layout.title.text
    assert MODEL in title and probe in title


def test_heatmap_is_independent_of_row_order_and_follows_languages(mass):
    probe = "cloze_en_fr"
    shuffled = mass.sample(frac=1.0, random_state=3).reset_index(drop=True)
    order = ["zh", "en", "fr"]
    heat = mass_heatmap(shuffled, probe=probe, languages=order).data[0]
    assert list(heat.y) == order + list(BUCKETS)
    z = np.asarray(heat.z, dtype=float)
    assert z[0, 3] == pytest.approx(_value(mass, probe, 3, "zh", "mass"))
    assert z[-1, 4] == pytest.approx(_value(mass, probe, 4, "special", "mass"))


def test_relative_heatmap_is_log2_enrichment(mass):
    probe = "translate_fr_zh"
    fig = mass_heatmap(mass, probe=probe, relative=True)
    heat = fig.data[0]
    z = np.asarray(heat.z, dtype=float)
    m = _value(mass, probe, 2, "fr", "mass")
    by_hand = math.log2(m / 0.10)
    assert z[ALL.index("fr"), 2] == pytest.approx(by_hand)
    assert heat.zmid == 0
    assert heat.zmin == -heat.zmax
    # hover data carries mass, vocab share and ratio
    custom = np.asarray(heat.customdata, dtype=float)
    assert custom[ALL.index("fr"), 2].tolist() == pytest.approx([m, 0.10, m / 0.10])
    assert "vocab share" in heat.hovertemplate and "mass / share" in heat.hovertemplate


def test_relative_heatmap_zero_mass_is_undefined_not_infinite(mass):
    probe = "translate_fr_zh"
    zeroed = mass.copy()
    hit = (zeroed.probe == probe) & (zeroed.layer == 1) & (zeroed.language == "zh")
    zeroed.loc[hit, "mass"] = 0.0
    z = np.asarray(mass_heatmap(zeroed, probe=probe, relative=True).data[0].z, dtype=float)
    assert np.isnan(z[ALL.index("zh"), 1])
    assert np.isfinite(np.delete(z.ravel(), ALL.index("zh") * 5 + 1)).all()


def test_probe_filter_selects_that_probe(mass):
    a = np.asarray(mass_heatmap(mass, probe="translate_fr_zh").data[0].z, dtype=float)
    b = np.asarray(mass_heatmap(mass, probe="cloze_en_fr").data[0].z, dtype=float)
    assert not np.allclose(a, b)
    assert b[ALL.index("en"), 0] == pytest.approx(_value(mass, "cloze_en_fr", 0, "en", "mass"))


def test_several_probes_without_filter_raise(mass):
    with pytest.raises(ValueError, match="probe"):
        mass_heatmap(mass)
    one = mass[mass.probe == "cloze_en_fr"]
    assert isinstance(mass_heatmap(one), go.Figure)


@pytest.mark.parametrize("plot", [mass_heatmap, mass_curves])
def test_unknown_probe_raises_naming_it(mass, plot):
    with pytest.raises(ValueError, match="no_such_probe") as err:
        plot(mass, probe="no_such_probe")
    assert "translate_fr_zh" in str(err.value)  # lists what is available


def test_unknown_model_raises(mass):
    with pytest.raises(ValueError, match="other-model"):
        mass_heatmap(mass, model="other-model", probe="cloze_en_fr")


def test_missing_column_raises(mass):
    with pytest.raises(ValueError, match="vocab_share"):
        mass_heatmap(mass.drop(columns=["vocab_share"]), probe="cloze_en_fr")


def test_duplicate_rows_raise(mass):
    doubled = pd.concat([mass, mass])
    with pytest.raises(ValueError, match="several rows"):
        mass_heatmap(doubled, probe="cloze_en_fr")


# --------------------------------------------------------------------------- curves


def test_mass_curves_lines_and_vocab_share(mass):
    probe = "translate_fr_zh"
    fig = mass_curves(mass, probe=probe)
    names = [t.name for t in fig.data]
    for bucket in BUCKETS:
        assert bucket not in names
    for lang in LANGS:
        line = _by_name(fig, lang)
        share = _by_name(fig, f"{lang} vocab share")
        assert list(line.y) == pytest.approx([_value(mass, probe, la, lang, "mass")
                                              for la in LAYERS])
        assert list(share.y) == pytest.approx([SHARES[lang]] * 5)
        assert share.line.dash == "dash"
        assert line.line.color == share.line.color == language_color(lang)
        band = _by_name(fig, f"{lang} ± std")
        assert band.fill == "toself"
        top = [_value(mass, probe, la, lang, "mass") * 1.1 for la in LAYERS]
        assert list(band.y[:5]) == pytest.approx(top)


def test_mass_curves_without_band(mass):
    fig = mass_curves(mass, probe="cloze_en_fr", band=False)
    assert len(fig.data) == 2 * len(LANGS)


def test_language_colours_fixed_and_buckets_grey():
    assert language_color("en") != language_color("fr")
    assert language_color("xx") == language_color("xx")
    for bucket in BUCKETS:
        r, g, b = (int(language_color(bucket)[i:i + 2], 16) for i in (1, 3, 5))
        assert r == g == b


def test_entropy_curve(stats):
    fig = entropy_curve(stats)
    lines = [t for t in fig.data if t.fill is None]
    assert [t.name for t in lines] == list(PROBES)
    for line in lines:
        expected = stats[stats.probe == line.name].sort_values("layer")["entropy"]
        assert list(line.y) == pytest.approx(expected.tolist())
    assert len(fig.layout.shapes) == 1
    assert fig.layout.shapes[0].y0 == pytest.approx(MAX_ENTROPY)
    assert any("uniform" in a.text for a in fig.layout.annotations)


def test_entropy_curve_probe_filter(stats):
    fig = entropy_curve(stats, probe="cloze_en_fr", band=False)
    assert [t.name for t in fig.data] == ["cloze_en_fr"]
    with pytest.raises(ValueError, match="nope"):
        entropy_curve(stats, probe="nope")


def test_answer_curves(answers):
    probe = "translate_fr_zh"
    fig = answer_curves(answers, probe=probe, log_y=True)
    assert fig.layout.yaxis.type == "log"
    assert len(fig.data) == 4
    for trace in fig.data:
        word = "target" if trace.name.startswith("target") else "english"
        measure = "word_start" if "word start" in trace.name else "next_token"
        rows = answers[(answers.probe == probe) & (answers.word == word)
                       & (answers.measure == measure)].sort_values("layer")
        assert list(trace.y) == pytest.approx(rows["prob"].tolist())
        assert trace.line.dash == ("solid" if measure == "word_start" else "dot")
    target = _by_name(fig, "target (zh) · word start")
    english = _by_name(fig, "English · next token")
    assert target.line.color == language_color("zh")
    assert english.line.color == language_color("en")
    assert answer_curves(answers, probe=probe).layout.yaxis.type == "linear"


def test_answer_curves_empty_or_missing(answers):
    with pytest.raises(ValueError, match="nope"):
        answer_curves(answers, probe="nope")
    with pytest.raises(ValueError):
        answer_curves(answers.iloc[0:0], probe="translate_fr_zh")
    with pytest.raises(ValueError):
        answer_curves(None)


# --------------------------------------------------------------------------- report

PLOTLY_BANNER = "* plotly.js v"


def _outside_plotly_js(page: str) -> str:
    js = plotly.offline.get_plotlyjs()
    assert page.count(js) == 1
    return page.replace(js, "")


def test_report_is_self_contained(mass, stats, answers):
    sections = default_sections(mass, stats, answers)
    page = render_report(sections, title="Tiny report", summary={"model": MODEL})
    assert page.count(PLOTLY_BANNER) == 1
    assert page.count(plotly.offline.get_plotlyjs()[-2000:]) == 1
    assert '<meta charset="utf-8">' in page
    assert not re.search(r"""src\s*=\s*["']?(https?:)?//""", page, re.I)
    assert "<link" not in page.lower()
    # plotly.js itself holds default URLs (geo topojson, map icons) that plain charts never
    # fetch; everything lensmap writes around it must be free of URLs.
    rest = _outside_plotly_js(page)
    assert "https://cdn" not in rest
    assert not re.search(r"https?://", rest)
    assert page.count("Plotly.newPlot(") == sum(len(s.figures) for s in sections)
    for section in sections:
        assert section.heading.replace("&", "&amp;") in page


def test_default_sections_structure(mass, stats, answers):
    with_answers = default_sections(mass, stats, answers)
    without = default_sections(mass, stats)
    assert len(with_answers) == 1 + 5 * len(PROBES)
    assert len(without) == 1 + 4 * len(PROBES)
    for section in with_answers:
        assert section.text
    headings = " | ".join(s.heading for s in with_answers)
    for probe in PROBES:
        assert f"{probe}: answer probability" in headings
        assert f"{probe}: mass relative to vocabulary share" in headings
    curves = next(s for s in with_answers if "mass curves" in s.heading)
    assert "not evidence of anything" in curves.text
    assert curves.table is not None and list(curves.table["language"]) == ALL
    entropy = next(s for s in with_answers if s.heading.endswith("entropy"))
    assert "uniform entropy or above: 0–2." in entropy.text  # see ENTROPY_FRACTION


def test_report_escapes_text_and_orders_parts():
    fig = go.Figure(go.Scatter(x=[0, 1], y=[1, 2], name="</script><b>x"))
    sections = [
        ReportSection("Alpha <section>", "a < b & <script>alert(1)</script>", [fig],
                      table=pd.DataFrame({"col<1>": ["<i>v</i>"], "x": [0.123456]})),
        ReportSection("Beta", "second"),
    ]
    page = render_report(sections, title="T <1>", summary={"config": "<cfg>", "time": "3 s"})
    rest = _outside_plotly_js(page)
    assert "a &lt; b &amp; &lt;script&gt;alert(1)&lt;/script&gt;" in rest
    assert "<script>alert" not in rest
    assert "Alpha &lt;section&gt;" in rest and "<title>T &lt;1&gt;</title>" in rest
    assert "&lt;i&gt;v&lt;/i&gt;" in rest and "col&lt;1&gt;" in rest and "0.1235" in rest
    assert "&lt;cfg&gt;" in rest
    assert rest.count("</script>") == rest.count("<script")
    assert rest.index("&lt;cfg&gt;") < rest.index('href="#section-1"') < rest.index(
        'id="section-1"') < rest.index('id="section-2"')


def test_report_is_deterministic():
    sections = [ReportSection("A", "x", [go.Figure(go.Bar(x=[1], y=[2]))])]
    assert render_report(sections, title="t") == render_report(sections, title="t")


def test_write_report_atomic(tmp_path: Path, mass, stats):
    out = tmp_path / "sub" / "report.html"
    written = write_report(out, default_sections(mass, stats), title="R", summary={"a": "b"})
    assert written == out and out.is_file()
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.count(PLOTLY_BANNER) == 1

    # A failing render leaves the old file untouched and no temporary file behind.
    before = out.read_bytes()
    with pytest.raises(TypeError):
        write_report(out, [ReportSection("bad", figures=["not a figure"])], title="R")
    assert out.read_bytes() == before
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]


def test_relative_heatmap_colour_range_is_clipped(mass):
    from lensmap.figures.backbone import RELATIVE_LIMIT

    sub = mass[mass["probe"] == mass["probe"].iloc[0]].copy()
    sub.loc[sub.index[0], "mass"] = 1e-30  # log2 ratio near -100 must not set the colour range
    heat = mass_heatmap(sub, relative=True).data[0]
    assert heat.zmin == -RELATIVE_LIMIT and heat.zmax == RELATIVE_LIMIT
    assert np.nanmin(np.asarray(heat.z, dtype=float)) < -90  # the data keep the true value
