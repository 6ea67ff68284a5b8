"""The four-scenario evaluation on the three zoo models (a small, CPU-sized subset).

MGSM samples, all four scenarios, French, Chinese and Russian, 4 items each, greedy, up to 320
new tokens: 48 responses per model (a CPU budget; raise n_items for firmer numbers). Saves
``analyses/results/<model>/eval/`` (eval_items.csv, eval_summary.csv) and prints the summary;
the write-up is analyses/eval_zoo.md.

    python analyses/eval_zoo.py               # every installed zoo model
    python analyses/eval_zoo.py qwen2.5-0.5b
"""

from __future__ import annotations

import sys
from pathlib import Path

import lensmap as lm
from lensmap.runs.evaluation import write_evaluation
from lensmap.models.zoo import ZOO, is_installed

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"benchmarks": ["mgsm"], "languages": ["fr", "zh", "ru"], "n_items": 4,
            "generation": {"max_new_tokens": 320, "batch_size": 12}}


def run(model: str) -> None:
    handle = lm.load_model(model)
    items, summary = lm.evaluate_model(handle, SETTINGS)
    out = ROOT / "analyses" / "results" / model / "eval"
    out.mkdir(parents=True, exist_ok=True)
    write_evaluation(out, items, summary)
    print(summary[["benchmark", "scenario", "language", "n", "accuracy", "language_consistency",
                   "transfer_bottleneck", "consistency_bottleneck", "n_truncated"]].to_string())


def main(argv: list[str]) -> None:
    for model in argv or [name for name in ZOO if is_installed(name)]:
        print(f"== {model}", flush=True)
        run(model)


if __name__ == "__main__":
    main(sys.argv[1:])
