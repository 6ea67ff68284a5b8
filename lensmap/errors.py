"""Errors lensmap raises for problems the user can fix.

Every user-facing mistake (bad config, missing model, unknown language, ...) raises a
subclass of :class:`LensmapError` whose message names what was wrong and how to fix it.
The CLI prints these messages without a traceback; anything else is a bug.
"""

from __future__ import annotations


class LensmapError(Exception):
    """A problem with the user's input or environment, with a message that says the fix."""


class ConfigError(LensmapError):
    """The YAML config is malformed or has a bad field."""


class ModelLoadError(LensmapError):
    """A model could not be found, installed or loaded."""


class UnsupportedArchitectureError(LensmapError):
    """The model's architecture has no adapter."""


class AdapterCheckError(LensmapError):
    """The adapter's lens of the last layer does not reproduce the model's logits."""


class LanguageError(LensmapError):
    """A language code the language identifier does not know, or a bad vocabulary setting."""


class ProbeError(LensmapError):
    """A probe or prompts file that cannot be used."""


class TemplateError(LensmapError):
    """A scenario, language or template that cannot be used."""


class BenchmarkError(LensmapError):
    """A benchmark file or dataset that is missing or not in the expected format."""


class SelectionError(LensmapError):
    """A layer list, module list or recommendation file that does not fit the model."""


class DeltaError(LensmapError):
    """A delta directory that is missing, corrupt, or made for another base model."""


class TrainingError(LensmapError):
    """Training that cannot run as configured (a batch that does not fit, bad settings)."""


class TrainingDataError(LensmapError):
    """Training items that cannot be used: missing fields, empty, or in the wrong language."""


class LensFileError(LensmapError):
    """A lens directory that is missing, corrupt, partial, or belongs to another model."""


class ParallelDataError(LensmapError):
    """Parallel data that is not aligned, is empty, or has too few languages or items."""


class FrameError(LensmapError, ValueError):
    """A DataFrame handed to a figure or analysis that lacks the columns or rows it needs."""
