"""Benchmark: all-position logit lens + per-language mass, against two baselines, in one run.

Methods, each run in its own subprocess so its peak memory can be read cleanly:
  lensmap  hooks at every layer → chunked float32 softmax → language mass (lensmap.metrics.mass)
  naive    output_hidden_states → logits for every layer and position at once → softmax → sums
  matmul   the bare unembedding matmul (lm_head) over the same rows, nothing else

Reported: median wall time over repeats, time ratios against naive and matmul, and each
method's extra peak RSS above the process's RSS once the model and inputs are loaded.

    python benchmarks/bench_lens_mass.py --model qwen2.5-0.5b --batch 2 --tokens 64
"""

from __future__ import annotations

import argparse
import json
import os
import gc
import statistics
import subprocess
import sys
import time

import torch

from memory import MIXED_TEXT, reset_peak, status_mb  # benchmarks/memory.py


def worker(method: str, args) -> dict:
    from lensmap.capture import capture_residuals
    from lensmap.languages.vocab_map import build_vocabulary_map
    from lensmap.lenses.logit import LogitLens
    from lensmap.metrics.mass import read_layers
    from lensmap.models.loading import load_model

    torch.set_num_threads(args.threads)
    handle = load_model(args.model, dtype=args.dtype, self_check=False)
    vmap = build_vocabulary_map(handle.tokenizer, ["en", "fr", "de", "zh"], vocab_size=handle.vocab_size, progress=False)
    weights = vmap.weights()
    ids = handle.tokenizer(MIXED_TEXT * 40, return_tensors="pt").input_ids[:, : args.tokens].repeat(args.batch, 1)
    mask = torch.ones_like(ids)
    model, lens = handle.model, LogitLens(handle)
    layers = list(range(handle.n_layers + 1))

    def run_lensmap():
        res = capture_residuals(handle, ids, mask, positions="all", layers=layers)
        return read_layers(lens, res.hidden, layers, weights).mass

    def run_naive():
        with torch.no_grad():
            hs = model(ids, attention_mask=mask, output_hidden_states=True).hidden_states
            # HF's last hidden state is already normed; the others go through the final norm.
            stacked = torch.stack([handle.final_norm(h) for h in hs[:-1]] + [hs[-1]])
            probs = torch.softmax(handle.unembed(stacked).float(), dim=-1)  # [layers, batch, seq, vocab]
            return probs @ weights

    captured = capture_residuals(handle, ids, mask, positions="all", layers=layers).hidden

    def run_matmul():
        with torch.no_grad():
            return [handle.unembed(captured[i]) for i in range(len(layers))]

    fn = {"lensmap": run_lensmap, "naive": run_naive, "matmul": run_matmul}[method]
    fn()  # warm-up
    gc.collect()
    reset_peak()
    base_rss = status_mb("VmRSS")
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"method": method, "median_s": statistics.median(times), "times_s": times,
            "extra_peak_mb": status_mb("VmHWM") - base_rss, "rows": int(ids.numel() * len(layers)),
            "vocab": handle.vocab_size, "dtype": str(handle.dtype)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-0.5b")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 where native), float32 or bfloat16")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return
    results = {}
    for method in ("lensmap", "naive", "matmul"):
        cmd = [sys.executable, __file__, "--worker", method] + sys.argv[1:]
        # Large buffers straight from mmap, so each method's peak RSS is its own and not the
        # allocator's cache; the same setting for every method.
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="1048576")
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout.strip().splitlines()[-1]
        results[method] = json.loads(out)
        print(f"{method:8s} median {results[method]['median_s']:.3f} s  extra peak {results[method]['extra_peak_mb']:.0f} MB",
              flush=True)
    lm, nv, mm = results["lensmap"], results["naive"], results["matmul"]
    print(f"rows (layers x positions): {lm['rows']}, vocab {lm['vocab']}, dtype {lm['dtype']}")
    print(f"time  lensmap / naive  = {lm['median_s'] / nv['median_s']:.2f}   (aim <= 0.5)")
    print(f"time  lensmap / matmul = {lm['median_s'] / mm['median_s']:.2f}   (aim <= 1.3)")
    print(f"extra peak memory lensmap / naive = {lm['extra_peak_mb'] / max(nv['extra_peak_mb'], 1):.3f}   (aim <= 0.2)")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
