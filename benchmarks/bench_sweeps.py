"""Benchmark: a full input-side + output-side skip sweep (2·(L+1) settings) against one evaluation.

One *evaluation* is a forward pass of the batch plus the read-out of the scored rows (what one
setting of a sweep costs when run naively). Two ways to run the sweep:

  naive   every setting is a full forward pass under the intervention's hooks
  shared  lensmap's sweep: one cached forward pass (capture.ablation.cache_blocks); input-side
          settings replay only blocks k..L-1 from the embedding output, output-side settings
          read the residual entering the first skipped block (no block at all)

Both give identical values (checked here); the ratios to one evaluation are reported.

    OMP_NUM_THREADS=1 python benchmarks/bench_sweeps.py --model qwen2.5-0.5b --batch 2
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import lensmap as lm
from lensmap.capture.ablation import Intervention, intervene
from lensmap.metrics.sweeps import sweep_settings
from lensmap.readout.sweeps import en_answer_task, evaluate_settings, item_values, make_batches


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="qwen2.5-0.5b")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--language", default="fr")
    args = parser.parse_args()
    handle = lm.load_model(args.model)
    task = en_answer_task(handle.tokenizer, args.language, args.batch)
    (batch,) = make_batches(task, handle.tokenizer.pad_token_id or 0, args.batch)
    settings = sweep_settings(handle.n_layers, ("input", "output"))

    def full(blocks) -> torch.Tensor:
        with intervene(handle, Intervention("skip", blocks)), torch.no_grad():
            out = handle.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                               position_ids=(batch.attention_mask.cumsum(1) - 1).clamp(min=0),
                               use_cache=False)
        return item_values(task, batch, read_logprobs_from_logits(out.logits, batch))

    def read_logprobs_from_logits(logits: torch.Tensor, b) -> torch.Tensor:
        picked = logits[b.rows[:, 0], b.rows[:, 1]].float()
        return torch.log_softmax(picked, -1).gather(1, b.targets)

    full(())  # warm-up
    start = time.perf_counter()
    one = full(())
    t_one = time.perf_counter() - start

    start = time.perf_counter()
    naive = {(s.direction, s.k): full(s.blocks) for s in settings}
    t_naive = time.perf_counter() - start

    start = time.perf_counter()
    shared = evaluate_settings(handle, [task], settings, {"skip": lambda blocks: Intervention("skip", blocks)},
                               batch_size=args.batch, progress=False)
    t_shared = time.perf_counter() - start
    worst = max(abs(a - b) for (d, k), v in naive.items() for a, b in zip(v.tolist(), shared[("skip", d, task.metric,
                                                                                                 args.language, k)]))
    result = {"model": args.model, "n_layers": handle.n_layers, "settings": len(settings),
              "tokens": int(batch.attention_mask.sum()), "one_evaluation_s": round(t_one, 3),
              "naive_sweep_s": round(t_naive, 2), "shared_sweep_s": round(t_shared, 2),
              "naive_over_one": round(t_naive / t_one, 1), "shared_over_one": round(t_shared / t_one, 1),
              "speedup": round(t_naive / t_shared, 2), "max_abs_diff_naive_vs_shared": worst,
              "baseline_loss": float(one.mean())}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
