"""The probe driver against Hugging Face's own outputs, and `lensmap report` end to end."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import transformers as tf

from lensmap.cli import main
from lensmap.data.probes import Prompt, translation_probes
from lensmap.models.handle import ModelHandle
from lensmap.readout.probes import run_probes


@pytest.fixture(scope="module")
def tiny_qwen_dir(tmp_path_factory, qwen_tokenizer):
    """A random 2-layer Qwen2 with the real Qwen tokenizer's vocabulary, saved as a local directory."""
    torch.manual_seed(0)
    config = tf.Qwen2Config(vocab_size=len(qwen_tokenizer), hidden_size=32, intermediate_size=64,
                            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                            tie_word_embeddings=False)
    model = tf.AutoModelForCausalLM.from_config(config)
    path = tmp_path_factory.mktemp("models") / "tiny-qwen"
    model.save_pretrained(path)
    qwen_tokenizer.save_pretrained(path)
    return path


def _naive_mass(model, tokenizer, text, weights):
    """HF's hidden_states → final norm (all but the last, already normed) → lm_head → softmax → map."""
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        hs = model(ids, output_hidden_states=True).hidden_states
        rows = [model.model.norm(h[0, -1]) for h in hs[:-1]] + [hs[-1][0, -1]]
        probs = torch.softmax(model.lm_head(torch.stack(rows)).float(), -1)
    return probs @ weights, probs


def test_run_probes_matches_hugging_face(tiny_qwen_dir, qwen_tokenizer):
    model = tf.AutoModelForCausalLM.from_pretrained(tiny_qwen_dir, dtype=torch.float32).eval()
    handle = ModelHandle.wrap(model, qwen_tokenizer, name="tiny")
    g = torch.Generator().manual_seed(0)
    weights = torch.softmax(torch.randn(handle.vocab_size, 3, generator=g) * 3, -1)
    prompts = translation_probes("fr", "zh", n=3, shots=2) + [Prompt("Hello there, how", "free", "", "en")]
    result = run_probes(handle, prompts, weights, ["a", "b", "c"], batch_size=2, vocab_share=[0.2, 0.3, 0.5],
                        progress=False)
    mass = result.mass.pivot_table(index=["probe", "layer"], columns="language", values="mass")
    for probe, group in [("translation fr->zh territories", prompts[:3]), ("free", prompts[3:])]:
        expected = torch.stack([_naive_mass(model, qwen_tokenizer, p.text, weights)[0] for p in group]).mean(0)
        got = torch.tensor(mass.loc[probe][["a", "b", "c"]].to_numpy(), dtype=torch.float32)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    # answer probability at the last layer == the model's own softmax at the answer's first token
    answers = result.answers.set_index(["probe", "layer", "word", "measure"])
    probs = [_naive_mass(model, qwen_tokenizer, p.text, weights)[1][-1] for p in prompts[:3]]
    first = [qwen_tokenizer(p.text + p.answer).input_ids[len(qwen_tokenizer(p.text).input_ids)] for p in prompts[:3]]
    expected = sum(pr[t] for pr, t in zip(probs, first)) / 3
    got = answers.loc[("translation fr->zh territories", 2, "target", "next_token"), "prob"]
    assert got == pytest.approx(expected.item(), rel=1e-4)
    assert set(result.mass["vocab_share"].dropna()) == {0.2, 0.3, 0.5}
    assert (result.stats["entropy"] <= result.stats["max_entropy"] + 1e-4).all()


def test_report_cli_end_to_end_on_tiny_model(tiny_qwen_dir, tmp_path, capsys):
    out = tmp_path / "out"
    config = tmp_path / "c.yaml"
    config.write_text(
        f"model: {tiny_qwen_dir}\nlanguages: [en, fr, de, zh]\ndtype: float32\n"
        "probes:\n  - {kind: translation, source: fr, target: zh, n: 4}\n  - {kind: cloze, target: de, n: 3}\n"
        f"output: {out}\n"
    )
    assert main(["report", str(config), "--quiet"]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"language_mass.csv", "layer_stats.csv", "answer_probs.csv", "prompts.csv", "vocabulary.csv",
            "run.json", "report.html"} <= names
    mass = pd.read_csv(out / "language_mass.csv")
    assert {"model", "probe", "source", "target", "layer", "language", "mass"} <= set(mass.columns)
    totals = mass.groupby(["probe", "layer"])["mass"].sum()
    assert totals.between(1 - 1e-4, 1 + 1e-4).all()
    assert sorted(mass["layer"].unique()) == [0, 1, 2]
    assert set(mass["language"]) == {"en", "fr", "de", "zh", "other", "unk", "neutral", "special"}
    run = json.loads((out / "run.json").read_text())
    assert run["model"]["self_check_max_abs_diff"] < 1e-4
    html = (out / "report.html").read_text()
    assert "translation fr-&gt;zh" in html or "translation fr->zh" in html
    assert not list(tmp_path.glob(".out.*")), "staging directory left behind"


def test_report_fails_cleanly_on_unencodable_answer(tiny_qwen_dir, tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "Say:", "answer": "   "}\n')
    config = tmp_path / "c.yaml"
    config.write_text(f"model: {tiny_qwen_dir}\nlanguages: [en]\nprobes: [{{kind: file, path: {prompts}}}]\n"
                      f"output: {tmp_path / 'out'}\n")
    assert main(["report", str(config), "-q"]) == 2
    assert "lensmap: error:" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
