"""Selective fine-tuning on the Hugging Face Trainer: only the chosen parameters learn.

The Trainer brings the engine (AdamW, gradient accumulation, mixed precision, checkpoints, and
DDP / FSDP / DeepSpeed when launched with ``torchrun`` or ``accelerate launch``); lensmap
decides which parameters are trainable, builds the labelled examples and keeps the frozen
ones untouched: frozen parameters never reach the optimiser, so they stay bit-identical.

Checkpoints go to ``<work_dir>/checkpoint-<step>``; one is only used for resuming once
lensmap's callback has marked it complete (a run killed while saving leaves an unmarked
directory, which resuming ignores and removes).
"""

from __future__ import annotations

import math
import os
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from lensmap.distributed import world_size
from lensmap.errors import TrainingError
from lensmap.models.handle import ModelHandle
from lensmap.training.prompts import DEFAULT_LOSS_SPANS, Example, collate
from lensmap.training.selection import TrainableSet, apply

COMPLETE_MARKER = "lensmap-complete"


@dataclass
class SFTSettings:
    """Optimiser and schedule. Defaults follow LinguaMap: AdamW, lr 1e-5, batch 16, 5 epochs."""

    learning_rate: float = 1e-5
    batch_size: int = 16  # effective batch: per_device_batch_size x accumulation x devices
    per_device_batch_size: int = 4
    epochs: float = 5.0
    max_steps: int = -1  # > 0 overrides epochs
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_scheduler: str = "linear"
    seed: int = 0
    max_length: int = 512
    loss_spans: list[str] = field(default_factory=lambda: list(DEFAULT_LOSS_SPANS))
    mixed_precision: str = "auto"  # auto (bf16 where the hardware has it) | bf16 | fp16 | no
    save_steps: int = 0  # checkpoint every N optimiser steps; 0 = once per epoch
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05

    def accumulation(self, devices: int = 1) -> int:
        per_step = self.per_device_batch_size * max(1, devices)
        return max(1, math.ceil(self.batch_size / per_step))


def check_settings(settings: SFTSettings) -> None:
    """Clear errors for settings the Trainer would reject later or misread."""
    if not settings.learning_rate > 0:
        raise TrainingError(f"learning_rate must be positive; got {settings.learning_rate}")
    for name in ("batch_size", "per_device_batch_size", "max_length", "lora_r", "lora_alpha"):
        if getattr(settings, name) < 1:
            raise TrainingError(f"{name} must be at least 1; got {getattr(settings, name)}")
    if settings.max_steps <= 0 and not settings.epochs > 0:
        raise TrainingError(f"epochs must be positive (or set max_steps); got {settings.epochs}")
    if settings.mixed_precision not in ("auto", "bf16", "fp16", "no"):
        raise TrainingError(f"mixed_precision must be auto, bf16, fp16 or no; got {settings.mixed_precision!r}")
    if settings.per_device_batch_size > settings.batch_size:
        raise TrainingError(f"per_device_batch_size ({settings.per_device_batch_size}) is larger than the effective "
                            f"batch_size ({settings.batch_size})")


def _precision(settings: SFTSettings, device: torch.device) -> dict[str, bool]:
    choice = settings.mixed_precision
    if choice == "auto":
        from lensmap.models.loading import resolve_dtype

        choice = "bf16" if resolve_dtype("auto", device.type) == torch.bfloat16 else "no"
    return {"bf16": choice == "bf16", "fp16": choice == "fp16"}


class _ExampleDataset(torch.utils.data.Dataset):
    def __init__(self, examples: Sequence[Example]):
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> Example:
        return self.examples[index]


def latest_complete_checkpoint(work_dir: Path) -> Path | None:
    """The newest ``checkpoint-N`` that lensmap marked complete; unmarked ones are removed."""
    if not work_dir.is_dir():
        return None
    found: list[tuple[int, Path]] = []
    for path in work_dir.glob("checkpoint-*"):
        step = path.name.removeprefix("checkpoint-")
        if not step.isdigit():
            continue
        if (path / COMPLETE_MARKER).is_file():
            found.append((int(step), path))
        else:  # half-written by a killed run
            shutil.rmtree(path, ignore_errors=True)
    return max(found)[1] if found else None


