"""Capture backends: one interface over native hooks, TransformerLens 4 and nnsight 0.8.

A backend is a callable with the signature of :func:`lensmap.capture.capture_residuals`::

    backend(handle, input_ids, attention_mask=None, *, positions="last", layers=None) -> Residuals

and returns the same residual layers (0 = entering block 0, ``l`` = block ``l-1``'s output,
before the final norm) at the same selected rows, whatever library ran the forward pass.

=====================  ===========================================================  =====================
name                   runs the forward pass with                                   needs
=====================  ===========================================================  =====================
``native`` (default)   lensmap's scoped forward hooks (:mod:`lensmap.capture`)      nothing extra
``transformer-lens``   a TransformerLens 4 ``TransformerBridge`` (resid hook points)  ``lensmap[transformer-lens]``
``nnsight``            an nnsight 0.8 trace (``TransformersModel`` / ``NNsight``)    ``lensmap[nnsight]``
=====================  ===========================================================  =====================

``handle`` may be a :class:`~lensmap.models.handle.ModelHandle`, a Hugging Face causal LM,
or an object the user built with either library (a ``TransformerBridge``, an nnsight
``TransformersModel`` / ``LanguageModel`` / ``NNsight``). :func:`as_handle` turns any of them
into the :class:`ModelHandle` the lenses, the vocabulary map and :func:`lensmap.run_probes` use.

Neither TransformerLens nor nnsight may touch the caller's model: both rewrite the model they
wrap in place (the bridge swaps its submodules for bridge components, nnsight installs a
controller as every module's ``forward``). When lensmap wraps a model itself it wraps a
*shadow* (:func:`shadow_copy`): new module objects that share every parameter and buffer
tensor with the original, so it costs no weight memory and the caller's modules, config and
hooks stay exactly as they were. Objects the user built are used as they are, and only the
hooks lensmap adds to them are removed again (on exit and on error).
"""

from __future__ import annotations

import copy
import functools
import importlib
import importlib.util
import inspect
import sys
import types
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from lensmap.capture import PositionSpec, Residuals, position_ids_for, select_positions
from lensmap.errors import LensmapError, UnsupportedArchitectureError
from lensmap.models.handle import ModelHandle

__all__ = [
    "BACKENDS", "Backend", "as_handle", "available_backends", "bind", "default_backend", "get_backend",
    "read_hidden", "shadow_copy",
]


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


# name -> (module, class, python package the backend imports, pip extra)
BACKENDS: dict[str, tuple[str, str, str | None, str | None]] = {
    "native": ("lensmap.backends.native", "NativeBackend", None, None),
    "transformer-lens": ("lensmap.backends.tlens", "TransformerLensBackend", "transformer_lens", "transformer-lens"),
    "nnsight": ("lensmap.backends.nnsight_backend", "NNsightBackend", "nnsight", "nnsight"),
}
_ALIASES = {"hooks": "native", "transformer_lens": "transformer-lens", "transformerlens": "transformer-lens",
            "tlens": "transformer-lens"}


def _canonical(name: str) -> str:
    if not isinstance(name, str):
        raise LensmapError(f"a backend name must be a string ({', '.join(BACKENDS)}); got {name!r}")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in BACKENDS:
        raise LensmapError(f"unknown capture backend {name!r}; choose one of: {', '.join(BACKENDS)}")
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


# --------------------------------------------------------------------------------------------
# Recognising the libraries' objects without importing them

def _from_package(obj: Any, package: str) -> bool:
    return package in sys.modules and type(obj).__module__.split(".")[0] == package


def is_bridge(obj: Any) -> bool:
    """True for a TransformerLens ``TransformerBridge`` (or subclass)."""
    if not _from_package(obj, "transformer_lens"):
        return False
    from transformer_lens.model_bridge import TransformerBridge

    return isinstance(obj, TransformerBridge)


def is_nnsight_model(obj: Any) -> bool:
    """True for an nnsight model wrapper (``TransformersModel``, ``LanguageModel``, ``NNsight``)."""
    if not _from_package(obj, "nnsight"):
        return False
    import nnsight

    return isinstance(obj, nnsight.Envoy) and isinstance(getattr(obj, "_module", None), nn.Module)


def wrapped_object(handle: Any) -> Any:
    """The bridge or nnsight model a handle from :func:`as_handle` was made from, else None."""
    return getattr(handle, "_lensmap_wrapped", None)


def default_backend(obj: Any) -> str:
    """The backend that matches an object: its own library for wrapped models, else native."""
    source = wrapped_object(obj) if isinstance(obj, ModelHandle) else obj
    if is_bridge(source):
        return "transformer-lens"
    if is_nnsight_model(source):
        return "nnsight"
    return "native"


# --------------------------------------------------------------------------------------------
# Shadows: the caller's module tree, re-created around the same tensors

