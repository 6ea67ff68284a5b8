"""Benchmark: all-position logit lens + per-language mass, against two baselines, in one run.

Methods (every layer, every position of ``--batch`` × ``--tokens`` tokens):
  lensmap  capture_residuals(positions="all") → read_layers (the fused path: tiled unembedding,
           online float32 softmax, language mass, entropy, top token; lensmap.metrics.fused)
  generic  the same capture → read_layers(..., fused=False) (decode 64 MB chunks, reduce_logits)
  naive    output_hidden_states → logits for every layer and position at once → softmax → sums
  matmul   the same capture → the bare unembedding matmul (handle.unembed) per layer, nothing else

Timing: all methods live in one process and run interleaved (one repeat of each, then the
next), torch threads pinned to ``--threads`` for all; reported is the minimum and the median
over ``--repeats``. Ratios are against ``matmul``, whose capture is included, as in lensmap's
(the forward pass is part of both); ``lens only`` ratios exclude the capture from both sides.
Peak memory: each method of ``--memory-methods`` in its own subprocess, after one warm-up run
(the weights are memory-mapped and paged in by the first forward), extra peak RSS above the RSS once the model and inputs are loaded (large buffers from mmap so that RSS is each method's own).

    python benchmarks/bench_lens_mass.py --model qwen2.5-0.5b --dtype float32 --batch 2 --tokens 64
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time

import torch
from memory import MIXED_TEXT, reset_peak, status_mb  # benchmarks/memory.py

METHODS = ("lensmap", "matmul", "generic", "naive")


def setup(args):
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

    def capture():
        return capture_residuals(handle, ids, mask, positions="all", layers=layers).hidden

    def lens_lensmap(hidden):
        return read_layers(lens, hidden, layers, weights).mass

    def lens_generic(hidden):
        return read_layers(lens, hidden, layers, weights, fused=False).mass

    def lens_matmul(hidden):
        with torch.no_grad():
            return [handle.unembed(hidden[i]) for i in range(len(layers))]

    def run_naive():
        with torch.no_grad():
            hs = model(ids, attention_mask=mask, output_hidden_states=True).hidden_states
            # HF's last hidden state is already normed; the others go through the final norm.
            stacked = torch.stack([handle.final_norm(h) for h in hs[:-1]] + [hs[-1]])
            probs = torch.softmax(handle.unembed(stacked).float(), dim=-1)  # [layers, batch, seq, vocab]
            return probs @ weights

    lens_fns = {"lensmap": lens_lensmap, "generic": lens_generic, "matmul": lens_matmul}
    full = {name: (lambda f=f: f(capture())) for name, f in lens_fns.items()}
    full["naive"] = run_naive
    info = {"rows": int(ids.numel() * len(layers)), "vocab": handle.vocab_size, "dtype": str(handle.dtype),
            "threads": args.threads, "tokens": int(ids.numel())}
    return full, lens_fns, capture, info


def memory_worker(method: str, args) -> dict:
    full, _, _, info = setup(args)
    fn = full[method]
    fn()  # warm-up: the weights are memory-mapped, and the first forward pages them in
    gc.collect()
    reset_peak()
    base_rss = status_mb("VmRSS")
    fn()
    return {"method": method, "extra_peak_mb": status_mb("VmHWM") - base_rss, **info}


def timing(args) -> dict:
    full, lens_fns, capture, info = setup(args)
    methods = [m for m in METHODS if m in args.methods.split(",")]
    hidden = capture()
    times = {m: [] for m in methods}
    lens_times = {m: [] for m in lens_fns if m in methods}
    capture_times = []
    for m in methods:
        full[m]()  # warm-up
    for _ in range(args.repeats):
        for m in methods:
            start = time.perf_counter()
            full[m]()
            times[m].append(time.perf_counter() - start)
        start = time.perf_counter()
        capture()
        capture_times.append(time.perf_counter() - start)
        for m in lens_times:
            start = time.perf_counter()
            lens_fns[m](hidden)
            lens_times[m].append(time.perf_counter() - start)
    return {"times_s": times, "lens_only_times_s": lens_times, "capture_times_s": capture_times, **info}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-0.5b")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 where native), float32 or bfloat16")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--memory-methods", default=",".join(METHODS), help="methods whose peak memory is read ('' for none)")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(memory_worker(args.worker, args)))
        return
    result = timing(args) if args.methods else {"times_s": {}, "lens_only_times_s": {}, "capture_times_s": [float("nan")],
                                                 "rows": None, "vocab": None, "dtype": args.dtype}
    t, lt = result["times_s"], result["lens_only_times_s"]
    print(f"rows (layers x positions): {result['rows']}, vocab {result['vocab']}, dtype {result['dtype']}, "
          f"threads {args.threads}, {args.repeats} interleaved repeats")
    for m, ts in t.items():
        print(f"{m:8s} min {min(ts):7.3f} s  median {statistics.median(ts):7.3f} s"
              + (f"   lens only min {min(lt[m]):7.3f} s" if m in lt else ""), flush=True)
    print(f"capture (positions all) min {min(result['capture_times_s']):.3f} s")
    ratios = {}
    if "matmul" in t and "lensmap" in t:
        for m in t:
            if m != "matmul":
                ratios[f"{m}/matmul"] = min(t[m]) / min(t["matmul"])
                ratios[f"{m}/matmul median"] = statistics.median(t[m]) / statistics.median(t["matmul"])
                if m in lt:
                    ratios[f"{m}/matmul lens only"] = min(lt[m]) / min(lt["matmul"])
        ratios["lensmap/(matmul without capture)"] = min(t["lensmap"]) / min(lt["matmul"])
    if "naive" in t and "lensmap" in t:
        ratios["lensmap/naive"] = min(t["lensmap"]) / min(t["naive"])
    if args.memory_methods:
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="1048576")
        argv = [a for a in sys.argv[1:]]
        memory = {}
        for m in args.memory_methods.split(","):
            cmd = [sys.executable, __file__, "--worker", m] + argv
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout.strip().splitlines()[-1]
            memory[m] = json.loads(out)["extra_peak_mb"]
            print(f"{m:8s} extra peak {memory[m]:.0f} MB", flush=True)
        result["extra_peak_mb"] = memory
        if "naive" in memory and "lensmap" in memory:
            ratios["memory lensmap/naive"] = memory["lensmap"] / max(memory["naive"], 1)
    result["ratios"] = ratios
    for key, value in ratios.items():
        print(f"{key:36s} {value:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
