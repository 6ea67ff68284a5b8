"""Which process am I: the rank rules of a run launched by ``torchrun`` / ``accelerate launch``.

Two uses. SFT (below) and data-parallel statistics: a corpus is dealt out by :func:`shard`
(process ``r`` of ``N`` takes items ``r, r+N, …``), each process sums its part, and
:func:`sum_across_processes` adds the parts in place on every process — exact for counts,
and equal to a one-process pass up to rounding for sums.

A distributed SFT run is the same ``train_sft`` call in every process; the Hugging Face Trainer
wraps the model in DistributedDataParallel, deals each process its own micro-batches and
averages the gradients, so every process ends with the same weights. What must happen once
(writing the compact delta, the frozen-parameter check, the output directory) happens on rank 0
only: :func:`is_main_process`. The environment variables are the ones both launchers set.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from torch import Tensor

T = TypeVar("T")


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


def start_process_group() -> bool:
    """Join the launcher's process group (gloo on CPU, nccl on CUDA) if not joined yet; False
    when the run is not distributed."""
    import torch
    import torch.distributed as dist

    if world_size() <= 1:
        return False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return True


def shard(items: Sequence[T]) -> list[T]:
    """This process's share of ``items``: every N-th item from its rank (all of them when not distributed)."""
    return list(items)[rank()::world_size()]


def sum_across_processes(tensors: Sequence["Tensor"]) -> None:
    """Replace each tensor, in place, by its sum over all processes (nothing in a one-process run).

    Every process must call this with tensors of the same shapes and dtypes, in the same order.
    """
    import torch.distributed as dist

    if not start_process_group():
        return
    for tensor in tensors:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)


def barrier() -> None:
    """Wait until every process gets here (nothing to wait for in a single-process run)."""
    import torch.distributed as dist

    if world_size() > 1 and dist.is_available() and dist.is_initialized():
        dist.barrier()
