"""Memory plans from a model's config: how much each lensmap command needs, per device.

The rule: parameters are counted exactly by building the model on the ``meta`` device from its
config (no weights are read or allocated); everything else is an estimate stated with its
formula, in bytes, so a user can check it:

* weights: ``params × bytes(dtype)``.
* analysis (``report``, ``neurons``, ``sweep``): the weights, plus one batch's forward pass
  (``batch × seq × (3·d_mlp + 4·d_model) × bytes`` of live activations, and the attention scores
  ``batch × heads × seq² × bytes`` of an eager implementation), plus the lens chunk
  (:data:`lensmap.metrics.mass.CHUNK_BYTES`) and the ``[vocab, columns]`` language map.
* ``lens train``: the frozen weights plus one affine translator per layer with its gradient and
  two AdamW moments in float32: ``16 × L × (d² + d)``.
* SFT: lensmap trains float32 weights (``4 × params``); every trainable parameter adds a
  float32 gradient and two AdamW moments (``12 × trainable``); activations are kept only from
  the lowest trainable block up (``seq × batch × d × (34 + 5·heads·seq/d)`` bytes per block in
  16-bit mixed precision, the usual transformer estimate). DDP holds all of that on every GPU;
  ZeRO-2 with bfloat16 weights keeps ``2 × params`` on each GPU and divides the trained
  blocks' float32 master copy, moments and gradients (``14 × trainable``) by the GPU count;
  FSDP / ZeRO-3 divides weights, gradients and moments by the number of GPUs.

:data:`PRESETS` holds the published shapes of the papers' models, so a plan can be made before
anything is downloaded.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lensmap.errors import ModelLoadError
from lensmap.models.gguf import converted_dir
from lensmap.models.hub import hub_snapshot
from lensmap.models.sources import resolve_model_source
from lensmap.models.zoo import get_zoo_entry, zoo_gguf_path

GIB = 1024 ** 3
LENS_CHUNK_BYTES = 64 * 1024 ** 2  # the lens decodes this much float32 logits at a time (metrics.mass)
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}

#: Published shapes (each model's config.json on the hub), by the name a user would type.
PRESETS: dict[str, dict[str, Any]] = {
    "qwen3-32b": dict(model_type="qwen3", hidden_size=5120, num_hidden_layers=64, intermediate_size=25600,
                      vocab_size=151936, num_attention_heads=64, num_key_value_heads=8, head_dim=128,
                      tie_word_embeddings=False),
    "qwen2.5-7b": dict(model_type="qwen2", hidden_size=3584, num_hidden_layers=28, intermediate_size=18944,
                       vocab_size=152064, num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False),
    "llama-2-7b": dict(model_type="llama", hidden_size=4096, num_hidden_layers=32, intermediate_size=11008,
                       vocab_size=32000, num_attention_heads=32, num_key_value_heads=32, tie_word_embeddings=False),
    "llama-2-13b": dict(model_type="llama", hidden_size=5120, num_hidden_layers=40, intermediate_size=13824,
                        vocab_size=32000, num_attention_heads=40, num_key_value_heads=40, tie_word_embeddings=False),
    "bloom-7b1": dict(model_type="bloom", hidden_size=4096, n_layer=30, n_head=32, vocab_size=250880),
}


@dataclass(frozen=True)
class Shape:
    """What a memory plan needs to know about a model."""

    name: str
    params: int
    n_layers: int
    d_model: int
    d_mlp: int
    n_heads: int
    vocab: int
    block_params: int  # parameters of one decoder block


def shape_from_config(config: Any, name: str = "") -> Shape:
    """Count parameters exactly by building ``config``'s causal LM on the meta device."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    params = sum(p.numel() for p in model.parameters())  # tied weights are one parameter
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer")
    d = getattr(config, "hidden_size", None) or getattr(config, "n_embd")
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head")
    d_mlp = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * d
    blocks = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == layers]
    block_params = sum(p.numel() for p in blocks[0][0].parameters()) if blocks else params // layers
    return Shape(name or getattr(config, "_name_or_path", "") or config.model_type, params, layers, d, d_mlp, heads,
                 config.vocab_size, block_params)


def load_shape(spec: str) -> Shape:
    """A :class:`Shape` from a preset name, a ``config.json`` file, or a model directory / zoo name
    / cached hub id whose config is on this machine (no weights are loaded; a zoo model that was
    never used is converted once first, as any command would)."""
    from transformers import AutoConfig

    if spec.lower() in PRESETS:
        values = dict(PRESETS[spec.lower()])
        return shape_from_config(AutoConfig.for_model(values.pop("model_type"), **values), spec.lower())
    path = Path(spec).expanduser()
    if path.is_file():
        try:
            values = json.loads(path.read_text())
            return shape_from_config(AutoConfig.for_model(values.pop("model_type"), **values), path.parent.name)
        except (ValueError, KeyError) as error:
            raise ModelLoadError(f"{path} is not a model config.json ({error})") from None
    directory = _config_directory(spec)
    return shape_from_config(AutoConfig.from_pretrained(str(directory), local_files_only=True), Path(spec).name)


