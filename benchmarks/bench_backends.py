"""Benchmark: the three capture backends on the same model and prompts, as ratios to native hooks.

Methods, each run in its own subprocess so its peak memory can be read cleanly:
  native            lensmap's scoped forward hooks (lensmap.capture)
  transformer-lens  a TransformerLens 4 TransformerBridge (built by lensmap around a shadow)
  nnsight           an nnsight 0.8 trace (NNsight around a shadow)

Each method is timed twice: the capture alone (one forward pass, residuals of every layer at
the selected positions) and the whole map (capture → logit lens → per-language mass, chunked).
Reported: the first call's time (which builds the bridge / the nnsight wrapper, plus the first
forward pass), the best wall time over repeats (the least disturbed by other work on a shared machine;
medians are in the JSON), each method's extra peak RSS above the process's RSS
once the model and inputs are loaded, and ratios to native hooks measured in the same run.
Each method runs ``--rounds`` times, round-robin, and reports its best time and largest peak.

    python benchmarks/bench_backends.py --model qwen2.5-0.5b --batch 8 --tokens 64 --positions last
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

METHODS = ("native", "transformer-lens", "nnsight")


def _measure(fn, repeats: int) -> dict:
    gc.collect()
    reset_peak()
    base = status_mb("VmRSS")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"best_s": min(times), "median_s": statistics.median(times), "times_s": times,
            "extra_peak_mb": status_mb("VmHWM") - base}


def worker(method: str, args) -> dict:
    from lensmap.capture.backends import get_backend
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
    mask[1::2, : args.tokens // 4] = 0  # every other row left-padded by a quarter
    layers = list(range(handle.n_layers + 1))
    lens = LogitLens(handle)
    capture = get_backend(method)
    start = time.perf_counter()
    capture(handle, ids, mask, positions=args.positions, layers=layers)  # first call: builds the bridge / wrapper
    first_call_s = time.perf_counter() - start

    def run_capture():
        return capture(handle, ids, mask, positions=args.positions, layers=layers).hidden

    def run_map():
        res = capture(handle, ids, mask, positions=args.positions, layers=layers)
        return read_layers(lens, res.hidden, layers, weights).mass

    run_map()  # warm-up
    full = _measure(run_map, args.repeats)
    only = _measure(run_capture, args.repeats)
    mass = run_map()
    return {"method": method, "first_call_s": first_call_s, "map": full, "capture": only,
            "mass": mass.tolist() if args.check else None,
            "rows": int(mask.sum()) if args.positions == "all" else args.batch, "layers": len(layers),
            "vocab": handle.vocab_size, "dtype": str(handle.dtype)}


def _combine(runs: list[dict]) -> dict:
    """One method over several rounds: the best time of all, the largest peak of all."""
    first = dict(runs[0])
    first["first_call_s"] = min(r["first_call_s"] for r in runs)
    for key in ("capture", "map"):
        first[key] = {
            "best_s": min(r[key]["best_s"] for r in runs),
            "median_s": statistics.median(t for r in runs for t in r[key]["times_s"]),
            "extra_peak_mb": max(r[key]["extra_peak_mb"] for r in runs),
        }
    first["rounds"] = len(runs)
    return first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-0.5b")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 where native), float32 or bfloat16")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--positions", default="last", choices=("last", "all"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="subprocesses per method, run round-robin")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--check", action="store_true", help="also report max |mass - native mass|")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return
    methods = args.methods.split(",")
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    for round_ in range(args.rounds):  # round-robin, so a change in the machine's load hits every method
        for method in methods:
            cmd = [sys.executable, __file__, "--worker", method] + sys.argv[1:]
            # Large buffers straight from mmap, so each method's peak RSS is its own and not the
            # allocator's cache; the same setting for every method.
            env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="1048576")
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout.strip().splitlines()[-1]
            r = json.loads(out)
            runs[method].append(r)
            print(f"round {round_ + 1} {method:17s} first call {r['first_call_s']:.2f} s  capture {r['capture']['best_s']:.3f} s  "
                  f"map {r['map']['best_s']:.3f} s  extra peak: capture {r['capture']['extra_peak_mb']:.0f} MB, "
                  f"map {r['map']['extra_peak_mb']:.0f} MB", flush=True)
    results = {m: _combine(rs) for m, rs in runs.items()}
    base = results.get("native")
    first = next(iter(results.values()))
    print(f"\n{first['layers']} residual layers x {first['rows']} rows, vocab {first['vocab']}, dtype {first['dtype']}, "
          f"positions {args.positions}, batch {args.batch} x {args.tokens} tokens, {args.threads} threads, "
          f"best of {args.repeats} x {args.rounds} rounds")
    print(f"{'':17s} {'first call':>10s} {'capture':>9s} {'map':>9s} {'peak capture':>13s} {'peak map':>9s}")
    for method, r in results.items():
        print(f"{method:17s} {r['first_call_s']:9.2f}s {r['capture']['best_s']:8.3f}s {r['map']['best_s']:8.3f}s "
              f"{r['capture']['extra_peak_mb']:10.0f} MB {r['map']['extra_peak_mb']:6.0f} MB")
    if base:
        print(f"{'ratio to native':17s} {'':>10s} {'capture':>9s} {'map':>9s} {'peak capture':>13s} {'peak map':>9s}")
        for method, r in results.items():
            time_ratio = lambda key: r[key]["best_s"] / base[key]["best_s"]  # noqa: E731
            peak_ratio = lambda key: r[key]["extra_peak_mb"] / max(base[key]["extra_peak_mb"], 1.0)  # noqa: E731
            line = (f"{method:17s} {'':>10s} {time_ratio('capture'):9.2f} {time_ratio('map'):9.2f} "
                    f"{peak_ratio('capture'):13.2f} {peak_ratio('map'):9.2f}")
            if args.check and r["mass"] is not None:
                diff = (torch.tensor(r["mass"]) - torch.tensor(base["mass"])).abs().max().item()
                line += f"   max |mass - native| = {diff:.2e}"
            print(line)
    for r in results.values():
        r.pop("mass", None)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
