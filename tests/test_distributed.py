"""Distributed SFT on the CPU: two gloo processes give the single-process run's loss curve and weights."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

WORKER = Path(__file__).with_name("distributed_sft_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args: list[str], out: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("WORLD_SIZE", None), env.pop("RANK", None), env.pop("LOCAL_RANK", None)
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "result.json").read_text())


def test_two_processes_train_the_same_weights_as_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    single = _run([sys.executable, str(WORKER), str(one), "4"], one)  # global batch 4 in one process
    ddp = _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                "127.0.0.1", "--master_port", str(_free_port()), str(WORKER), str(two), "2"], two)  # 2 × 2
    assert (single["world_size"], ddp["world_size"]) == (1, 2)
    assert single["steps"] == ddp["steps"] == 4  # 8 examples, batch 4, 2 epochs
    assert ddp["loss"] == pytest.approx(single["loss"], rel=1e-5)
    assert single["loss"][-1] < single["loss"][0]  # it trained
    assert ddp["changed"] == single["changed"] and all(n.startswith("model.layers.1.") for n in ddp["changed"])
    a, b = load_file(one / "delta" / "changed.safetensors"), load_file(two / "delta" / "changed.safetensors")
    assert sorted(a) == sorted(b) == single["changed"]
    for name in a:
        assert (a[name] - b[name]).abs().max() < 1e-5, name
    assert not list(two.glob("delta*/*.tmp*")) and (two / "delta").is_dir()
