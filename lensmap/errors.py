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


class OutputError(LensmapError):
    """An output location lensmap refuses to write to (it holds the user's files) or cannot write to."""


class DeviceError(LensmapError):
    """A device name this machine does not have (``gpu0``, ``cuda`` without CUDA, ``cuda:3`` with one GPU)."""


class IntegrityError(ModelLoadError):
    """A cached model file no longer matches the checksum recorded when lensmap wrote it."""


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived while :func:`lensmap.signals.terminate_on_signals` was active.

    Like :class:`KeyboardInterrupt` it derives from ``BaseException``, so ``except Exception``
    does not swallow it while ``finally`` blocks and ``except BaseException`` cleanup still run.
    ``exit_code`` is the shell's convention for death by that signal (128 + signal number).
    """

    def __init__(self, signum: int) -> None:
        import signal

        self.signum = int(signum)
        try:
            self.signal_name = signal.Signals(self.signum).name
        except ValueError:
            self.signal_name = f"signal {self.signum}"
        super().__init__(f"stopped by {self.signal_name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class LensmapWarning(UserWarning):
    """Something the user asked for that lensmap could only partly do (e.g. fewer probe items than ``n``)."""
