"""Parallel data, cross-lingual similarity, phase detection and the recommendation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers as tf

from lensmap.analysis.phases import detect_phases
from lensmap.analysis.recommend import cogsym_layers, recommend
from lensmap.data.parallel import (
    ParallelDataError,
    check_parallel,
    cldr_parallel,
    files_parallel,
    table_parallel,
)
from lensmap.errors import LensmapError
from lensmap.metrics.similarity import bootstrap_means, pair_item_stats, similarity_frame
from lensmap.models.handle import ModelHandle
from lensmap.readout.states import sentence_states, start_token_id

# --- parallel data ------------------------------------------------------------------------------

def test_cldr_parallel_is_aligned():
    data = cldr_parallel(["en", "fr", "zh"], n=30)
    assert len(data) == 30 and data.languages == ["en", "fr", "zh"]
    i = data.ids.index("DE") if "DE" in data.ids else None
    if i is not None:
        assert (data.texts["en"][i], data.texts["fr"][i], data.texts["zh"][i]) == ("Germany", "Allemagne", "德国")


def test_bad_parallel_data_gets_clear_errors(tmp_path):
    (tmp_path / "en.txt").write_text("one\ntwo\nthree\n")
    (tmp_path / "fr.txt").write_text("un\ndeux\n")
    with pytest.raises(ParallelDataError, match=r"different numbers of items \{'en': 3, 'fr': 2\}"):
        files_parallel({"en": tmp_path / "en.txt", "fr": tmp_path / "fr.txt"})
    (tmp_path / "fr.txt").write_text("un\n  \ntrois\n")
    with pytest.raises(ParallelDataError, match=r"fr item\(s\) \[2\] are empty or whitespace"):
        files_parallel({"en": tmp_path / "en.txt", "fr": tmp_path / "fr.txt"})
    with pytest.raises(ParallelDataError, match="at least two languages"):
        check_parallel({"en": ["a", "b"]}, "one language")
    with pytest.raises(ParallelDataError, match="1 aligned item"):
        check_parallel({"en": ["a"], "fr": ["b"]}, "tiny")
    (tmp_path / "t.tsv").write_text("en\tde\nhouse\tHaus\ntree\tBaum\n")
    assert table_parallel(tmp_path / "t.tsv").texts == {"en": ["house", "tree"], "de": ["Haus", "Baum"]}
    (tmp_path / "t.jsonl").write_text('{"en": "house", "de": "Haus"}\n{"en": "tree"}\n')
    with pytest.raises(ParallelDataError, match="some items lack de"):
        table_parallel(tmp_path / "t.jsonl")


# --- similarity ---------------------------------------------------------------------------------

def test_pair_stats_on_hand_built_states():
    # 3 items on orthogonal axes; the target language repeats them in a different order for item 2
    src = torch.eye(3)[None]  # [layers=1, n=3, d=3]
    tgt = torch.stack([torch.eye(3)[0], torch.eye(3)[1], torch.tensor([1.0, 1.0, 0.0]) / 2 ** 0.5])[None]
    stats = pair_item_stats(src, tgt)
    assert stats["translation_cosine"][0].tolist() == pytest.approx([1.0, 1.0, 0.0])
    assert stats["other_cosine"][0].tolist() == pytest.approx([(0 + 2 ** -0.5) / 2, (0 + 2 ** -0.5) / 2, 0.0])
    assert stats["retrieval_accuracy"][0].tolist() == [1.0, 1.0, 0.0]  # item 2's nearest target is item 0


def test_centring_removes_a_shared_offset():
    torch.manual_seed(0)
    n, d = 30, 16
    shared = torch.randn(n, d)  # the items' meaning, the same in both languages
    offset = 50 * torch.ones(d)  # anisotropy: a huge common direction at this "layer"
    en = (shared + 0.1 * torch.randn(n, d) + offset)[None]
    fr = (shared + 0.1 * torch.randn(n, d) + offset)[None]
    noise = (torch.randn(n, d) + offset)[None]  # unrelated items with the same offset
    raw = pair_item_stats(en, noise)["translation_cosine"].mean().item()
    assert raw > 0.95  # raw cosine calls unrelated items near-identical
    frame = similarity_frame({"en": {"mean": en, "last": en}, "fr": {"mean": fr, "last": fr},
                              "xx": {"mean": noise, "last": noise}}, n_boot=200)
    gap = frame.query("metric == 'cosine_gap' and pooling == 'mean'").set_index(["source", "target"])["value"]
    assert gap[("en", "fr")] > 0.8 and abs(gap[("en", "xx")]) < 0.15
    retr = frame.query("metric == 'retrieval_accuracy' and pooling == 'mean'").set_index(["source", "target"])["value"]
    assert retr[("en", "fr")] == 1.0 and retr[("en", "xx")] < 0.2
    assert list(frame.columns) == ["model", "source", "target", "layer", "pooling", "metric", "value", "ci_low", "ci_high"]
    assert (frame["ci_low"] <= frame["value"] + 1e-9).all() and (frame["value"] <= frame["ci_high"] + 1e-9).all()


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small, large = rng.normal(0, 1, (1, 20)), rng.normal(0, 1, (1, 2000))
    m, lo, hi = bootstrap_means(small)
    assert lo[0] < m[0] < hi[0]
    _, lo2, hi2 = bootstrap_means(large)
    assert hi2[0] - lo2[0] < (hi[0] - lo[0]) / 5


def test_sentence_states_pool_each_items_own_tokens(qwen_tokenizer):
    torch.manual_seed(0)
    config = tf.Qwen2Config(vocab_size=len(qwen_tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                            num_attention_heads=2, num_key_value_heads=1)
    handle = ModelHandle.wrap(tf.AutoModelForCausalLM.from_config(config).eval(), qwen_tokenizer)
    texts = ["Allemagne", "République centrafricaine du Sud", "德国"]
    batched = sentence_states(handle, texts, batch_size=3)
    for i, text in enumerate(texts):  # one at a time (no padding) gives the same pooled states
        alone = sentence_states(handle, [text], batch_size=1)
        torch.testing.assert_close(batched["mean"][:, i], alone["mean"][:, 0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(batched["last"][:, i], alone["last"][:, 0], rtol=1e-4, atol=1e-5)
    ids = [start_token_id(qwen_tokenizer)] + qwen_tokenizer(texts[1], add_special_tokens=False)["input_ids"]
    with torch.no_grad():  # the item is read after the start token, which is not pooled
        out = handle.model(torch.tensor([ids]), output_hidden_states=True)
    # Hugging Face's last hidden state is after the final norm, so compare layer 1 of 2
    torch.testing.assert_close(batched["mean"][1, 1], out.hidden_states[1][0, 1:].mean(0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(batched["last"][1, 1], out.hidden_states[1][0, -1], rtol=1e-4, atol=1e-5)


# --- phase detection ----------------------------------------------------------------------------

@pytest.mark.parametrize("n_layers", [12, 24, 48, 80])
def test_planted_boundaries_are_found_within_a_layer(n_layers):
    rng = np.random.default_rng(n_layers)
    for align, generate in ((n_layers // 6, n_layers - 2), (n_layers // 4, int(0.75 * n_layers))):
        layers = np.arange(n_layers + 1)[:, None]
        alignment = 0.1 + 0.4 * (layers >= align) + rng.normal(0, 0.15, (n_layers + 1, 40))
        target = 0.02 + 0.4 * (layers >= generate) + rng.normal(0, 0.08, (n_layers + 1, 30))
        phases = detect_phases(alignment, target, n_boot=100)
        assert phases.structure == "three-phase", phases.reasons
        assert abs(phases.align_end.layer - align) <= 1 and abs(phases.generate_start.layer - generate) <= 1
        assert phases.align_end.ci_low <= phases.align_end.layer <= phases.align_end.ci_high


@pytest.mark.parametrize("n_layers", [12, 30, 80])
def test_flat_noise_reports_no_structure(n_layers):
    rng = np.random.default_rng(1)
    phases = detect_phases(0.3 + rng.normal(0, 0.1, (n_layers + 1, 40)), 0.1 + rng.normal(0, 0.05, (n_layers + 1, 30)),
                           n_boot=100)
    assert phases.structure == "none" and phases.align_end.layer is None and phases.generate_start.layer is None
    assert any("no clear alignment rise" in r for r in phases.reasons)


def test_unseparated_boundaries_are_not_called_three_phase():
    rng = np.random.default_rng(2)
    layers = np.arange(25)[:, None]
    alignment = 0.1 + 0.4 * (layers >= 16) + rng.normal(0, 0.1, (25, 40))  # aligns late ...
    target = 0.02 + 0.4 * (layers >= 17) + rng.normal(0, 0.05, (25, 30))  # ... and generates right after
    phases = detect_phases(alignment, target, n_boot=100)
    assert phases.structure == "partial" and any("not separated" in r for r in phases.reasons)


def test_phase_detection_input_errors():
    with pytest.raises(LensmapError, match="same number of layers"):
        detect_phases(np.zeros((10, 20)), np.zeros((12, 20)))
    with pytest.raises(LensmapError, match="at least 5 aligned items"):
        detect_phases(np.zeros((10, 3)), np.zeros((10, 20)))


# --- recommendation -----------------------------------------------------------------------------

def test_cogsym_on_24_layers_is_exactly_the_outer_quarter():
    assert cogsym_layers(24) == [0, 1, 2, 21, 22, 23]
    assert cogsym_layers(18) == [0, 1, 15, 16, 17]  # 25 % of 18 = 4.5 → 5 blocks, the extra one at the end
    assert cogsym_layers(12) == [0, 10, 11]


def _tiny(layers: int) -> ModelHandle:
    torch.manual_seed(0)
    config = tf.Qwen2Config(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                            num_attention_heads=4, num_key_value_heads=2)
    return ModelHandle.wrap(tf.AutoModelForCausalLM.from_config(config), None, name="tiny")


def test_recommendation_counts_the_models_parameters():
    handle = _tiny(24)
    rec = recommend(handle, "cogsym")
    blocks = handle.model.model.layers
    assert rec.layers == [0, 1, 2, 21, 22, 23]
    assert rec.modules == [f"model.layers.{i}." for i in rec.layers]
    assert rec.trainable_params == sum(p.numel() for i in rec.layers for p in blocks[i].parameters())
    assert rec.total_params == sum(p.numel() for p in handle.model.parameters())
    assert rec.trainable_fraction == pytest.approx(rec.trainable_params / rec.total_params)


def test_linguamap_takes_final_blocks_from_the_boundary_within_the_budget():
    handle = _tiny(12)
    rng = np.random.default_rng(0)
    layers = np.arange(13)[:, None]
    phases = detect_phases(0.1 + 0.4 * (layers >= 2) + rng.normal(0, 0.05, (13, 30)),
                           0.02 + 0.5 * (layers >= 9) + rng.normal(0, 0.02, (13, 20)), n_boot=50)
    assert phases.generate_start.layer == 9
    block = sum(p.numel() for p in handle.model.model.layers[0].parameters())
    total = sum(p.numel() for p in handle.model.parameters())
    wide = recommend(handle, "linguamap", phases=phases, budget=1.0)
    assert wide.layers == [8, 9, 10, 11]  # residual layer 9 is block 8's output
    narrow = recommend(handle, "linguamap", phases=phases, budget=2.5 * block / total)
    assert narrow.layers == [10, 11] and any("budget" in n for n in narrow.notes)
    assert narrow.boundaries["generate_start"]["layer"] == 9
    fallback = recommend(handle, "linguamap", phases=None, budget=1.5 * block / total)
    assert fallback.layers == [11] and "No clear generate boundary" in fallback.notes[0]
    with pytest.raises(LensmapError, match=r"layers \[12\] are out of range"):
        recommend(handle, "custom", layers=[3, 12])


def test_report_writes_similarity_phases_and_a_recommendation_sft_accepts(tmp_path, qwen_tokenizer):
    """End to end on a tiny 4-layer model: the files exist, and lensmap sft reads the recommendation."""
    import pandas as pd

    from lensmap.cli import main
    from lensmap.training.selection import from_recommendation

    torch.manual_seed(0)
    config = tf.Qwen2Config(vocab_size=len(qwen_tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=4,
                            num_attention_heads=2, num_key_value_heads=1)
    model = tf.AutoModelForCausalLM.from_config(config)
    model.save_pretrained(tmp_path / "tiny")
    qwen_tokenizer.save_pretrained(tmp_path / "tiny")
    yaml = tmp_path / "r.yaml"
    yaml.write_text(f"model: {tmp_path / 'tiny'}\nlanguages: [en, fr, de]\noutput: {tmp_path / 'out'}\ndtype: float32\n"
                    "probes: [{kind: cloze, target: fr, n: 6}, {kind: translation, source: de, target: fr, n: 6}]\n"
                    "phases: {n: 20, n_boot: 50, phase_boot: 20, strategy: cogsym}\n")
    assert main(["report", str(yaml), "-q"]) == 0
    sim = pd.read_csv(tmp_path / "out" / "similarity.csv")
    assert set(sim["metric"]) == {"translation_cosine", "other_cosine", "cosine_gap", "retrieval_accuracy"}
    assert len(sim) == 6 * 2 * 4 * 5  # ordered pairs × poolings × metrics × residual layers
    rec = json.loads((tmp_path / "out" / "recommendation.json").read_text())
    assert rec["strategy"] == "cogsym" and rec["layers"] == [0, 3] and rec["model"]["n_layers"] == 4
    handle = ModelHandle.wrap(model, qwen_tokenizer)
    chosen = from_recommendation(handle, tmp_path / "out" / "recommendation.json")
    assert chosen.layers == [0, 3] and chosen.trainable_params == rec["trainable_params"]
    assert "Phases and the layers to fine-tune" in (tmp_path / "out" / "report.html").read_text()
