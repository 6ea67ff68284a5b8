"""Benchmark: selective fine-tuning against full fine-tuning, on the same batch, in one run.

Each variant runs in its own subprocess (so peak memory is its own): load the model in
float32, make only the variant's parameters trainable, and run ``--steps`` optimiser steps of
lensmap's SFT (Hugging Face Trainer, AdamW, bf16 autocast where the CPU has it) on the same
``--batch`` examples of the shipped training set. Reported per variant: median and best step
time (the first step, which allocates the optimiser state, is left out), the extra peak RSS
above the process's RSS once the model is loaded, trainable parameters; and the ratios
selective / full measured in the same run.

    python benchmarks/bench_sft.py --model qwen2.5-0.5b --layers 22,23 --steps 6 --batch 4
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return float(line.split()[1]) / 1024
    return float("nan")


def run_variant(model: str, variant: str, layers: list[int], steps: int, batch: int) -> dict:
    from transformers import TrainerCallback

    import lensmap as lm
    from lensmap.training import SFTSettings, build_examples, from_layers, full, load_items, sample_items_path
    from lensmap.training.trainer import train_sft

    handle = lm.load_model(model, dtype="float32", self_check=False)
    items = [item for item in load_items(sample_items_path())][:batch]
    examples = build_examples(items, handle.tokenizer)
    chosen = full(handle) if variant == "full" else from_layers(handle, layers)
    loaded_rss = _rss_mb()

    class StepClock(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter() - self.start)

    clock = StepClock()
    settings = SFTSettings(batch_size=batch, per_device_batch_size=batch, max_steps=steps, save_steps=10**6)
    with tempfile.TemporaryDirectory() as work:
        train_sft(handle, examples, chosen, settings, work, resume=False, progress=False, callbacks=[clock])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    measured = clock.times[1:] or clock.times
    return {
        "variant": variant, "trainable_params": chosen.trainable_params, "total_params": chosen.total_params,
        "trainable_fraction": chosen.trainable_fraction, "step_s_median": statistics.median(measured),
        "step_s_best": min(measured), "first_step_s": clock.times[0], "loaded_rss_mb": loaded_rss,
        "extra_peak_mb": peak - loaded_rss, "tokens_per_step": sum(len(e) for e in examples),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="qwen2.5-0.5b")
    parser.add_argument("--layers", default="22,23", help="decoder layers the selective variant trains")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    layers = [int(x) for x in args.layers.split(",")]
    if args.variant:  # child process
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        print(json.dumps(run_variant(args.model, args.variant, layers, args.steps, args.batch)))
        return
    results = {}
    for variant in ("selective", "full"):
        cmd = [sys.executable, __file__, "--variant", variant, "--model", args.model, "--layers", args.layers,
               "--steps", str(args.steps), "--batch", str(args.batch), "--threads", str(args.threads)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=os.environ | {"TQDM_DISABLE": "1"})
        results[variant] = json.loads(out.stdout.strip().splitlines()[-1])
    sel, ful = results["selective"], results["full"]
    print(f"model {args.model}, batch {args.batch} examples ({sel['tokens_per_step']} tokens), "
          f"{args.steps} steps, selective layers {layers}")
    print(f"{'variant':<10} {'trainable':>12} {'fraction':>9} {'step median s':>14} {'step best s':>12} "
          f"{'extra peak MB':>14}")
    for r in (sel, ful):
        print(f"{r['variant']:<10} {r['trainable_params']:>12,} {r['trainable_fraction']:>9.2%} "
              f"{r['step_s_median']:>14.2f} {r['step_s_best']:>12.2f} {r['extra_peak_mb']:>14.0f}")
    ratios = {"step_time_median": sel["step_s_median"] / ful["step_s_median"],
              "step_time_best": sel["step_s_best"] / ful["step_s_best"],
              "extra_peak_memory": sel["extra_peak_mb"] / ful["extra_peak_mb"]}
    print("selective / full: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    if args.json:
        from lensmap.io import atomic_write_text

        atomic_write_text(args.json, json.dumps({"results": results, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
