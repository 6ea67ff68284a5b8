"""Tune the fused reduction's row block and vocabulary tile against the bare unembedding matmul.

Loads the model, captures the residual stream at every position of a few layers, then times,
interleaved (one repeat of every variant, then the next repeat), the minimum over repeats of:

  matmul         handle.unembed(hidden[layer]) for each layer (the floor lensmap is held to)
  tiled-matmul   the same matmul tile by tile into one buffer, nothing else
  fused R/T      read_layers with row block R and vocabulary tile T (segment sum with "seg")
  generic        read_layers(..., fused=False): decode chunks, then reduce_logits

    python benchmarks/bench_fused_tiles.py --model qwen2.5-0.5b --dtype float32 --layers 5
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from memory import MIXED_TEXT  # benchmarks/memory.py


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-0.5b")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", default="512/1024,256/1024,512/2048,512/512,1024/1024,512/1024seg")
    parser.add_argument("--generic", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from lensmap.capture import capture_residuals
    from lensmap.languages.vocab_map import build_vocabulary_map
    from lensmap.lenses.logit import LogitLens
    from lensmap.metrics import fused
    from lensmap.metrics.mass import read_layers
    from lensmap.models.loading import load_model

    handle = load_model(args.model, dtype=args.dtype, self_check=False)
    weights = build_vocabulary_map(handle.tokenizer, ["en", "fr", "de", "zh"], vocab_size=handle.vocab_size,
                                   progress=False).weights()
    ids = handle.tokenizer(MIXED_TEXT * 40, return_tensors="pt").input_ids[:, : args.tokens].repeat(args.batch, 1)
    layers = list(range(handle.n_layers + 1 - args.layers, handle.n_layers + 1))
    hidden = capture_residuals(handle, ids, torch.ones_like(ids), positions="all", layers=layers).hidden
    lens = LogitLens(handle)
    w = handle.unembed.weight

    def matmul():
        with torch.no_grad():
            for i in range(len(layers)):
                handle.unembed(hidden[i])

    def tiled(tile=1024):
        def run():
            with torch.no_grad():
                h = hidden.reshape(-1, hidden.shape[-1])
                for s in range(0, h.shape[0], 512):
                    block = h[s:s + 512]
                    buf = torch.empty(block.shape[0], tile, dtype=w.dtype)
                    for v0 in range(0, w.shape[0], tile):
                        part = w[v0:v0 + tile]
                        torch.mm(block, part.t(), out=buf[:, :part.shape[0]])
        return run

    def fused_variant(spec):
        rows, tile = spec.replace("seg", "").split("/")
        seg = spec.endswith("seg")

        def run():
            old = fused.VOCAB_TILE
            try:
                with torch.no_grad():
                    columns = fused.ColumnMap.from_weights(weights)
                    fused.fused_read(lens.head_inputs, hidden, layers, columns, row_block=int(rows),
                                     vocab_tile=int(tile), segment_sum=seg)
            finally:
                fused.VOCAB_TILE = old
        return run

    variants = {"matmul": matmul, "tiled-matmul": tiled()}
    for spec in args.variants.split(","):
        variants[f"fused {spec}"] = fused_variant(spec)
    if args.generic:
        variants["generic"] = lambda: read_layers(lens, hidden, layers, weights, fused=False)
    times = {name: [] for name in variants}
    for fn in variants.values():
        fn()  # warm-up
    for _ in range(args.repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    base = min(times["matmul"])
    print(f"{args.model} {handle.dtype} rows {hidden.shape[0] * hidden.shape[1]} threads {args.threads}")
    for name, ts in times.items():
        print(f"{name:20s} min {min(ts):.3f} s  ratio {min(ts) / base:.3f}  median {sorted(ts)[len(ts) // 2]:.3f}")
    print(json.dumps(times))


if __name__ == "__main__":
    main()
