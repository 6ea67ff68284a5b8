"""A model spread over devices (here: CPU and disk offload) gives exactly the unsplit model's readout."""

from __future__ import annotations

import pytest
import torch
import transformers as tf

from lensmap.capture.residuals import capture_residuals
from lensmap.data.probes import cloze_probes
from lensmap.errors import ConfigError, DeviceError
from lensmap.languages.vocab_map import build_vocabulary_map
from lensmap.models.devices import placement
from lensmap.models.loading import load_model
from lensmap.readout.probes import run_probes


@pytest.fixture(scope="module")
def saved(tmp_path_factory, qwen_tokenizer):
    torch.manual_seed(0)
    config = tf.Qwen2Config(vocab_size=len(qwen_tokenizer), hidden_size=16, intermediate_size=32,
                            num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=1)
    path = tmp_path_factory.mktemp("sharded") / "tiny"
    tf.AutoModelForCausalLM.from_config(config).save_pretrained(path)
    qwen_tokenizer.save_pretrained(path)
    return path


def test_cpu_and_disk_offload_read_the_same_numbers(saved, tmp_path):
    whole = load_model(saved, dtype="float32")
    spread = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
              "model.layers.1": "disk", "model.layers.2": "cpu", "model.layers.3": "disk",
              "model.norm": "cpu", "lm_head": "disk"}
    split = load_model(saved, dtype="float32", device_map=spread, offload_folder=tmp_path / "offload")
    assert split.model.model.layers[1].mlp.up_proj.weight.device.type == "meta"  # really offloaded
    assert split.device == torch.device("cpu")
    ids = whole.tokenizer(["Janvier, février, mars,", "un deux"], return_tensors="pt", padding=True)
    a = capture_residuals(whole, ids["input_ids"], ids["attention_mask"], positions="all")
    b = capture_residuals(split, ids["input_ids"], ids["attention_mask"], positions="all")
    assert torch.equal(a.rows, b.rows) and torch.allclose(a.hidden, b.hidden, atol=1e-6)
    assert torch.allclose(whole.head(a.hidden[-1]), split.head(b.hidden[-1]), atol=1e-5)
    vmap = build_vocabulary_map(whole.tokenizer, ["en", "fr"], progress=False)
    prompts = cloze_probes("fr", n=4)
    one = run_probes(whole, prompts, vmap.weights(), vmap.columns(), progress=False)
    two = run_probes(split, prompts, vmap.weights(), vmap.columns(), progress=False)
    left, right = one.mass, two.mass
    assert len(left) and list(left.columns) == list(right.columns)
    assert (left["mass"] - right["mass"]).abs().max() < 1e-5
    numeric = one.stats.select_dtypes("number").columns
    assert len(numeric) and (one.stats[numeric] - two.stats[numeric]).abs().max().max() < 1e-4
    assert split.model.model.layers[1].mlp.up_proj.weight.device.type == "meta"  # offloaded again afterwards
    from lensmap.lenses.logit import LogitLens

    assert LogitLens(split).head_inputs(b.hidden[-1]) is None  # the offloaded unembedding: the generic path
    assert LogitLens(whole).head_inputs(a.hidden[-1]) is not None  # a plain one: the fused path


def test_automatic_placement_under_a_memory_cap(saved, tmp_path):
    capped = load_model(saved, dtype="float32", device_map="auto", max_memory={"cpu": "1MiB"},
                        offload_folder=tmp_path / "offload")
    placed = set(capped.model.hf_device_map.values())
    assert "disk" in placed  # a 1 MiB CPU budget cannot hold the 2.4M-parameter embedding
    whole = load_model(saved, dtype="float32")
    ids = whole.tokenizer(["Lundi, mardi,"], return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(whole.model(**ids).logits, capped.model(**ids).logits, atol=1e-5)


def test_placement_options_are_checked():
    assert placement(None) is None
    assert placement("auto", {"cpu": "2GiB"}, "/tmp/x") == {"device_map": "auto", "max_memory": {"cpu": "2GiB"},
                                                             "offload_folder": "/tmp/x"}
    with pytest.raises(DeviceError, match="need a device_map"):
        placement(None, {"cpu": "2GiB"})
    with pytest.raises(DeviceError, match="max_memory entry 'cuda:0'"):
        placement("auto", {"cuda:0": "20GiB"})  # no GPU here
    from lensmap.config.report import parse_config

    with pytest.raises(ConfigError, match="need a device_map"):
        parse_config({"model": "qwen2.5-0.5b", "languages": ["en", "fr"], "output": "o", "max_memory": {"cpu": "1GiB"},
                      "probes": [{"kind": "cloze", "target": "fr"}]})
