"""Shadows: a caller's module tree re-created around the same tensors.

Neither TransformerLens nor nnsight may touch the caller's model: both rewrite the model they
wrap in place (the bridge swaps its submodules for bridge components, nnsight installs a
controller as every module's ``forward``). When lensmap wraps a model itself it wraps a
*shadow* (:func:`shadow_copy`): new module objects that share every parameter and buffer
tensor with the original, so it costs no weight memory and the caller's modules, config and
hooks stay exactly as they were.
"""

from __future__ import annotations

import copy
import functools
import inspect
import sys
import types
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def from_package(obj: Any, package: str) -> bool:
    """True when ``obj``'s class comes from ``package`` (without importing it)."""
    return package in sys.modules and type(obj).__module__.split(".")[0] == package


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
    return "_original_component" in module._modules and from_package(module, "transformer_lens")


def _is_nnsight_controller(value: Any) -> bool:
    return from_package(value, "nnsight") and hasattr(value, "state") and callable(value)


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


def structure_key(model: nn.Module) -> tuple:
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
        structure = structure_key(model)
        key = id(model)
        item = self._items.get(key)
        if item is not None and item[0]() is model and item[1] == structure:
            return item[2]
        built = self._build(model)
        ref = weakref.ref(model, lambda _, items=self._items, key=key: items.pop(key, None))
        self._items[key] = (ref, structure, built)
        return built


