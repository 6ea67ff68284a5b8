"""Memory plans: exact parameter counts from configs, the formulas by hand, the device_map advice."""

from __future__ import annotations

import json

import pytest
from conftest import tiny_model

from lensmap.cli import main
from lensmap.errors import ModelLoadError
from lensmap.models.plan import (
    GIB,
    LENS_CHUNK_BYTES,
    PlanSettings,
    device_map_advice,
    load_shape,
    plan,
    shape_from_config,
)


@pytest.mark.parametrize("name, params", [
    ("llama-2-7b", 6_738_415_616), ("llama-2-13b", 13_015_864_320), ("bloom-7b1", 7_069_016_064),
    ("qwen2.5-7b", 7_615_616_512), ("qwen3-32b", 32_762_123_264),
])
def test_preset_parameter_counts_are_the_published_ones(name, params):
    assert load_shape(name).params == params


@pytest.mark.parametrize("arch", ["qwen2", "gemma3", "bloom", "gpt2"])
def test_meta_count_equals_the_real_models(arch, tmp_path):
    model = tiny_model(arch)
    shape = shape_from_config(model.config)
    assert shape.params == sum(p.numel() for p in model.parameters())
    blocks = model.transformer.h if hasattr(model, "transformer") else model.model.layers
    assert shape.block_params == sum(p.numel() for p in blocks[0].parameters())
    model.config.save_pretrained(tmp_path)  # config.json alone, no weights
    assert load_shape(str(tmp_path / "config.json")).params == shape.params


def test_plan_rows_by_hand():
    shape = load_shape("llama-2-7b")
    rows = {(r["command"], r["layout"]): r["GiB_per_device"] for r in plan(shape, PlanSettings(gpus=4))}
    forward = 8 * 512 * (3 * 11008 + 4 * 4096) * 2 + 8 * 32 * 512 ** 2 * 2 + LENS_CHUNK_BYTES + 32000 * 64
    assert rows[("report / neurons / sweep", "one device")] == round((shape.params * 2 + forward) / GIB, 1)
    assert rows[("report / neurons / sweep", "device_map over 4 GPU(s)")] == round(
        (shape.params * 2 / 4 + forward) / GIB, 1)
    assert rows[("sft full", "FSDP / ZeRO-3 over 4 GPU(s)")] < rows[("sft full", "one device (DDP: each GPU)")]
    assert rows[("sft selective", "one device (DDP: each GPU)")] < rows[("sft full", "one device (DDP: each GPU)")]


def test_device_map_advice_follows_the_weights():
    shape = load_shape("qwen3-32b")  # 61 GiB of bfloat16 weights
    assert device_map_advice(shape, 80, 1).startswith("device: cuda:0")
    spread = device_map_advice(shape, 24, 4)
    assert "device_map: auto" in spread and "cuda:3: 19GiB" in spread and "offload" not in spread
    assert "offload_folder" in device_map_advice(shape, 24, 2)


def test_plan_command_and_its_errors(capsys, tmp_path):
    assert main(["plan", "llama-2-7b", "--gpus", "2", "--gpu-memory", "12"]) == 0  # 12.6 GiB: two GPUs
    out = capsys.readouterr().out
    assert "6.74B parameters" in out and "device_map: auto" in out
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(ModelLoadError, match="not a model config.json"):
        load_shape(str(bad))
    assert main(["plan", str(tmp_path / "nowhere")]) == 2
    assert "lensmap: error" in capsys.readouterr().err
