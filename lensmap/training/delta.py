"""Tuned weights saved compactly: only the tensors that changed, plus a manifest.

A delta directory holds ``manifest.json`` and ``changed.safetensors``. The manifest records
the base model's fingerprint (architecture, sizes, sha256 of its unembedding and final norm;
see :func:`lensmap.models.identity.model_fingerprint`) and, per saved tensor, the sha256 of its
base value and of its tuned value. :func:`load_delta` refuses another base model (fingerprint
or any base tensor hash differs) and a corrupt file (a tuned hash differs), so a delta is
never applied half-way or onto the wrong weights.

"Changed" means changed in any bit (exact hashes of each tensor in its own dtype). The base
hashes are taken in bfloat16 (:func:`lensmap.models.identity.tensor_sha256`), so a delta trained
in float32 also loads onto the same base model loaded in bfloat16.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lensmap.errors import DeltaError
from lensmap.io import atomic_write_text
from lensmap.models.handle import ModelHandle
from lensmap.models.identity import fingerprint_mismatch, model_fingerprint, tensor_sha256
from lensmap.outputs import staged_directory

FORMAT = "lensmap-sft-delta"
MANIFEST = "manifest.json"
WEIGHTS = "changed.safetensors"


def exact_sha256(tensor: Tensor) -> str:
    """sha256 of a tensor's shape, dtype and exact bytes."""
    data = tensor.detach().to("cpu").contiguous()
    digest = hashlib.sha256(f"{tuple(data.shape)} {data.dtype}".encode())
    digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


@dataclass
class Snapshot:
    """Hashes of a model's parameters before training: exact bytes, and bfloat16-canonical."""

    exact: dict[str, str]
    canonical: dict[str, str]


def snapshot(model: nn.Module, names: Iterable[str] | None = None) -> Snapshot:
    """Hash ``names`` (default: every parameter) before training."""
    wanted = None if names is None else set(names)
    params = [(name, p) for name, p in model.named_parameters(remove_duplicate=False)
              if wanted is None or name in wanted]
    return Snapshot({name: exact_sha256(p) for name, p in params}, {name: tensor_sha256(p) for name, p in params})


def changed_parameters(model: nn.Module, before: Snapshot) -> dict[str, str]:
    """The parameters of ``before`` whose bytes differ now: ``{name: new exact sha256}``."""
    params = dict(model.named_parameters(remove_duplicate=False))
    now = {name: exact_sha256(params[name]) for name in before.exact}
    return {name: sha for name, sha in now.items() if sha != before.exact[name]}


def save_delta(
    handle: ModelHandle,
    before: Snapshot,
    path: str | os.PathLike,
    base_fingerprint: dict[str, Any],
    info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Save the parameters that changed since ``before`` (a :func:`snapshot` of the base).

    ``base_fingerprint`` is :func:`lensmap.models.identity.model_fingerprint` of the base model,
    taken before training (full fine-tuning changes the unembedding). Written through a staging
    directory: a failure leaves nothing behind. Returns the manifest.
    """
    from safetensors.torch import save_file

    changed = changed_parameters(handle.model, before)
    params = dict(handle.model.named_parameters(remove_duplicate=False))
    tensors = {name: params[name].detach().to("cpu").contiguous() for name in sorted(changed)}
    manifest = {
        "format": FORMAT, "version": 1, "base": base_fingerprint,
        "tensors": {name: {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."),
                           "base_sha256": before.canonical[name], "sha256": changed[name]} for name, t in tensors.items()},
        "changed_params": int(sum(t.numel() for t in tensors.values())),
        "info": info or {},
    }
    with staged_directory(path, command="sft-delta") as staging:
        save_file(tensors, str(staging / WEIGHTS))
        atomic_write_text(staging / MANIFEST, json.dumps(manifest, indent=2))
    return manifest


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DeltaError(f"{str(path)!r} is not a tuned-weights directory (no {MANIFEST}); `lensmap sft` writes them") from None
    except json.JSONDecodeError as error:
        raise DeltaError(f"{path / MANIFEST} is corrupt ({error.msg})") from None
    if manifest.get("format") != FORMAT:
        raise DeltaError(f"{path / MANIFEST} is not a lensmap SFT delta (format {manifest.get('format')!r})")
    return manifest


def load_delta(handle: ModelHandle, path: str | os.PathLike) -> dict[str, Any]:
    """Apply a saved delta to ``handle``'s model in place (a base model as loaded); returns the manifest.

    Everything is checked before any weight is touched: the base fingerprint, the base hash of
    every tensor to be replaced, and the hash of every saved tensor.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    manifest = read_manifest(path)
    differs = fingerprint_mismatch(manifest["base"], model_fingerprint(handle))
    if differs:
        raise DeltaError(f"{path} was trained from another base model ({manifest['base'].get('name')}): "
                         f"{'; '.join(differs)}")
    try:
        tensors = load_file(str(path / WEIGHTS))
    except (FileNotFoundError, SafetensorError, OSError) as error:
        raise DeltaError(f"{path / WEIGHTS} is missing or corrupt ({error}); train again") from None
    entries = manifest["tensors"]
    if set(tensors) != set(entries):
        raise DeltaError(f"{path}: the weights file and the manifest list different tensors; the directory is corrupt")
    params = dict(handle.model.named_parameters(remove_duplicate=False))
    for name, entry in entries.items():
        if name not in params:
            raise DeltaError(f"{path}: tensor {name!r} is not a parameter of this model")
        if tensor_sha256(params[name]) != entry["base_sha256"]:
            raise DeltaError(f"{path}: parameter {name!r} of this model is not the base value the delta was trained "
                             "from (load the base model fresh, without another delta)")
        if exact_sha256(tensors[name]) != entry["sha256"]:
            raise DeltaError(f"{path}: tensor {name!r} does not match its recorded hash; the file is corrupt")
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value.to(params[name].device, params[name].dtype))
    return manifest
