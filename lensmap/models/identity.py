"""What identifies a model: digests of its weights and the fingerprint saved beside lenses and deltas.

One fingerprint, :func:`model_fingerprint`, is written into every file lensmap saves for a
particular model (a tuned lens, an SFT delta, a recommendation) and checked when the file is
used again. Weights are hashed in bfloat16 (:func:`tensor_sha256`), so a model loaded in float32
or in bfloat16 has the same fingerprint.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import Tensor

from lensmap.models.handle import ModelHandle
from lensmap.models.params import count_parameters

# Fingerprint fields that must match for a saved file to be used with a model (``name`` is informative).
MATCH_FIELDS = ("architecture", "n_layers", "d_model", "vocab_size", "unembed_sha256", "final_norm_sha256")


def tensor_sha256(tensor: Tensor, rows_per_chunk: int = 4096) -> str:
    """sha256 over every element of ``tensor`` in bfloat16 (its canonical form here), chunk by chunk.

    bfloat16 makes the digest the same whether the model was loaded in float32 or bfloat16
    (float32 → bfloat16 rounding is deterministic, bfloat16 → bfloat16 is the identity). The
    shape is hashed too.
    """
    digest = hashlib.sha256(f"{tuple(tensor.shape)}".encode())
    with torch.no_grad():
        flat = tensor.detach().reshape(tensor.shape[0], -1) if tensor.dim() > 1 else tensor.detach().reshape(1, -1)
        for start in range(0, flat.shape[0], rows_per_chunk):
            chunk = flat[start:start + rows_per_chunk].to("cpu", torch.bfloat16).contiguous()
            digest.update(chunk.view(torch.int16).numpy().tobytes())
    return digest.hexdigest()


def model_fingerprint(handle: ModelHandle) -> dict[str, Any]:
    """What identifies a model: architecture, sizes and the digests of its unembedding and final norm.

    ``name`` is informative and never compared; :data:`MATCH_FIELDS` are.
    """
    norm_weight = getattr(handle.final_norm, "weight", None)
    return {
        "name": handle.name,
        "architecture": handle.adapter.family,
        "n_layers": handle.n_layers,
        "d_model": handle.d_model,
        "vocab_size": handle.vocab_size,
        "unembed_sha256": tensor_sha256(handle.unembed.weight),
        "final_norm_sha256": tensor_sha256(norm_weight) if isinstance(norm_weight, Tensor) else "",
    }


def model_identity(handle: ModelHandle) -> dict[str, Any]:
    """The short identity a recommendation records: name, architecture, layers, parameters, unembedding digest."""
    return {"name": handle.name, "architecture": handle.adapter.family, "n_layers": handle.n_layers,
            "total_params": count_parameters(handle.model),
            "unembed_sha256": tensor_sha256(handle.unembed.weight)}


def describe_fingerprint(fp: dict[str, Any]) -> str:
    """One line naming the model a fingerprint belongs to."""
    return (f"{fp.get('name') or '?'} ({fp.get('architecture')}, {fp.get('n_layers')} layers, d_model "
            f"{fp.get('d_model')}, vocabulary {fp.get('vocab_size')}, unembedding sha256 "
            f"{str(fp.get('unembed_sha256'))[:12]}…)")


def fingerprint_mismatch(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The fingerprint fields that differ, as ``field: saved != current`` strings."""
    return [f"{key}: {str(saved.get(key))[:16]} != {str(current.get(key))[:16]}"
            for key in MATCH_FIELDS if saved.get(key) != current.get(key)]