def _marker_callback():
    from transformers import TrainerCallback

    class MarkComplete(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if path.is_dir() and state.is_world_process_zero:
                (path / COMPLETE_MARKER).write_text("ok\n")

    return MarkComplete()


@dataclass
class TrainResult:
    """What one training run did: the set trained, the loss curve and the wall time."""

    trainable: TrainableSet
    history: pd.DataFrame  # step, epoch, loss, learning_rate, grad_norm (one row per logged step)
    seconds: float
    steps: int
    optimised_params: int  # what the optimiser updates (the LoRA adapters' size with lora=True)
    resumed_from: str = ""


def lora_targets(model: nn.Module, trainable: TrainableSet) -> list[str]:
    """Full names of the linear layers inside the chosen blocks (what LoRA adapts)."""
    from lensmap.training.selection import matches

    names = [name for name, module in model.named_modules()
             if isinstance(module, nn.Linear) and matches(name + ".", trainable.modules)]
    if not names:
        raise TrainingError(f"no linear layers under {trainable.modules}: LoRA has nothing to adapt")
    return names


def train_sft(
    handle: ModelHandle,
    examples: Sequence[Example],
    trainable: TrainableSet,
    settings: SFTSettings,
    work_dir: str | os.PathLike,
    *,
    lora: bool = False,
    resume: bool = True,
    progress: bool = True,
    callbacks: Sequence[Any] = (),
) -> TrainResult:
    """Fine-tune ``handle.model`` in place on ``examples``, training only ``trainable``.

    With ``lora=True`` the chosen blocks' linear layers get LoRA adapters (PEFT) instead, and
    the adapters are merged back into the weights at the end, so the model comes back as a
    plain model whose changed tensors are exactly those layers. ``resume`` continues from the
    newest complete checkpoint in ``work_dir``. ``callbacks`` are extra Hugging Face
    ``TrainerCallback`` objects (logging, early stopping). The model is left in eval mode with
    ``requires_grad`` restored as it came in, and without the engine's mixed-precision wrapper
    (it runs later forwards in its own dtype, like the base model it is compared with).
    """
    from transformers import set_seed

    check_settings(settings)
    if not examples:
        raise TrainingError("no training examples")
    model = handle.model
    if next(model.parameters()).dtype != torch.float32:
        warnings.warn("training a model held in reduced precision: AdamW updates of lr 1e-5 vanish in bfloat16; "
                      "load it with dtype='float32' (mixed precision still runs the matmuls in bf16)", stacklevel=2)
    work_dir = Path(work_dir)
    set_seed(settings.seed)
    old_flags = {name: p.requires_grad for name, p in model.named_parameters()}
    # Mixed precision wraps the model's forward in autocast at instance level; put back what was there.
    old_forward = {key: vars(model)[key] for key in ("forward", "_original_forward") if key in vars(model)}
    apply(model, trainable)
    trained_model = _with_lora(model, trainable, settings) if lora else model
    optimised = sum(p.numel() for p in trained_model.parameters() if p.requires_grad)
    trainer = _make_trainer(handle, trained_model, examples, settings, work_dir, progress, callbacks)
    checkpoint = latest_complete_checkpoint(work_dir) if resume else None
    start = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except (torch.OutOfMemoryError, MemoryError) as error:
        raise TrainingError(f"a batch of {settings.per_device_batch_size} examples does not fit in memory ({error}); "
                            "lower per_device_batch_size (gradient accumulation keeps the effective batch_size) "
                            "or max_length") from None
    finally:
        if lora:
            trained_model = trained_model.merge_and_unload()  # the adapters folded into the chosen layers
        _restore(model, old_flags, old_forward)
    seconds = time.perf_counter() - start
    history = pd.DataFrame([row for row in trainer.state.log_history if "loss" in row])
    return TrainResult(trainable, history, seconds, int(trainer.state.global_step), optimised,
                       str(checkpoint) if checkpoint else "")


def _with_lora(model: nn.Module, trainable: TrainableSet, settings: SFTSettings) -> nn.Module:
    """The model with LoRA adapters on the chosen blocks' linear layers (everything else frozen)."""
    from peft import LoraConfig, get_peft_model

    for p in model.parameters():
        p.requires_grad_(False)
    config = LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
                        target_modules=lora_targets(model, trainable), bias="none")
    return get_peft_model(model, config)


def training_arguments(handle: ModelHandle, settings: SFTSettings, work_dir: Path, progress: bool):
    """The Hugging Face ``TrainingArguments`` of a run (gradient accumulation from the process count)."""
    from transformers import TrainingArguments

    devices = world_size()
    distributed: dict[str, Any] = {}
    if devices > 1:  # rank 0 evaluates between variants while the others wait at the next collective
        distributed["ddp_timeout"] = 6 * 3600
        if handle.device.type == "cpu":
            distributed["ddp_backend"] = "gloo"
    return TrainingArguments(
        output_dir=str(work_dir),
        learning_rate=settings.learning_rate,
        per_device_train_batch_size=settings.per_device_batch_size,
        gradient_accumulation_steps=settings.accumulation(devices),
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps,
        weight_decay=settings.weight_decay,
        warmup_steps=settings.warmup_steps,
        lr_scheduler_type=settings.lr_scheduler,
        seed=settings.seed,
        data_seed=settings.seed,
        logging_steps=1,
        save_strategy="steps" if settings.save_steps > 0 else "epoch",
        save_steps=settings.save_steps if settings.save_steps > 0 else 500,
        save_total_limit=1,
        report_to="none",
        disable_tqdm=not progress,
        remove_unused_columns=False,
        dataloader_pin_memory=False,
        use_cpu=handle.device.type == "cpu",
        **_precision(settings, handle.device),
        **distributed,
    )


def _make_trainer(handle: ModelHandle, trained_model: nn.Module, examples: Sequence[Example], settings: SFTSettings,
                  work_dir: Path, progress: bool, callbacks: Sequence[Any]):
    from transformers import PrinterCallback, Trainer

    pad_id = handle.tokenizer.pad_token_id
    if pad_id is None:
        pad_id = handle.tokenizer.eos_token_id or 0
    trainer = Trainer(model=trained_model, args=training_arguments(handle, settings, work_dir, progress),
                      train_dataset=_ExampleDataset(examples), data_collator=lambda batch: collate(batch, pad_id),
                      callbacks=[_marker_callback(), *callbacks])
    if not progress:  # without bars the Trainer prints every log dict instead
        trainer.remove_callback(PrinterCallback)
    return trainer


def _restore(model: nn.Module, old_flags: dict[str, bool], old_forward: dict[str, Any]) -> None:
    """Put back ``requires_grad`` and the model's own ``forward`` (not the engine's autocast wrapper); eval mode."""
    for name, p in model.named_parameters():
        p.requires_grad_(old_flags.get(name, p.requires_grad))
    for key in ("forward", "_original_forward"):
        vars(model).pop(key, None)
    vars(model).update(old_forward)
    model.eval()
