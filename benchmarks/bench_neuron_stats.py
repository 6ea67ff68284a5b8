"""Benchmark: the neuron-statistics pass against a bare forward pass over the same tokens, and its memory.

Timed on the same packed rows (``--batch`` × ``--seq`` tokens per forward pass, ``--batches`` passes):
  forward   the model's own forward pass (logits included), no hooks
  trunk     the same forward stopped after the last block's MLP activation (what the statistics pass runs)
  stats     lensmap.readout.neurons.collect_neuron_stats: hooks on every block, float64 sums
Reported: tokens/s of each (best of ``--rounds``, the least disturbed by other work on a shared machine)
and the ratios stats/forward and stats/trunk. Memory: the statistics pass runs in a subprocess at
two corpus sizes (``--batches`` and 4 × that); reported is its peak RSS above the RSS once the model
and the tokens are loaded. It must not grow with the number of tokens.

    python benchmarks/bench_neuron_stats.py --model qwen2.5-0.5b --batch 4 --seq 128 --batches 4
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time

import torch
from memory import MIXED_TEXT, reset_peak, status_mb  # benchmarks/memory.py


def _rows(handle, n_rows: int, seq: int) -> torch.Tensor:
    ids = handle.tokenizer(MIXED_TEXT * 200, add_special_tokens=False)["input_ids"]
    need = n_rows * seq
    ids = (ids * (need // len(ids) + 1))[:need]
    return torch.tensor(ids).view(n_rows, seq)


def _time(fn, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        gc.collect()
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def speed(args) -> dict:
    import lensmap
    from lensmap.capture.activations import activation_hooks
    from lensmap.capture.hooks import StopForward
    from lensmap.capture.residuals import run_forward
    from lensmap.readout.neurons import collect_neuron_stats

    handle = lensmap.load_model(args.model, dtype=args.dtype, self_check=False)
    rows = _rows(handle, args.batch * args.batches, args.seq)
    batches = rows.split(args.batch)
    last = handle.n_layers - 1

    def forward():
        for b in batches:
            run_forward(handle.model, b, torch.ones_like(b))

    def trunk():
        def stop(block, acts):
            if block == last:
                raise StopForward
        for b in batches:
            with activation_hooks(handle, torch.zeros(b.shape, dtype=torch.bool), stop, blocks=[last]):
                run_forward(handle.model, b, torch.ones_like(b))

    def stats():
        collect_neuron_stats(handle, {"x": rows}, batch_size=args.batch)

    forward(); stats()  # warm up
    tokens = rows.numel()
    seconds = {name: _time(fn, args.rounds) for name, fn in (("forward", forward), ("trunk", trunk), ("stats", stats))}
    rate = {name: tokens / s for name, s in seconds.items()}
    return {"model": args.model, "dtype": str(handle.dtype), "tokens": tokens, "tokens_per_s": rate,
            "stats_over_forward": rate["stats"] / rate["forward"], "stats_over_trunk": rate["stats"] / rate["trunk"]}


def memory(args) -> dict:
    import lensmap
    from lensmap.readout.neurons import collect_neuron_stats

    handle = lensmap.load_model(args.model, dtype=args.dtype, self_check=False)
    rows = _rows(handle, args.batch * args.batches, args.seq)
    collect_neuron_stats(handle, {"x": rows[:args.batch]}, batch_size=args.batch)  # allocate once
    gc.collect()
    reset_peak()
    base = status_mb("VmRSS")
    collect_neuron_stats(handle, {"x": rows}, batch_size=args.batch)
    return {"tokens": rows.numel(), "extra_peak_mb": status_mb("VmHWM") - base}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-0.5b")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", default="")
    parser.add_argument("--child", choices=("memory",), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(memory(args)))
        return
    result = speed(args)
    result["memory"] = []
    for batches in (args.batches, 4 * args.batches):
        cmd = [sys.executable, __file__, "--child", "memory", "--model", args.model, "--dtype", args.dtype,
               "--batch", str(args.batch), "--seq", str(args.seq), "--batches", str(batches)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ.copy())
        result["memory"].append(json.loads(out.stdout.strip().splitlines()[-1]))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
