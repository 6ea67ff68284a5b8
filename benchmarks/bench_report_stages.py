"""Where `lensmap report` spends its time: every stage, cold and warm, in one process.

1. the vocabulary map built cold (empty cache directory) and read from the cache;
2. `run_report` on a config (default examples/demo.yaml) twice: cold (first in the process,
   vocabulary map not cached) and warm; per stage from run.json's timings, with the probe
   read-out split into capture (the forward pass) and lens (read_layers) by timing wrappers,
   and how many rows the fused reduction had to recompute with the reference;
3. capture_residuals(positions="all") against the bare forward pass (the base model, no LM
   head) and the full model forward on the same tokens, minimum of interleaved repeats.

    python benchmarks/bench_report_stages.py --config examples/demo.yaml --threads 1
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from memory import MIXED_TEXT  # benchmarks/memory.py


class Timer:
    """Wraps ``module.name`` and adds up its wall time."""

    def __init__(self, module, name):
        self.module, self.name, self.seconds, self.calls = module, name, 0.0, 0
        self.original = getattr(module, name)

        def wrapped(*args, **kwargs):
            start = time.perf_counter()
            try:
                return self.original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
                self.calls += 1
        setattr(module, name, wrapped)

    def reset(self):
        self.seconds, self.calls = 0.0, 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(Path(__file__).parents[1] / "examples" / "demo.yaml"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import lensmap.languages.vocab_map as vocab_map
    import lensmap.metrics.fused as fused
    import lensmap.readout.probes as probes
    from lensmap.capture import capture_residuals
    from lensmap.config.report import load_config
    from lensmap.runs.common import load_for
    from lensmap.runs.report import run_report

    out: dict = {}
    config = load_config(args.config)
    cold_cache = Path(tempfile.mkdtemp(prefix="lensmap-vocab-"))
    real_path = vocab_map.vocab_cache_path
    vocab_map.vocab_cache_path = lambda key: cold_cache / f"{key}.json.gz"  # the cold runs see an empty cache

    handle = load_for(config)
    for label in ("cold", "cached"):
        start = time.perf_counter()
        vmap = vocab_map.build_vocabulary_map(handle.tokenizer, config.languages, vocab_size=handle.vocab_size,
                                              progress=False)
        vmap.weights()
        out[f"vocabulary_map_{label}_s"] = round(time.perf_counter() - start, 2)
        assert vmap.from_cache == (label == "cached"), (label, vmap.from_cache)
    for path in cold_cache.iterdir():  # the report's cold run builds the map again
        path.unlink()
    del handle, vmap

    base_get_backend = probes.get_backend  # wrapped so that the backend it returns is timed
    capture_time = {"s": 0.0}

    def timed_backend(name):
        backend = base_get_backend(name)

        def run(*a, **k):
            start = time.perf_counter()
            try:
                return backend(*a, **k)
            finally:
                capture_time["s"] += time.perf_counter() - start
        run.name = getattr(backend, "name", "native")
        return run
    probes.get_backend = timed_backend
    lens_timer = Timer(probes, "read_layers")
    redone = {"rows": 0}
    original_redo = fused._redo_rows

    def counting_redo(out_, rows, *a, **k):
        redone["rows"] += int(rows.numel())
        return original_redo(out_, rows, *a, **k)
    fused._redo_rows = counting_redo

    for label in ("cold", "warm"):
        capture_time["s"] = 0.0
        lens_timer.reset()
        redone["rows"] = 0
        target = Path(tempfile.mkdtemp(prefix=f"lensmap-report-{label}-")) / "report"
        config.output = target
        start = time.perf_counter()
        run_report(config, progress=False)
        total = time.perf_counter() - start
        timings = json.loads((target / "run.json").read_text())["timings_seconds"]
        timings.update(capture=round(capture_time["s"], 2), lens=round(lens_timer.seconds, 2),
                       total=round(total, 2), fused_rows_recomputed=redone["rows"])
        out[f"report_{label}"] = timings
        print(label, timings, flush=True)
    vocab_map.vocab_cache_path = real_path

    handle = load_for(config)
    ids = handle.tokenizer(MIXED_TEXT * 40, return_tensors="pt").input_ids[:, :64].repeat(2, 1)
    mask = torch.ones_like(ids)
    base = handle.model.get_submodule(handle.adapter.layers.rsplit(".", 1)[0])
    runs = {
        "capture_all": lambda: capture_residuals(handle, ids, mask, positions="all"),
        "capture_last": lambda: capture_residuals(handle, ids, mask, positions="last"),
        "bare_forward_base": lambda: base(input_ids=ids, attention_mask=mask),
        "full_forward_with_head": lambda: handle.model(input_ids=ids, attention_mask=mask),
    }
    times = {k: [] for k in runs}
    with torch.no_grad():
        for fn in runs.values():
            fn()
        for _ in range(args.repeats):
            for k, fn in runs.items():
                start = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - start)
    out["forward_2x64_min_s"] = {k: round(min(v), 3) for k, v in times.items()}
    out["capture_all/bare_forward"] = round(min(times["capture_all"]) / min(times["bare_forward_base"]), 3)
    out["threads"] = args.threads
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