def _hooked_forward(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
    # What accelerate's add_hook_to_module installs as an instance forward (device alignment),
    # re-created for a shadow whose nnsight controller had taken that slot.
    hook = module._hf_hook
    args, kwargs = hook.pre_forward(module, *args, **kwargs)
    if getattr(hook, "no_grad", False):
        with torch.no_grad():
            output = module._old_forward(*args, **kwargs)
    else:
        output = module._old_forward(*args, **kwargs)
    return hook.post_forward(module, output)


def _is_tl_component(module: nn.Module) -> bool:
    return "_original_component" in module._modules and _from_package(module, "transformer_lens")


def _is_nnsight_controller(value: Any) -> bool:
    return _from_package(value, "nnsight") and hasattr(value, "state") and callable(value)


def shadow_copy(model: nn.Module) -> nn.Module:
    """A new module tree over the same parameter and buffer tensors as ``model``.

    Every module is a shallow copy with its own ``_modules``, ``_parameters``, ``_buffers`` and
    hook dicts, and its own copy of any transformers config it holds, so a library may rewrite
    the shadow (swap submodules, switch the attention implementation, install forwards)
    without touching ``model``. No tensor is copied. Methods and ``functools.partial`` forwards
    bound to an original module (accelerate's device-alignment wrapper) are re-bound to its
    shadow. TransformerLens bridge components are replaced by the module they wrap, and
    nnsight's per-module controllers are dropped, so the shadow of a wrapped model is the plain
    Hugging Face model underneath.
    """
    try:
        from transformers import PretrainedConfig
    except ImportError:  # pragma: no cover - transformers is a hard dependency
        PretrainedConfig = ()  # type: ignore[assignment]
    memo: dict[int, nn.Module] = {}
    config_memo: dict[int, Any] = {}

    def rebind(value: Any, old: nn.Module, new: nn.Module) -> Any:
        if isinstance(value, types.MethodType) and value.__self__ is old:
            return types.MethodType(value.__func__, new)
        if isinstance(value, functools.partial) and value.args and value.args[0] is old:
            bound = functools.partial(value.func, new, *value.args[1:], **(value.keywords or {}))
            return functools.update_wrapper(bound, value)
        return value

    def rec(module: nn.Module) -> nn.Module:
        while _is_tl_component(module):
            module = module._modules["_original_component"]
        if id(module) in memo:
            return memo[id(module)]
        new = copy.copy(module)
        memo[id(module)] = new
        state = new.__dict__
        for key, value in list(state.items()):
            if key in ("_parameters", "_buffers", "_modules"):
                continue
            if key == "__nnsight__":
                del state[key]
            elif _is_nnsight_controller(value):
                del state[key]
                body = getattr(value.state, "original", value.state.body)  # the forward before `.source`
                if "_hf_hook" in state and "_old_forward" in state:
                    state[key] = types.MethodType(_hooked_forward, new)
                elif body is not type(module).forward and inspect.isfunction(body):
                    state[key] = types.MethodType(body, new)
            elif isinstance(value, dict) and "hook" in key:
                state[key] = type(value)(value)
            elif PretrainedConfig and isinstance(value, PretrainedConfig):
                state[key] = copy.deepcopy(value, config_memo)
            else:
                state[key] = rebind(value, module, new)
        state["_parameters"] = dict(module._parameters)
        state["_buffers"] = dict(module._buffers)
        state["_non_persistent_buffers_set"] = set(module._non_persistent_buffers_set)
        state["_modules"] = {name: None if child is None else rec(child) for name, child in module._modules.items()}
        return new

    return rec(model)


def model_fingerprint(model: nn.Module) -> tuple:
    """Identity of ``model``'s modules, forwards, hooks and tensors; it changes when any is replaced."""
    return (
        tuple((id(m), id(m.__dict__.get("forward")), len(m._forward_hooks), len(m._forward_pre_hooks))
              for m in model.modules()),
        tuple(id(t) for t in model.parameters()),
        tuple(id(t) for t in model.buffers()),
    )


class ShadowCache:
    """Per-backend cache: one wrapped shadow per caller model, rebuilt when the model changes.

    Holds the model only weakly: when the caller drops it, its entry (and the shadow's hold on
    the weight tensors) goes too. ``build`` must not keep a strong reference to the model.
    """

    def __init__(self, build: Callable[[nn.Module], Any]):
        self._build = build
        self._items: dict[int, tuple[weakref.ref, tuple, Any]] = {}

    def get(self, model: nn.Module) -> Any:
        fingerprint = model_fingerprint(model)
        key = id(model)
        item = self._items.get(key)
        if item is not None and item[0]() is model and item[1] == fingerprint:
            return item[2]
        built = self._build(model)
        ref = weakref.ref(model, lambda _, items=self._items, key=key: items.pop(key, None))
        self._items[key] = (ref, fingerprint, built)
        return built


# --------------------------------------------------------------------------------------------
# Handles from any model object

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


def bind(obj: Any, backend: str | Backend | None = None, tokenizer: Any = None,
         **options: Any) -> tuple[ModelHandle, Backend]:
    """``(handle, backend)`` for any model object; the backend defaults to the object's own library."""
    handle = as_handle(obj, tokenizer)
    chosen = get_backend(default_backend(handle) if backend is None else backend, **options)
    return handle, chosen


# --------------------------------------------------------------------------------------------
# Shared pieces of the library backends

def prepare_inputs(
    handle: ModelHandle,
    input_ids: Tensor,
    attention_mask: Tensor | None,
    positions: PositionSpec,
    layers: Sequence[int] | None,
    accepts_position_ids: bool,
) -> tuple[Tensor, list[int], dict[str, Any]]:
    """Validate and place the inputs as every backend does: ``(mask, layers, forward kwargs)``.

    ``mask`` is the ``[batch, seq]`` selection of rows, ``layers`` sorted and checked, and the
    kwargs hold ``input_ids``, ``attention_mask``, ``use_cache=False`` and, when the model takes
    them, position ids counted over real tokens (so left padding does not shift positions).
    """
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    device = handle.device
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    mask = select_positions(attention_mask, positions)
    n = handle.n_layers
    layers = list(range(n + 1)) if layers is None else sorted(set(int(x) for x in layers))
    bad = [layer for layer in layers if not 0 <= layer <= n]
    if bad:
        raise LensmapError(f"layer indices {bad} out of range: this model has residual layers 0..{n}")
    if not layers:
        raise LensmapError("no residual layers requested")
    kwargs: dict[str, Any] = dict(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    if accepts_position_ids:
        kwargs["position_ids"] = position_ids_for(attention_mask)
    return mask, layers, kwargs


def accepts_position_ids(model: nn.Module) -> bool:
    try:
        return "position_ids" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def residuals_from(store: dict[int, Tensor], layers: list[int], mask: Tensor, device: Any, backend: str) -> Residuals:
    missing = [layer for layer in layers if layer not in store]
    if missing:
        raise LensmapError(f"the {backend} forward pass never reached residual layers {missing}")
    hidden = torch.stack([store[layer].to(device) for layer in layers])
    return Residuals(layers=layers, hidden=hidden, rows=mask.nonzero())


# --------------------------------------------------------------------------------------------
# Embedding: lens + language mass on the caller's own tensors

def read_hidden(
    lens: Any,
    hidden: Tensor,
    weights: Tensor,
    *,
    layer: int | None = None,
    layers: Sequence[int] | None = None,
    token_ids: Tensor | None = None,
    chunk_rows: int | None = None,
):
    """Lens + per-language mass on residual vectors of any leading shape.

    ``hidden`` is ``[..., d_model]`` from one residual layer (``layer``, e.g. a
    ``[batch, positions, d_model]`` activation read in your own hook or trace), or, with
    ``layers``, ``[len(layers), ..., d_model]``. Returns a :class:`lensmap.Readout` whose
    fields keep those leading dimensions: ``mass [..., columns]``, ``entropy [...]``,
    ``top_token [...]``, ``token_prob``/``token_rank [..., n_tokens]`` for ``token_ids``
    (``[..., n_tokens]``, -1 for none). Softmax in float32, chunked as in :func:`read_layers`;
    nothing is kept on the model and no hook is registered.
    """
    from lensmap.metrics.mass import Readout, read_layers

    single = layers is None
    layers = [layer] if single else [int(x) for x in layers]
    if single:
        hidden = hidden.unsqueeze(0)
    elif hidden.shape[0] != len(layers):
        raise LensmapError(f"hidden has {hidden.shape[0]} layers on its first dimension but {len(layers)} "
                           "layer indices were given")
    if hidden.dim() < 2:
        raise LensmapError(f"hidden must be [..., d_model] (with a leading layer dimension when layers= is given); "
                           f"got shape {tuple(hidden.shape[1:] if single else hidden.shape)}")
    lead = tuple(hidden.shape[1:-1])
    flat = hidden.detach().reshape(len(layers), -1, hidden.shape[-1])
    ids = None if token_ids is None else token_ids.reshape(flat.shape[1], -1)
    out = read_layers(lens, flat, layers, weights, token_ids=ids, chunk_rows=chunk_rows)

    def shape(t: Tensor) -> Tensor:
        t = t.reshape(len(layers), *lead, *t.shape[2:])
        return t[0] if single else t

    return Readout(layers=layers, mass=shape(out.mass), entropy=shape(out.entropy),
                   token_prob=shape(out.token_prob), token_rank=shape(out.token_rank),
                   set_prob=shape(out.set_prob), top_token=shape(out.top_token))
