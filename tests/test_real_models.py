"""End-to-end checks on the real zoo models (installed from PyPI by the README's test command)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from lensmap.config.report import parse_config
from lensmap.runs.report import run_report

pytestmark = pytest.mark.real


def test_qwen_report_end_to_end(tmp_path, qwen_handle):
    """On Qwen2.5 0.5B, fr→zh word translation: English leads in the late middle layers, Chinese wins at the end.

    This is the published picture (Wendler et al.; LinguaMap) and the one measured on this
    model with a plain logit lens; the thresholds leave a wide margin around the measured values
    (English word-start ≈ 0.35 vs Chinese ≈ 0.03 at layers 21–22; Chinese ≈ 0.5 at layer 24).
    """
    out = tmp_path / "qwen"
    config = parse_config({
        "model": "qwen2.5-0.5b", "languages": ["en", "fr", "de", "zh"], "dtype": "float32",
        "probes": [{"kind": "translation", "source": "fr", "target": "zh", "n": 16}], "output": str(out),
    })
    run_report(config, progress=False)
    mass = pd.read_csv(out / "language_mass.csv")
    answers = pd.read_csv(out / "answer_probs.csv")
    run = json.loads((out / "run.json").read_text())
    assert run["model"]["self_check_max_abs_diff"] == 0.0
    final = mass[mass.layer == 24].set_index("language")["mass"]
    assert final["zh"] > 0.6 and final["zh"] > 3 * final["en"]
    ws = answers[answers.measure == "word_start"].pivot_table(index="layer", columns="word", values="prob")
    assert (ws.loc[[21, 22], "english"] > 2 * ws.loc[[21, 22], "target"]).all()
    assert ws.loc[24, "target"] > ws.loc[24, "english"]
    assert ws.loc[2:15, "target"].max() < 0.01  # the middle layers do not read as the answer
    assert "report.html" in {p.name for p in out.iterdir()}
    # phases: Chinese takes over only at the very end, so linguamap picks the final blocks within 5 %
    phases = json.loads((out / "phases.json").read_text())
    assert phases["generate_start"]["layer"] in (22, 23, 24)
    rec = json.loads((out / "recommendation.json").read_text())
    assert rec["layers"] and min(rec["layers"]) >= 20 and max(rec["layers"]) == 23
    assert rec["trainable_fraction"] <= 0.05 and rec["model"]["n_layers"] == 24
    sim = pd.read_csv(out / "similarity.csv")
    retrieval = sim.query("metric == 'retrieval_accuracy' and pooling == 'mean'").groupby("layer")["value"].mean()
    assert retrieval.loc[3] > 3 / 60 * 5  # translations are found far above chance (1/60) in the early layers


def test_gemma_zoo_model_self_checks_and_reads_every_layer():
    from lensmap.capture import capture_residuals
    from lensmap.lenses.logit import LogitLens
    from lensmap.models.loading import load_model

    handle = load_model("gemma-3-270m", dtype="float32")
    assert handle.adapter.family == "gemma3" and handle.n_layers == 18 and handle.vocab_size == 262144
    assert handle.info["self_check_max_abs_diff"] < 1e-3
    enc = handle.tokenizer(["Le Japon est un pays d'Asie.", "日本是"], return_tensors="pt", padding=True)
    res = capture_residuals(handle, enc.input_ids, enc.attention_mask, positions="last")
    logits = LogitLens(handle).decode(res.layer(18))
    assert logits.shape == (2, 262144)
    assert handle.tokenizer.decode(logits[1].argmax()).strip() != ""


def _same_frame(got: pd.DataFrame, want: pd.DataFrame, name: str) -> None:
    """Equal up to float32 rounding across CPUs (a changed computation moves these by 1e-3 and more);
    a mean rank over prompts may move by one tied position."""
    assert list(got.columns) == list(want.columns), name
    assert len(got) == len(want), name
    for column in want.columns:
        if pd.api.types.is_numeric_dtype(want[column]):
            pd.testing.assert_series_equal(got[column], want[column], check_dtype=False, rtol=1e-5,
                                           atol=1.0 if column == "rank" else 1e-6, obj=f"{name}:{column}")
        else:
            assert got[column].fillna("").astype(str).tolist() == want[column].fillna("").astype(str).tolist(), \
                f"{name}:{column}"


def test_demo_report_outputs_are_unchanged(tmp_path):
    """`lensmap report examples/demo.yaml` in float32 writes the frames of tests/golden/demo.

    The golden frames are the float32 run of 3 Dec 2026 with the fused lens path; they equal the
    generic path's frames to 7e-7 in mass and 3.4e-4 in entropy (its float32 cancellation). The
    dtype is pinned: ``auto`` is bfloat16 on CPUs with native bf16, which moves every number.
    """
    from pathlib import Path

    from lensmap.config.report import load_config

    golden = Path(__file__).parent / "golden" / "demo"
    repo = Path(__file__).parents[1]
    config = load_config(repo / "examples" / "demo.yaml")
    config.output = str(tmp_path / "demo")
    config.dtype = "float32"
    run_report(config, progress=False)
    for path in sorted(golden.glob("*.csv")):
        _same_frame(pd.read_csv(tmp_path / "demo" / path.name), pd.read_csv(path), path.name)
    for name in ("phases.json", "recommendation.json"):
        assert json.loads((tmp_path / "demo" / name).read_text()) == json.loads((golden / name).read_text()), name
