"""One process of the distributed-SFT test (tests/test_distributed.py runs it under torchrun).

Usage: python distributed_sft_worker.py OUT_DIR PER_DEVICE_BATCH
Trains block 1 of a tiny random Qwen2 on 8 fixed examples (global batch 4), then rank 0 alone
checks which parameters changed and writes the compact delta and the loss curve into OUT_DIR.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
import transformers as tf

from lensmap.distributed import barrier, is_main_process, world_size
from lensmap.models.handle import ModelHandle
from lensmap.training import SFTSettings, from_layers, save_delta, snapshot, train_sft
from lensmap.training.delta import changed_parameters
from lensmap.training.prompts import Example


def main(out: Path, per_device: int) -> None:
    torch.manual_seed(0)
    config = tf.Qwen2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                            num_attention_heads=2, num_key_value_heads=1)
    model = tf.AutoModelForCausalLM.from_config(config)
    handle = ModelHandle.wrap(model, SimpleNamespace(pad_token_id=0, eos_token_id=0), name="tiny-ddp")
    gen = torch.Generator().manual_seed(1)
    examples = [Example(f"x{i}", "fr", ids := torch.randint(1, 64, (12,), generator=gen).tolist(), ids, "a" * 12)
                for i in range(8)]  # equal lengths: every micro-batch holds the same number of labelled tokens
    settings = SFTSettings(learning_rate=1e-2, batch_size=4, per_device_batch_size=per_device, epochs=2,
                           mixed_precision="no", seed=0)
    before = snapshot(model)
    result = train_sft(handle, examples, from_layers(handle, [1]), settings, out / f"work-{world_size()}",
                       progress=False)
    barrier()
    if is_main_process():
        changed = sorted(changed_parameters(model, before))
        save_delta(handle, before, out / "delta", {"name": "tiny-ddp"})
        (out / "result.json").write_text(json.dumps({
            "world_size": world_size(), "steps": result.steps, "loss": result.history["loss"].tolist(),
            "changed": changed,
        }))
    barrier()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
