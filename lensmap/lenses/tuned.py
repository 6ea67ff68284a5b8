"""The tuned lens: one learned affine translator per layer, decoded by the model's own head.

Layer ``l`` (0 <= l < L) is decoded as ``unembed(final_norm(h + A_l h + b_l))``; layer ``L``
is decoded exactly like the logit lens (the model's own prediction). ``A`` and ``b`` start at
zero, so an untrained tuned lens *is* the logit lens, bit for bit. Translators are float32;
the decode runs them on float32 copies of the hidden states, then casts back to the model's
dtype for the norm and unembedding (what the model itself runs).

A saved lens is a directory:

* ``config.json`` — format and version, the model it belongs to (:func:`model_fingerprint`:
  architecture, layers, width, vocabulary, sha256 of the full unembedding and final-norm
  weights), the sha256 and size of the weights file, and how it was trained.
* ``translators.safetensors`` — ``weight.{l}`` ``[d, d]`` and ``bias.{l}`` ``[d]`` per layer.

:meth:`TunedLens.load` refuses a lens of another model, a corrupt or partial weights file and
an unknown format with a :class:`~lensmap.errors.LensmapError`; :meth:`TunedLens.save` writes
through a staging directory, so a failed save leaves the old directory as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lensmap.errors import LensFileError, LensmapError
from lensmap.lenses.base import HeadInputs
from lensmap.lenses.logit import LogitLens, head_inputs
from lensmap.models.handle import ModelHandle, execution_device
from lensmap.models.identity import describe_fingerprint, fingerprint_mismatch, model_fingerprint

FORMAT = "lensmap-tuned-lens"
FORMAT_VERSION = 1
WEIGHTS_FILE = "translators.safetensors"
CONFIG_FILE = "config.json"


# --------------------------------------------------------------------------- the lens


class Translator(nn.Module):
    """``h ↦ h + A h + b`` with ``A`` (``weight``, ``[d, d]``) and ``b`` (``bias``) starting at zero."""

    def __init__(self, d_model: int, dtype: torch.dtype = torch.float32, device=None):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(d_model, d_model, dtype=dtype, device=device))
        self.bias = nn.Parameter(torch.zeros(d_model, dtype=dtype, device=device))

    def forward(self, hidden: Tensor) -> Tensor:
        return hidden + F.linear(hidden, self.weight, self.bias)


class TunedLens(nn.Module):
    """A :class:`~lensmap.lenses.base.Lens` with one affine translator per layer 0..L-1.

    Use it wherever a lens is taken (``read_layers``, ``run_probes(..., lens=...)``). The
    model is never part of this module's parameters or state dict.
    """

    name = "tuned"

    def __init__(self, handle: ModelHandle, *, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.handle = handle
        self._logit = LogitLens(handle)
        self.n_layers = handle.n_layers
        self.d_model = handle.d_model
        self.translators = nn.ModuleList(
            Translator(self.d_model, dtype=dtype, device=execution_device(handle.final_norm))
            for _ in range(self.n_layers)
        )
        self.fingerprint = model_fingerprint(handle)
        self.info: dict[str, Any] = {}  # how it was trained; saved in config.json

    def __repr__(self) -> str:
        return f"TunedLens({self.handle.name!r}, {self.n_layers} translators of width {self.d_model})"

    def translate(self, hidden: Tensor, layer: int) -> Tensor:
        """Apply layer ``layer``'s translator (identity for the last layer); returns the model's dtype."""
        if not 0 <= layer <= self.n_layers:
            raise LensmapError(f"layer {layer} out of range: this lens covers residual layers 0..{self.n_layers}")
        model_dtype = self.handle.dtype
        if layer == self.n_layers:
            return hidden.to(execution_device(self.handle.final_norm), model_dtype)
        translator = self.translators[layer]
        h = hidden.to(translator.weight.device, translator.weight.dtype)
        return translator(h).to(model_dtype)

    def decode(self, hidden: Tensor, layer: int) -> Tensor:
        """``[..., d_model]`` residuals of layer ``layer`` → ``[..., vocab]`` logits (model dtype)."""
        return self._logit.decode(self.translate(hidden, layer))

    def head_inputs(self, hidden: Tensor, layer: int) -> HeadInputs | None:
        """The translated, normed rows and the unembedding (see :meth:`LogitLens.head_inputs`)."""
        return head_inputs(self.handle, self.translate(hidden, layer))

    # ----------------------------------------------------------------------- save / load

    def state_tensors(self) -> dict[str, Tensor]:
        """``weight.{l}`` and ``bias.{l}`` for every layer, contiguous, on the CPU."""
        out = {}
        for layer, t in enumerate(self.translators):
            out[f"weight.{layer}"] = t.weight.detach().to("cpu").contiguous()
            out[f"bias.{layer}"] = t.bias.detach().to("cpu").contiguous()
        return out

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``config.json`` and ``translators.safetensors`` into directory ``path``, atomically.

        An existing directory is replaced only if it is itself a saved lens (or empty), and
        only once the new one is complete.
        """
        from safetensors.torch import save as save_tensors

        from lensmap.io import atomic_write_bytes, atomic_write_text
        from lensmap.outputs import staged_directory

        path = Path(path)
        if path.exists():
            if not path.is_dir():
                raise LensFileError(f"cannot save a lens to {str(path)!r}: it is a file, not a directory")
            if any(path.iterdir()) and not _looks_like_lens_dir(path):
                raise LensFileError(
                    f"refusing to replace {str(path)!r}: it is not empty and not a saved lensmap tuned lens "
                    f"(no {CONFIG_FILE} with format {FORMAT!r}). Pick another directory"
                )
        data = save_tensors(self.state_tensors(), metadata={"format": FORMAT, "version": str(FORMAT_VERSION)})
        config = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "lensmap_version": _lensmap_version(),
            "model": self.fingerprint,
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            "dtype": str(self.translators[0].weight.dtype).replace("torch.", ""),
            "weights_file": WEIGHTS_FILE,
            "weights_bytes": len(data),
            "weights_sha256": hashlib.sha256(data).hexdigest(),
            "training": self.info,
        }
        # a lens saved before output manifests existed is lensmap's own: adopt its files
        adopt = (WEIGHTS_FILE, CONFIG_FILE, "lens_eval.csv", "lens_eval.html") if _looks_like_lens_dir(path) else ()
        with staged_directory(path, command="lens", adopt=adopt) as staging:
            atomic_write_bytes(staging / WEIGHTS_FILE, data)
            atomic_write_text(staging / CONFIG_FILE, json.dumps(config, indent=2, default=str))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, handle: ModelHandle) -> "TunedLens":
        """Load a saved lens onto ``handle``; refuses another model's lens and corrupt files."""
        from safetensors.torch import load as load_tensors

        path = Path(path)
        config = read_lens_config(path)
        current = model_fingerprint(handle)
        diff = fingerprint_mismatch(config["model"], current)
        if diff:
            raise LensFileError(
                f"the tuned lens in {str(path)!r} belongs to another model: it was trained on "
                f"{describe_fingerprint(config['model'])}, but this model is {describe_fingerprint(current)} ({'; '.join(diff)}). "
                "Train a lens for this model with `lensmap lens train CONFIG.yaml`"
            )
        weights = path / config["weights_file"]
        if not weights.is_file():
            raise LensFileError(f"the tuned lens in {str(path)!r} is partial: {weights.name} is missing. "
                                "Train it again with `lensmap lens train CONFIG.yaml`")
        data = weights.read_bytes()
        if len(data) != config["weights_bytes"] or hashlib.sha256(data).hexdigest() != config["weights_sha256"]:
            raise LensFileError(
                f"the tuned lens in {str(path)!r} is corrupt or partial: {weights.name} has {len(data):,} bytes "
                f"and a sha256 that does not match its config.json ({config['weights_bytes']:,} bytes expected). "
                "Train it again with `lensmap lens train CONFIG.yaml`"
            )
        try:
            tensors = load_tensors(data)
        except Exception as error:  # safetensors raises its own error types
            raise LensFileError(f"the tuned lens weights in {str(weights)!r} cannot be read: {error}") from None
        lens = cls(handle, dtype=_dtype(config.get("dtype", "float32"), path))
        expected = lens.state_tensors()
        if set(tensors) != set(expected):
            missing = sorted(set(expected) - set(tensors))[:3]
            raise LensFileError(f"the tuned lens in {str(path)!r} does not have the tensors this model needs "
                                f"(missing e.g. {missing}); train it again")
        with torch.no_grad():
            for layer, t in enumerate(lens.translators):
                for name, param in (("weight", t.weight), ("bias", t.bias)):
                    value = tensors[f"{name}.{layer}"]
                    if value.shape != param.shape or not torch.isfinite(value).all():
                        raise LensFileError(f"the tuned lens in {str(path)!r} has a bad {name}.{layer} "
                                            f"(shape {tuple(value.shape)}, expected {tuple(param.shape)}, or non-finite)")
                    param.copy_(value.to(param.dtype))
        lens.info = dict(config.get("training") or {})
        return lens