def _config_directory(spec: str) -> Path:
    kind, location = resolve_model_source(spec)
    if kind == "dir":
        return Path(location)
    if kind == "zoo":
        return converted_dir(zoo_gguf_path(location), get_zoo_entry(location).sha256, "cheap")[0]
    if kind == "hub":
        snapshot = hub_snapshot(location)
        if snapshot is not None:
            return snapshot
    raise ModelLoadError(f"no config for {spec!r} on this machine: give a model directory, a config.json file, "
                         f"a zoo name or one of the presets ({', '.join(PRESETS)})")


@dataclass(frozen=True)
class PlanSettings:
    """The run being planned."""

    dtype: str = "bfloat16"  # analysis weights
    batch: int = 8
    seq: int = 512
    sft_batch: int = 4  # per-device micro-batch
    sft_seq: int = 512
    train_layers: float = 0.25  # fraction of blocks the selective variant trains (the outermost ones)
    gpus: int = 1


def plan(shape: Shape, settings: PlanSettings = PlanSettings()) -> list[dict[str, Any]]:
    """One row per command and layout: what must fit on each device, in GiB, and why."""
    if settings.dtype not in BYTES:
        raise ValueError(f"dtype must be one of {', '.join(BYTES)}; got {settings.dtype!r}")
    b, n = BYTES[settings.dtype], max(1, settings.gpus)
    weights = shape.params * b
    forward = settings.batch * settings.seq * (3 * shape.d_mlp + 4 * shape.d_model) * b
    scores = settings.batch * shape.n_heads * settings.seq ** 2 * b
    analysis = forward + scores + LENS_CHUNK_BYTES + shape.vocab * 16 * 4
    translators = 16 * shape.n_layers * (shape.d_model ** 2 + shape.d_model)
    k = max(1, math.ceil(settings.train_layers * shape.n_layers))
    trainable = k * shape.block_params
    per_block = settings.sft_seq * settings.sft_batch * shape.d_model * (
        34 + 5 * shape.n_heads * settings.sft_seq / shape.d_model)
    fp32 = 4 * shape.params
    rows = [
        _row("report / neurons / sweep", "one device", weights + analysis,
             f"weights {settings.dtype} + one batch of {settings.batch}×{settings.seq} tokens"),
        _row("report / neurons / sweep", f"device_map over {n} GPU(s)", weights / n + analysis,
             "each GPU holds 1/N of the blocks; only per-row statistics move between devices"),
        _row("lens train", "one device", weights + analysis + translators,
             f"frozen weights + {shape.n_layers} float32 translators with AdamW state"),
        _row("sft selective", "one device (DDP: each GPU)", fp32 + 12 * trainable + k * per_block,
             f"the last {k} blocks ({trainable / shape.params:.1%} of parameters) trained"),
        _row("sft selective", f"ZeRO-2 over {n} GPU(s), bf16 weights",
             2 * shape.params + 14 * trainable / n + k * per_block,
             "bf16 weights replicated; fp32 master copy, moments and gradients of the trained blocks sharded"),
        _row("sft full", "one device (DDP: each GPU)", 16 * shape.params + shape.n_layers * per_block,
             "every parameter trained: weights, gradients, two AdamW moments"),
        _row("sft full", f"FSDP / ZeRO-3 over {n} GPU(s)", 16 * shape.params / n + shape.n_layers * per_block,
             "weights, gradients and moments sharded; activations per GPU"),
    ]
    return rows


def _row(command: str, layout: str, nbytes: float, why: str) -> dict[str, Any]:
    return {"command": command, "layout": layout, "GiB_per_device": round(nbytes / GIB, 1), "what": why}


def device_map_advice(shape: Shape, gpu_gib: float, gpus: int, dtype: str = "bfloat16") -> str:
    """The config lines for analysing ``shape`` on ``gpus`` GPUs of ``gpu_gib`` GiB each."""
    weights = shape.params * BYTES[dtype] / GIB
    headroom = 0.9 * gpu_gib - 2  # activations, the lens chunk and the CUDA context
    if weights <= headroom:
        return f"device: cuda:0   # the {weights:.1f} GiB of weights fit on one GPU"
    if weights <= headroom * gpus:
        caps = ", ".join(f"cuda:{i}: {int(headroom)}GiB" for i in range(gpus))
        return f"device_map: auto\nmax_memory: {{{caps}}}   # {weights:.1f} GiB spread over {gpus} GPUs"
    caps = ", ".join(f"cuda:{i}: {int(headroom)}GiB" for i in range(gpus))
    return (f"device_map: auto\nmax_memory: {{{caps}, cpu: 200GiB}}\noffload_folder: /scratch/offload"
            f"   # {weights:.1f} GiB does not fit on {gpus} GPU(s): the rest waits in CPU memory / on disk")
