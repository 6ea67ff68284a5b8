"""What every run shares: loading the model a config names, and timing the stages."""

from __future__ import annotations

import time

from lensmap.config.sections import ModelSection
from lensmap.models.handle import ModelHandle
from lensmap.models.loading import load_model


def load_for(config: ModelSection, *, self_check: bool = True) -> ModelHandle:
    """Load the model of a command's config (its :class:`~lensmap.config.sections.ModelSection` keys)."""
    return load_model(config.model, dtype=config.dtype, device=config.device,
                      device_map=config.device_map or None, max_memory=config.max_memory or None,
                      offload_folder=config.offload_folder or None, trust_remote_code=config.trust_remote_code,
                      self_check=self_check)


class Stopwatch:
    """Seconds per named stage, in the order the stages ran (``lap("load_model")`` after each)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._clock = time.perf_counter()
        self._start = self._clock

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._clock, 2)
        self._clock = now

    @property
    def total(self) -> float:
        return time.perf_counter() - self._start
