"""Distributed SFT on the CPU: two gloo processes give the single-process run's loss curve and weights."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

WORKER = Path(__file__).with_name("distributed_sft_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(procs: int) -> list[str]:
    """The launcher prefix: plain python for one process, torch.distributed.run (gloo) for more."""
    if procs == 1:
        return [sys.executable]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs), "--master_addr",
            "127.0.0.1", "--master_port", str(_free_port())]


def _launch(args: list[str]) -> None:
    """Run a launcher command as a user would, outside any distributed run of our own; it must succeed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(key, None)
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]


def _run(args: list[str], out: Path) -> dict:
    _launch(args)
    return json.loads((out / "result.json").read_text())


def test_two_processes_train_the_same_weights_as_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    single = _run([*_torchrun(1), str(WORKER), str(one), "4"], one)  # global batch 4 in one process
    ddp = _run([*_torchrun(2), str(WORKER), str(two), "2"], two)  # 2 processes × 2
    assert (single["world_size"], ddp["world_size"]) == (1, 2)
    assert single["steps"] == ddp["steps"] == 4  # 8 examples, batch 4, 2 epochs
    assert ddp["loss"] == pytest.approx(single["loss"], rel=1e-5)
    assert single["loss"][-1] < single["loss"][0]  # it trained
    assert ddp["changed"] == single["changed"] and all(n.startswith("model.layers.1.") for n in ddp["changed"])
    a, b = load_file(one / "delta" / "changed.safetensors"), load_file(two / "delta" / "changed.safetensors")
    assert sorted(a) == sorted(b) == single["changed"]
    for name in a:
        assert (a[name] - b[name]).abs().max() < 1e-5, name
    assert {"changed.safetensors", "manifest.json"} <= {p.name for p in (two / "delta").iterdir()}
    assert not [p.name for p in two.iterdir() if "staging" in p.name]  # rank 1 left no half-written delta


def test_lensmap_sft_under_torchrun_writes_once_and_matches_one_process(tmp_path, qwen_tokenizer):
    """`torchrun -m lensmap sft`: both processes train, rank 0 alone checks, saves and writes."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    config = tf.Qwen2Config(vocab_size=len(qwen_tokenizer), hidden_size=16, intermediate_size=32,
                            num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1)
    tf.AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "tiny")
    qwen_tokenizer.save_pretrained(tmp_path / "tiny")
    outputs = {}
    for procs, per_device in ((1, 4), (2, 2)):
        out = tmp_path / f"run{procs}"
        cfg = tmp_path / f"sft{procs}.yaml"
        cfg.write_text(f"model: {tmp_path / 'tiny'}\noutput: {out}\nselect: {{layers: [2]}}\nlanguages: [fr, zh]\n"
                       "variants: [selective]\nevaluate: false\n"
                       f"training: {{max_steps: 2, batch_size: 4, per_device_batch_size: {per_device}, "
                       "learning_rate: 1e-3, mixed_precision: 'no'}\n")
        _launch([*_torchrun(procs), "-m", "lensmap", "sft", str(cfg), "-q"])
        outputs[procs] = out
        assert not (tmp_path / f"run{procs}.work").exists()
    records = [json.loads((outputs[p] / "variants.json").read_text()) for p in (1, 2)]
    assert [r["variant"] for r in records[1]] == ["selective"]  # one record: written once, by rank 0
    assert records[0][0]["frozen_bit_identical"] and records[1][0]["frozen_bit_identical"]
    assert records[0][0]["steps"] == records[1][0]["steps"] == 2
    a = load_file(outputs[1] / "weights" / "selective" / "changed.safetensors")
    b = load_file(outputs[2] / "weights" / "selective" / "changed.safetensors")
    assert sorted(a) == sorted(b) and all(n.startswith("model.layers.2.") for n in a)
    for name in a:
        assert (a[name] - b[name]).abs().max() < 1e-5, name


def test_neuron_statistics_split_over_two_processes_equal_one_pass(tmp_path):
    sys.path.insert(0, str(WORKER.parent))
    from distributed_stats_worker import corpus, handle

    from lensmap.metrics.neurons import NeuronStats
    from lensmap.readout.neurons import collect_neuron_stats

    out = tmp_path / "stats.npz"
    _launch([*_torchrun(2), str(WORKER.with_name("distributed_stats_worker.py")), str(out)])
    split = NeuronStats.load(out)
    whole = collect_neuron_stats(handle(), corpus(), batch_size=2)
    assert torch.equal(split.tokens, whole.tokens) and torch.equal(split.positive, whole.positive)
    assert split.tokens[:, 0].tolist() == [36, 20, 47]  # every real token of each language, counted once
    # other batch mates mean other float32 matmul blocking in the model: activations agree to float32 rounding
    assert torch.allclose(split.total, whole.total, rtol=1e-5, atol=1e-6)
    assert torch.allclose(split.squares, whole.squares, rtol=1e-5, atol=1e-6)
    assert not torch.equal(split.total, torch.zeros_like(split.total))
