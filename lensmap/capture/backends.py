"""Capture backends: one interface over native hooks, TransformerLens 4 and nnsight 0.8.

A backend is a callable with the signature of :func:`lensmap.capture_residuals`::

    backend(handle, input_ids, attention_mask=None, *, positions="last", layers=None) -> Residuals

and returns the same residual layers (0 = entering block 0, ``l`` = block ``l-1``'s output,
before the final norm) at the same selected rows, whatever library ran the forward pass.

=====================  ===========================================================  =====================
name                   runs the forward pass with                                   needs
=====================  ===========================================================  =====================
``native`` (default)   lensmap's scoped forward hooks (:mod:`lensmap.capture.hooks`) nothing extra
``transformer-lens``   a TransformerLens 4 ``TransformerBridge`` (resid hook points)  ``lensmap[transformer-lens]``
``nnsight``            an nnsight 0.8 trace (``TransformersModel`` / ``NNsight``)    ``lensmap[nnsight]``
=====================  ===========================================================  =====================

``handle`` may be a :class:`~lensmap.models.handle.ModelHandle`, a Hugging Face causal LM,
or an object the user built with either library (a ``TransformerBridge``, an nnsight
``TransformersModel`` / ``LanguageModel`` / ``NNsight``). :func:`as_handle` turns any of them
into the :class:`ModelHandle` the lenses, the vocabulary map and :func:`lensmap.run_probes` use.

A backend never changes the caller's model: the library backends wrap a shadow of it
(:mod:`lensmap.capture.shadow`). To add a backend, add a row to :data:`BACKENDS` naming the
module and class that implement it, the package it imports and the pip extra that installs it.
"""

from __future__ import annotations

import importlib
import importlib.util
import types
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

from torch import Tensor

from lensmap.capture.inputs import PositionSpec
from lensmap.capture.residuals import Residuals
from lensmap.capture.wrapped import as_handle, is_bridge, is_nnsight_model, wrapped_object
from lensmap.errors import LensmapError
from lensmap.models.handle import ModelHandle

__all__ = ["BACKENDS", "Backend", "BackendEntry", "as_handle", "available_backends", "bind", "default_backend",
           "get_backend", "require"]


@runtime_checkable
class Backend(Protocol):
    """A capture function with :func:`lensmap.capture_residuals`'s signature and a ``name``."""

    name: str

    def __call__(
        self,
        handle: Any,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        *,
        positions: PositionSpec = "last",
        layers: Sequence[int] | None = None,
    ) -> Residuals: ...


class BackendEntry(NamedTuple):
    """One capture backend: the class implementing it, the package it imports and its pip extra."""

    module: str
    cls: str
    package: str | None
    extra: str | None


BACKENDS: dict[str, BackendEntry] = {
    "native": BackendEntry("lensmap.capture.native", "NativeBackend", None, None),
    "transformer-lens": BackendEntry("lensmap.capture.tlens", "TransformerLensBackend", "transformer_lens",
                                     "transformer-lens"),
    "nnsight": BackendEntry("lensmap.capture.nnsight_backend", "NNsightBackend", "nnsight", "nnsight"),
}
_ALIASES = {"hooks": "native", "transformer_lens": "transformer-lens", "transformerlens": "transformer-lens",
            "tlens": "transformer-lens"}


def _canonical(name: str) -> str:
    if not isinstance(name, str):
        raise LensmapError(f"a backend name must be a string ({', '.join(BACKENDS)}); got {name!r}")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in BACKENDS:
        raise LensmapError(f"unknown capture backend {name!r}; choose one of: {', '.join(BACKENDS)} "
                           "(to add one, add a BackendEntry to lensmap.capture.backends.BACKENDS)")
    return key


def require(name: str) -> types.ModuleType | None:
    """Import the optional package backend ``name`` needs, or raise with the install command."""
    _, _, package, extra = BACKENDS[_canonical(name)]
    if package is None:
        return None
    try:
        return importlib.import_module(package)
    except ImportError as error:
        raise LensmapError(
            f"the {name} backend needs the {package} package, which is not installed ({error}). "
            f'Install it with: pip install "lensmap[{extra}]"'
        ) from None


def available_backends() -> dict[str, bool]:
    """Each backend name and whether its optional package is installed (nothing is imported)."""
    return {name: package is None or importlib.util.find_spec(package) is not None
            for name, (_, _, package, _) in BACKENDS.items()}


def get_backend(name: str | Backend = "native", **options: Any) -> Backend:
    """Return a capture backend by name (``native``, ``transformer-lens``, ``nnsight``).

    ``options`` go to the backend's constructor (``remote=True`` for nnsight runs the trace on
    NDIF; see docs/backends.md). An unknown name, or a backend whose optional package is
    missing, raises :class:`LensmapError` with the fix. A backend object passes through.
    """
    if not isinstance(name, str):
        if callable(name):
            return name  # already a backend (or any function with capture_residuals' signature)
        raise LensmapError(f"backend must be a name ({', '.join(BACKENDS)}) or a capture function; got {name!r}")
    key = _canonical(name)
    require(key)
    module_name, class_name, _, _ = BACKENDS[key]
    cls = getattr(importlib.import_module(module_name), class_name)
    try:
        return cls(**options)
    except TypeError as error:
        raise LensmapError(f"bad option for the {key} backend: {error}") from None


def default_backend(obj: Any) -> str:
    """The backend that matches an object: its own library for wrapped models, else native."""
    source = wrapped_object(obj) if isinstance(obj, ModelHandle) else obj
    if is_bridge(source):
        return "transformer-lens"
    if is_nnsight_model(source):
        return "nnsight"
    return "native"


def bind(obj: Any, backend: str | Backend | None = None, tokenizer: Any = None,
         **options: Any) -> tuple[ModelHandle, Backend]:
    """``(handle, backend)`` for any model object; the backend defaults to the object's own library."""
    handle = as_handle(obj, tokenizer)
    chosen = get_backend(default_backend(handle) if backend is None else backend, **options)
    return handle, chosen
