"""Benchmark: one tuned-lens training step, split into its parts, with peak memory.

Per step: the frozen forward that captures every layer, the target distribution, then the
translator forward + backward through the norm and unembedding at every layer. Reported: median
seconds per step and per trained position, the share of the step spent in the frozen forward,
and peak RSS above the loaded model. Compares the head in the model's dtype (bf16 by default)
with a float32 model when ``--float32`` is given.

    python benchmarks/bench_tuned_lens.py --model qwen2.5-0.5b --positions 32 --steps 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from memory import MIXED_TEXT, status_mb  # benchmarks/memory.py

TEXT = MIXED_TEXT * 40


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-0.5b")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--positions", type=int, default=32, help="trained positions per step")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--float32", action="store_true", help="load the model in float32")
    args = parser.parse_args()

    import lensmap as lm
    from lensmap.capture import capture_residuals, preserved_state
    from lensmap.lenses.training import layer_kl, position_mask, target_distribution

    handle = lm.load_model(args.model, dtype="float32" if args.float32 else "auto", self_check=False)
    ids = handle.tokenizer(TEXT, return_tensors="pt").input_ids[:, : args.seq_len]
    lens = lm.TunedLens(handle)
    optimizer = torch.optim.AdamW(lens.parameters(), lr=1e-3)
    base = status_mb("VmRSS")
    parts: dict[str, list[float]] = {"forward": [], "target": [], "layers": [], "optimizer": []}
    with preserved_state(handle.model):
        handle.model.requires_grad_(False)
        for step in range(args.steps + 1):  # the first step warms up and is not counted
            t0 = time.perf_counter()
            mask = position_mask(1, ids.shape[1], args.positions, 0, step)
            res = capture_residuals(handle, ids, positions=mask)
            t1 = time.perf_counter()
            p, neg = target_distribution(lens, res.hidden[-1], handle.dtype)
            t2 = time.perf_counter()
            for layer in range(handle.n_layers):
                layer_kl(lens, res.hidden[layer], layer, p, neg).mean().backward()
            t3 = time.perf_counter()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            t4 = time.perf_counter()
            if step:
                for key, value in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                    parts[key].append(value)
    median = {k: statistics.median(v) for k, v in parts.items()}
    total = sum(median.values())
    rows = int(res.hidden.shape[1])
    print(json.dumps({
        "model": handle.name, "dtype": str(handle.dtype), "layers": handle.n_layers, "vocab": handle.vocab_size,
        "positions_per_step": rows, "seconds_per_step": round(total, 3),
        "ms_per_position": round(1000 * total / rows, 1),
        "parts_seconds": {k: round(v, 3) for k, v in median.items()},
        "forward_share": round(median["forward"] / total, 3),
        "peak_rss_above_model_mb": round(status_mb("VmHWM") - base, 1),
        "threads": torch.get_num_threads(),
    }, indent=2))


if __name__ == "__main__":
    main()
