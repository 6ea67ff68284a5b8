"""Lenses decode a residual-stream vector into next-token logits."""

from lensmap.lenses.base import Lens
from lensmap.lenses.logit import LogitLens, check_last_layer_lens

__all__ = ["Lens", "LogitLens", "check_last_layer_lens"]
