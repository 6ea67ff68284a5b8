"""Capture: scoped forward hooks and the residual stream at selected rows, from any backend.

* :mod:`~lensmap.capture.inputs` — the one input path (checks, placement, selected rows, position ids);
* :mod:`~lensmap.capture.hooks` — scoped hooks (removed on exit and on error, model state restored,
  one lock per model) and the residual-stream hooks;
* :mod:`~lensmap.capture.residuals` — :func:`capture_residuals`, one forward pass → :class:`Residuals`;
* :mod:`~lensmap.capture.backends` — the backend table (native, TransformerLens, nnsight);
* :mod:`~lensmap.capture.wrapped` / :mod:`~lensmap.capture.shadow` — handles for the libraries' model
  objects, over shadows that leave the caller's model untouched.
"""

from lensmap.capture.hooks import StopForward, model_lock, preserved_state, residual_hooks, scoped_hooks
from lensmap.capture.inputs import PositionSpec, position_ids_for, prepare_inputs, select_positions
from lensmap.capture.residuals import Residuals, capture_residuals, run_forward

__all__ = ["PositionSpec", "Residuals", "StopForward", "capture_residuals", "model_lock", "position_ids_for",
           "preserved_state", "prepare_inputs", "residual_hooks", "run_forward", "scoped_hooks", "select_positions"]
