"""Which process am I: the rank rules of a run launched by ``torchrun`` / ``accelerate launch``.

A distributed SFT run is the same ``train_sft`` call in every process; the Hugging Face Trainer
wraps the model in DistributedDataParallel, deals each process its own micro-batches and
averages the gradients, so every process ends with the same weights. What must happen once
(writing the compact delta, the frozen-parameter check, the output directory) happens on rank 0
only: :func:`is_main_process`. The environment variables are the ones both launchers set.
"""

from __future__ import annotations

import os


def world_size() -> int:
    """How many processes take part in the run (1 when not launched by a distributed launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's global rank (0 when not distributed)."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """True on the process that writes files (rank 0, or the only process)."""
    return rank() == 0


def local_device(device: str) -> str:
    """The device of this process: ``cuda`` / ``cuda:N`` becomes ``cuda:<LOCAL_RANK>`` in a
    distributed run (one GPU per process, as both launchers assign them); others unchanged."""
    if world_size() > 1 and str(device).startswith("cuda"):
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def sharded_parameters_engine() -> str | None:
    """The engine name when the launcher shards the parameters themselves (FSDP, DeepSpeed ZeRO-3),
    else None. Then no single process holds the full trained weights that the frozen-parameter
    check and the compact delta read."""
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true"):
        return "FSDP"
    if os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "") == "3":
        return "DeepSpeed ZeRO-3"
    return None


def barrier() -> None:
    """Wait until every process gets here (nothing to wait for in a single-process run)."""
    import torch.distributed as dist

    if world_size() > 1 and dist.is_available() and dist.is_initialized():
        dist.barrier()
