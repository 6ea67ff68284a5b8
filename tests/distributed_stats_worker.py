"""One process of the data-parallel neuron-statistics test (tests/test_distributed.py).

Usage: python distributed_stats_worker.py OUT_FILE
Streams a fixed corpus of three languages through a tiny random Qwen2, each process its share,
and saves the summed statistics (rank 0) to OUT_FILE.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import torch
import transformers as tf

from lensmap.distributed import is_main_process
from lensmap.models.handle import ModelHandle
from lensmap.readout.neurons import collect_neuron_stats_parallel


def corpus() -> dict[str, list[list[int]]]:
    gen = torch.Generator().manual_seed(3)
    lengths = {"fr": [5, 9, 7, 12, 3], "de": [8, 8, 4], "zh": [11, 2, 6, 6, 10, 7, 5]}
    return {lang: [torch.randint(3, 64, (n,), generator=gen).tolist() for n in ns] for lang, ns in lengths.items()}


def handle() -> ModelHandle:
    torch.manual_seed(0)
    config = tf.Qwen2Config(vocab_size=64, hidden_size=16, intermediate_size=24, num_hidden_layers=3,
                            num_attention_heads=2, num_key_value_heads=1)
    model = tf.AutoModelForCausalLM.from_config(config).eval()
    return ModelHandle.wrap(model, SimpleNamespace(pad_token_id=0, eos_token_id=0, bos_token_id=None), name="tiny")


if __name__ == "__main__":
    stats = collect_neuron_stats_parallel(handle(), corpus(), batch_size=2)
    if is_main_process():
        stats.save(sys.argv[1])
