"""Handles from any model object: a Hugging Face model, a TransformerLens bridge, an nnsight model.

:func:`as_handle` turns any of them into the :class:`~lensmap.models.handle.ModelHandle` the
lenses, the vocabulary map and :func:`lensmap.run_probes` use. For a bridge or an nnsight model
the handle wraps a shadow of the plain Hugging Face model underneath (same weights), and
remembers the object (:func:`wrapped_object`), so the matching backend runs the user's own object.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from lensmap.capture.shadow import from_package, shadow_copy
from lensmap.errors import LensmapError, UnsupportedArchitectureError
from lensmap.models.handle import ModelHandle


def is_bridge(obj: Any) -> bool:
    """True for a TransformerLens ``TransformerBridge`` (or subclass)."""
    if not from_package(obj, "transformer_lens"):
        return False
    from transformer_lens.model_bridge import TransformerBridge

    return isinstance(obj, TransformerBridge)


def is_nnsight_model(obj: Any) -> bool:
    """True for an nnsight model wrapper (``TransformersModel``, ``LanguageModel``, ``NNsight``)."""
    if not from_package(obj, "nnsight"):
        return False
    import nnsight

    return isinstance(obj, nnsight.Envoy) and isinstance(getattr(obj, "_module", None), nn.Module)


def wrapped_object(handle: Any) -> Any:
    """The bridge or nnsight model a handle from :func:`as_handle` was made from, else None."""
    return getattr(handle, "_lensmap_wrapped", None)


def as_handle(obj: Any, tokenizer: Any = None, *, name: str | None = None) -> ModelHandle:
    """A :class:`ModelHandle` for a handle, a Hugging Face model, a bridge or an nnsight model.

    For a ``TransformerBridge`` or an nnsight model the handle wraps a shadow of the plain
    Hugging Face model underneath (no bridge components, no nnsight controllers, the same
    weight tensors), so its lens can be called inside the caller's own hook or trace without
    firing the library's hooks; its tokenizer is the wrapper's unless ``tokenizer`` is given.
    The handle remembers the object (:func:`wrapped_object`), so the matching backend runs the
    user's own object rather than building another.
    """
    if isinstance(obj, ModelHandle):
        return obj
    if is_bridge(obj):
        library, inner = "TransformerLens bridge", obj.original_model
        tokenizer = tokenizer if tokenizer is not None else getattr(obj, "tokenizer", None)
        name = name or getattr(getattr(obj, "cfg", None), "model_name", None)
    elif is_nnsight_model(obj):
        library, inner = "nnsight model", obj._module
        tokenizer = tokenizer if tokenizer is not None else getattr(obj, "tokenizer", None)
    elif isinstance(obj, nn.Module):
        if not hasattr(obj, "config"):
            raise UnsupportedArchitectureError(
                f"cannot use a {type(obj).__name__}: lensmap needs a Hugging Face causal LM (a model with a "
                "config), a ModelHandle, a TransformerLens TransformerBridge or an nnsight model"
            )
        return ModelHandle.wrap(obj, tokenizer, name=name)
    else:
        raise LensmapError(
            f"cannot use a {type(obj).__name__} as a model: pass a ModelHandle, a Hugging Face causal LM, "
            "a TransformerLens TransformerBridge or an nnsight TransformersModel/LanguageModel"
        )
    model_type = getattr(getattr(inner, "config", None), "model_type", None) or type(inner).__name__
    try:
        handle = ModelHandle.wrap(shadow_copy(inner), tokenizer, name=name)
    except UnsupportedArchitectureError as error:
        raise UnsupportedArchitectureError(f"this {library} wraps a {model_type!r} model: {error}") from None
    handle._lensmap_wrapped = obj  # type: ignore[attr-defined]
    handle.info["wrapped"] = library
    return handle
