"""The sweep pipeline end to end on a tiny random Qwen2 with the real Qwen tokenizer, and its config."""

from __future__ import annotations

import pytest
import torch
import transformers as tf

from lensmap.config.sweep import PatchingSettings, SweepSettings, parse_sweep_config
from lensmap.errors import ConfigError
from lensmap.frames import columns
from lensmap.models.handle import ModelHandle


@pytest.fixture(scope="module")
def tiny_qwen(qwen_tokenizer):
    torch.manual_seed(0)
    config = tf.Qwen2Config(vocab_size=len(qwen_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                            num_attention_heads=4, num_key_value_heads=2)
    config._attn_implementation = "eager"
    return ModelHandle.wrap(tf.AutoModelForCausalLM.from_config(config).eval(), qwen_tokenizer, name="tiny-qwen")


def test_compute_sweep_frames_and_a_value_by_brute_force(tiny_qwen):
    from lensmap.readout.sweeps import en_answer_task
    from lensmap.runs.sweep import compute_sweep

    settings = SweepSettings(n=3, text_n=2, text_tokens=12, mmlu_n=3, ks=[0, 1, 3], generation_n=2, generation_tokens=3,
                             generation_stride=1, batch_size=2, n_boot=20,
                             patching=PatchingSettings(pairs=["fr-zh"], n=3))
    res = compute_sweep(tiny_qwen, ["fr"], settings, progress=False)
    frame = res.sweep
    assert list(frame.columns) == columns("sweep")
    assert set(frame["metric"]) == {"en_answer_loss", "target_answer_prob", "text_loss", "mmlu_accuracy",
                                    "generation_in_language"}
    assert len(frame) == 5 * 2 * 3  # metrics × directions × ks
    base = frame[frame["k"] == 0].pivot_table(index="metric", columns="direction", values="value")
    assert (base["input"] == base["output"]).all()  # k = 0 is the unchanged model from both sides

    # the English-answer loss of the unchanged model, one prompt at a time, without padding
    task = en_answer_task(tiny_qwen.tokenizer, "fr", 3)
    losses = []
    for item in task.items:
        ids = torch.tensor([item.ids])
        with torch.no_grad():
            logp = torch.log_softmax(tiny_qwen.model(input_ids=ids).logits[0].float(), -1)
        losses.append(float(torch.stack([-logp[pos, tok[0]] for pos, tok in item.reads]).mean()))
    got = frame[(frame["metric"] == "en_answer_loss") & (frame["k"] == 0) & (frame["direction"] == "input")]
    assert got["value"].iloc[0] == pytest.approx(sum(losses) / 3, rel=1e-5)
    assert got["n_items"].iloc[0] == 3
    full_skip = frame[(frame["metric"] == "en_answer_loss") & (frame["k"] == 3) & (frame["direction"] == "input")]
    assert full_skip["value"].iloc[0] != pytest.approx(got["value"].iloc[0])  # the intervention ran
    assert list(res.patching.columns) == columns("patching")
    assert set(res.recommendations) == {"cogsym", "cogsym-fixed", "linguamap"}


def test_sweep_config_checks():
    base = {"model": "qwen2.5-0.5b", "languages": ["fr", "zh"], "output": "out"}
    assert parse_sweep_config(base).sweep.interventions == ["skip"]
    for bad, match in (({"interventions": ["melt"]}, "interventions"), ({"directions": ["up"]}, "directions"),
                       ({"interventions": ["revert"]}, "revert_delta"), ({"patching": {"pairs": ["fr-fr"]}}, "pairs"),
                       ({"budget": 2}, "budget")):
        with pytest.raises(ConfigError, match=match):
            parse_sweep_config({**base, "sweep": bad})


def test_report_config_sweep_section_is_off_unless_written():
    from lensmap.config.report import parse_config

    data = {"model": "qwen2.5-0.5b", "languages": ["en", "fr"], "output": "out",
            "probes": [{"kind": "translation", "source": "fr", "target": "en"}]}
    assert not parse_config(data).sweep.enabled
    assert parse_config({**data, "sweep": {"n": 10}}).sweep.enabled
    with pytest.raises(ConfigError, match="sweep.interventions"):
        parse_config({**data, "sweep": {"interventions": ["melt"]}})


def test_cli_lists_sweep():
    from lensmap.cli.main import COMMANDS

    assert "sweep" in [c.name for c in COMMANDS]


@pytest.mark.real
def test_qwen_skip_suffix_is_the_logit_lens_and_patching_the_last_layer_is_the_source(qwen_handle):
    from lensmap.capture.ablation import Intervention, cache_blocks, intervene
    from lensmap.capture.patching import patched_residual
    from lensmap.models.tokenizers import left_padded

    h = qwen_handle
    with left_padded(h.tokenizer):
        enc = dict(h.tokenizer(["Français: \"Japon\" - English: \"", "Deutsch: \"Spanien\" - 中文: \""],
                               return_tensors="pt", padding=True))
    enc["position_ids"] = (enc["attention_mask"].cumsum(1) - 1).clamp(min=0)
    cache = cache_blocks(h, enc["input_ids"], enc["attention_mask"])  # derives the same position ids
    n = h.n_layers
    for k in (1, 4, n):
        with intervene(h, Intervention("skip", tuple(range(n - k, n)))), torch.no_grad():
            logits = h.model(**enc, use_cache=False).logits
        with torch.no_grad():  # the same [batch, seq] matmul as the model's (BLAS blocking depends on the shape)
            assert torch.equal(logits, h.head(cache.inputs[n - k]))
    last = torch.tensor([enc["input_ids"].shape[1] - 1] * 2)
    swapped = patched_residual(h, cache, n, last, cache.inputs[n][[1, 0], -1])
    with torch.no_grad():
        assert torch.equal(h.head(swapped[:, -1]), h.head(cache.inputs[n][[1, 0], -1]))
