"""`lensmap neurons` end to end on a tiny model with a real tokenizer and the user's own text files."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import transformers as tf

from lensmap.frames import columns
from lensmap.models.handle import ModelHandle

WORDS = {"en": "the house is green and the river runs to the sea every day",
         "fr": "la maison est verte et la rivière coule vers la mer chaque jour",
         "zh": "房子是绿色的河流每天流向大海我们一起走路看山"}


@pytest.fixture
def files(tmp_path):
    out = {}
    for lang, text in WORDS.items():
        words = text.split() if lang != "zh" else list(text)
        lines = [" ".join(words[i % len(words):] + words[:i % len(words)]) + f" {i}" for i in range(60)]
        path = tmp_path / f"{lang}.txt"
        path.write_text("\n".join(lines), encoding="utf-8")
        out[lang] = str(path)
    return out


@pytest.fixture
def tiny_qwen(qwen_tokenizer):
    torch.manual_seed(0)
    config = tf.Qwen2Config(vocab_size=len(qwen_tokenizer), hidden_size=32, intermediate_size=64,
                            num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2)
    model = tf.AutoModelForCausalLM.from_config(config).eval()
    return ModelHandle.wrap(model, qwen_tokenizer, name="tiny-qwen2")


def test_run_neurons_writes_every_table(tmp_path, files, tiny_qwen, monkeypatch):
    import lensmap.runs.neurons as runs
    from lensmap.cli.main import main
    from lensmap.metrics.neurons import NeuronStats

    monkeypatch.setattr(runs, "load_for", lambda config: tiny_qwen)
    config = tmp_path / "neurons.yaml"
    out = tmp_path / "out"
    files_yaml = ", ".join(f"{k}: {v}" for k, v in files.items())
    config.write_text(f"model: tiny\noutput: {out}\nlanguages: [en, fr, zh]\n"
                      f"neurons: {{source: files, files: {{{files_yaml}}}, tokens: 300, seq_len: 32, "
                      f"heldout_tokens: 64, similarity_items: 8, n_boot: 50, fraction: 0.05}}\n")
    assert main(["neurons", str(config), "-q"]) == 0
    for name in ("language_neurons", "neuron_density", "neuron_overlap", "deactivation", "neuron_similarity",
                 "neuron_stats"):
        frame = pd.read_csv(out / f"{name}.csv")
        assert list(frame.columns) == columns(name), name
    settings = json.loads((out / "neurons.json").read_text())
    assert settings["n_selected"] == round(0.05 * 3 * 64) and settings["tau"] > 0
    deact = pd.read_csv(out / "deactivation.csv")
    assert set(deact["control"]) == {"language", "random"}
    assert len(deact) == 2 * 3 * 3
    both = deact.pivot_table(index=["neurons_of", "language"], columns="control", values="n_neurons")
    assert (both["language"] == both["random"]).all()  # the control switches off as many neurons
    stats = NeuronStats.load(out / "neuron_stats.npz")
    assert stats.languages == ["en", "fr", "zh"] and stats.site == "act"
    assert "Language-specific neurons" in (out / "report.html").read_text()

    # selection again from the saved statistics, no new statistics pass
    monkeypatch.setattr(runs, "analyse_neurons", _spy(runs.analyse_neurons))
    text = config.read_text().replace(f"output: {out}", f"output: {tmp_path / 'again'}")
    config.write_text(text + f"stats: {out / 'neuron_stats.npz'}\n")
    assert main(["neurons", str(config), "-q"]) == 0
    assert runs.analyse_neurons.stats_given
    again = pd.read_csv(tmp_path / "again" / "language_neurons.csv")
    pd.testing.assert_frame_equal(again, pd.read_csv(out / "language_neurons.csv"))


def _spy(fn):
    def wrapped(*args, **kwargs):
        wrapped.stats_given = kwargs.get("stats") is not None
        return fn(*args, **kwargs)
    wrapped.stats_given = False
    return wrapped


def test_neurons_config_errors(tmp_path):
    from lensmap.config.neurons import load_neurons_config
    from lensmap.errors import ConfigError

    path = tmp_path / "c.yaml"
    path.write_text("model: x\noutput: o\nlanguages: [en]\n")
    with pytest.raises(ConfigError, match="at least two languages"):
        load_neurons_config(path)
    path.write_text("model: x\noutput: o\nlanguages: [en, fr]\nneurons: {site: mlp}\n")
    with pytest.raises(Exception, match="site must be one of"):
        load_neurons_config(path)
    path.write_text("model: x\noutput: o\nlanguages: [en, fr]\nneurons: {fraction: 2}\n")
    with pytest.raises(ConfigError, match="fraction"):
        load_neurons_config(path)


def test_report_with_a_neurons_section_and_strategy_neurons(tmp_path, files, qwen_tokenizer):
    from lensmap.cli.main import main

    torch.manual_seed(0)
    config = tf.Qwen2Config(vocab_size=len(qwen_tokenizer), hidden_size=32, intermediate_size=64,
                            num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2)
    tf.AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "tiny")
    qwen_tokenizer.save_pretrained(tmp_path / "tiny")
    out = tmp_path / "report"
    files_yaml = ", ".join(f"{k}: {v}" for k, v in files.items() if k != "zh")
    path = tmp_path / "report.yaml"
    path.write_text(f"model: {tmp_path / 'tiny'}\nlanguages: [en, fr]\nprobes: [{{kind: cloze, target: fr, n: 3}}]\n"
                    f"output: {out}\ndtype: float32\nphases: {{strategy: neurons, budget: 0.5}}\n"
                    f"neurons: {{source: files, files: {{{files_yaml}}}, tokens: 200, seq_len: 32, "
                    f"heldout_tokens: 32, similarity: false, n_boot: 20, fraction: 0.05}}\n")
    assert main(["report", str(path), "-q"]) == 0
    density = pd.read_csv(out / "neuron_density.csv")
    rec = json.loads((out / "recommendation.json").read_text())
    assert rec["strategy"] == "neurons"
    fr = density[density.language == "fr"].groupby("block")["n_neurons"].sum()
    assert fr.idxmax() in rec["layers"]  # the densest block of the target language is chosen
    assert "Language-specific neurons" in (out / "report.html").read_text()

    from lensmap.config.report import parse_config
    from lensmap.errors import ConfigError

    with pytest.raises(ConfigError, match="strategy: neurons needs"):
        parse_config({"model": "x", "languages": ["en", "fr"], "output": "o",
                      "probes": [{"kind": "cloze", "target": "fr"}], "phases": {"strategy": "neurons"}})