def _lensmap_version() -> str:
    from lensmap.version import __version__

    return __version__


def _dtype(name: str, path: Path) -> torch.dtype:
    value = getattr(torch, str(name), None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise LensFileError(f"the tuned lens in {str(path)!r} has an unknown dtype {name!r}")
    return value


def _looks_like_lens_dir(path: Path) -> bool:
    try:
        return json.loads((path / CONFIG_FILE).read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def read_lens_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a saved lens's ``config.json`` (LensFileError if missing, corrupt or foreign)."""
    path = Path(path)
    file = path / CONFIG_FILE
    if not path.is_dir():
        raise LensFileError(f"no tuned lens at {str(path)!r}: the directory does not exist. "
                            "Train one with `lensmap lens train CONFIG.yaml`")
    if not file.is_file():
        raise LensFileError(f"{str(path)!r} is not a saved tuned lens: {CONFIG_FILE} is missing (partial save?)")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise LensFileError(f"the tuned lens config {str(file)!r} is corrupt: {error}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise LensFileError(f"{str(file)!r} is not a lensmap tuned-lens config (format {FORMAT!r} expected)")
    if config.get("version") != FORMAT_VERSION:
        raise LensFileError(f"the tuned lens in {str(path)!r} has format version {config.get('version')!r}; "
                            f"this lensmap reads version {FORMAT_VERSION}. Train it again")
    needed = ("model", "weights_file", "weights_bytes", "weights_sha256")
    if any(key not in config for key in needed) or not isinstance(config["model"], dict):
        raise LensFileError(f"the tuned lens config {str(file)!r} is incomplete (needs {', '.join(needed)})")
    if Path(str(config["weights_file"])).name != config["weights_file"]:
        raise LensFileError(f"the tuned lens config {str(file)!r} names a weights file outside its directory")
    return config
