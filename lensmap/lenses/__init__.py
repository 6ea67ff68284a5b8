"""Lenses decode a residual-stream vector into next-token logits."""

from lensmap.lenses.base import Lens
from lensmap.lenses.evaluation import compare_lenses, evaluate_lenses
from lensmap.lenses.logit import LogitLens, check_last_layer_lens
from lensmap.lenses.training import TrainSettings, train_tuned_lens
from lensmap.lenses.tuned import TunedLens, model_fingerprint

__all__ = ["Lens", "LogitLens", "TrainSettings", "TunedLens", "check_last_layer_lens", "compare_lenses",
           "evaluate_lenses", "model_fingerprint", "train_tuned_lens"]
