"""The default backend: lensmap's own scoped forward hooks (:mod:`lensmap.capture.hooks`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from lensmap.capture.inputs import PositionSpec
from lensmap.capture.residuals import Residuals, capture_residuals
from lensmap.capture.wrapped import as_handle


class NativeBackend:
    """Forward (pre-)hooks on the decoder blocks, removed on exit and on error.

    Accepts anything :func:`lensmap.capture.wrapped.as_handle` does; for a bridge or an nnsight
    model it hooks the plain Hugging Face modules underneath (a shadow, same weights).
    """

    name = "native"

    def __call__(
        self,
        handle: Any,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        *,
        positions: PositionSpec = "last",
        layers: Sequence[int] | None = None,
    ) -> Residuals:
        return capture_residuals(as_handle(handle), input_ids, attention_mask, positions=positions, layers=layers)

    def __repr__(self) -> str:
        return "NativeBackend()"
