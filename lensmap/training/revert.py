"""Load a ``lensmap sft`` delta onto its base model and keep only the base values it replaced.

:func:`apply_delta_keeping_base` returns a :class:`~lensmap.capture.ablation.RevertSource`
holding the base values of exactly the tensors the delta changes (a copy the size of the
delta, never a second model); ``revert`` interventions swap them back block by block.
"""

from __future__ import annotations

import os

from lensmap.capture.ablation import RevertSource
from lensmap.models.handle import ModelHandle
from lensmap.training.delta import load_delta, read_manifest


def apply_delta_keeping_base(handle: ModelHandle, path: str | os.PathLike) -> RevertSource:
    """Apply the delta at ``path`` to ``handle`` (a freshly loaded base model); return the replaced base values."""
    names = list(read_manifest(path)["tensors"])
    params = dict(handle.model.named_parameters(remove_duplicate=False))
    base = {name: params[name].detach().clone() for name in names if name in params}
    load_delta(handle, path)  # checks fingerprint and hashes before touching a weight
    return RevertSource(base, name=f"base of {path}")
