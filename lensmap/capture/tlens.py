"""The TransformerLens 4 backend: residuals from a ``TransformerBridge``'s hook points.

Layer 0 is ``blocks.0.hook_resid_pre`` and layer ``l`` is ``blocks.{l-1}.hook_resid_post``,
the same residual stream lensmap's native hooks read. The hooks are added with the bridge's
own ``run_with_hooks``, which removes them when the call returns or fails, and keep only the
selected rows. The deepest requested layer ends the forward pass early (no final norm, no
``[seq, vocab]`` unembedding), as the native backend does.

Given a :class:`~lensmap.models.handle.ModelHandle`, the backend builds a bridge around a
shadow of the handle's model (:func:`lensmap.capture.shadow.shadow_copy`): TransformerLens rewrites
the model it wraps, and the caller's model must leave unchanged. The bridge is built once per
model and reused while the model's structure stays the same. Given a user's bridge (or a
handle made from one with :func:`lensmap.capture.wrapped.as_handle`), it runs that bridge.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from lensmap.capture.backends import require
from lensmap.capture.hooks import model_lock, preserved_state
from lensmap.capture.inputs import PositionSpec, accepts_position_ids, prepare_inputs
from lensmap.capture.residuals import Residuals, residuals_from
from lensmap.capture.shadow import ShadowCache, shadow_copy
from lensmap.capture.wrapped import as_handle, is_bridge, wrapped_object
from lensmap.errors import LensmapError, UnsupportedArchitectureError
from lensmap.models.handle import ModelHandle, residual_site


class _Stop(Exception):
    """Raised by the hook of the deepest requested layer to skip the rest of the forward pass."""


def hook_names(layers: Sequence[int]) -> dict[int, str]:
    """TransformerLens hook point of each lensmap residual layer."""
    names = {}
    for layer in layers:
        block, site = residual_site(layer)
        names[layer] = f"blocks.{block}.hook_resid_pre" if site == "input" else f"blocks.{block}.hook_resid_post"
    return names


def _architecture_name(model: torch.nn.Module) -> str:
    from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES

    name = type(model).__name__
    if name in SUPPORTED_ARCHITECTURES:
        return name
    from transformer_lens.model_bridge.sources._hf_format import determine_architecture_from_hf_config

    try:
        return determine_architecture_from_hf_config(model.config)
    except Exception as error:  # TransformerLens raises ValueError with a very long list
        raise UnsupportedArchitectureError(
            f"TransformerLens {_version()} has no bridge for {name} ({type(error).__name__}); "
            "use the native or nnsight backend for this model"
        ) from None


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("transformer-lens")
    except Exception:  # pragma: no cover
        return "4"


def build_bridge(model: torch.nn.Module, tokenizer: Any = None):
    """A ``TransformerBridge`` around a shadow of ``model`` (``model`` itself is not modified).

    The bridge runs the model's own modules and weights, with its own attention implementation
    (no switch to eager attention, so the numbers are the model's), in raw Hugging Face
    numerics (no weight folding).
    """
    from transformer_lens.model_bridge.sources import build_bridge_from_module

    shadow = shadow_copy(model)
    architecture = _architecture_name(model)
    try:
        return build_bridge_from_module(shadow, architecture, hf_config=copy.deepcopy(model.config),
                                        tokenizer=tokenizer, model_name=getattr(model, "name_or_path", "") or "lensmap")
    except UnsupportedArchitectureError:
        raise
    except Exception as error:
        raise LensmapError(f"TransformerLens could not build a bridge for this {architecture} model: "
                           f"{type(error).__name__}: {error}") from error


def _plain_handle(bridge) -> ModelHandle:
    # as_handle without the back-reference to the bridge (the cache holds bridges only weakly)
    handle = as_handle(bridge)
    del handle._lensmap_wrapped
    return handle


class TransformerLensBackend:
    """Capture through a TransformerLens 4 ``TransformerBridge``."""

    name = "transformer-lens"

    def __init__(self) -> None:
        require(self.name)
        self._bridges = ShadowCache(build_bridge)
        self._handles = ShadowCache(_plain_handle)  # a user's bridge -> the plain model under it

    def __repr__(self) -> str:
        return "TransformerLensBackend()"

    def bridge_for(self, obj: Any):
        """``(bridge, handle)`` for a bridge, a handle made from one, or any other model."""
        if is_bridge(obj):
            return obj, self._handles.get(obj)
        handle = as_handle(obj)
        source = wrapped_object(handle)
        if is_bridge(source):
            return source, handle
        if source is not None:
            raise LensmapError(
                f"this handle was made from a {type(source).__name__}, not a TransformerLens bridge; use the "
                "nnsight or native backend with it, or pass the plain Hugging Face model"
            )
        return self._bridges.get(handle.model), handle

    def __call__(
        self,
        handle: ModelHandle | Any,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        *,
        positions: PositionSpec = "last",
        layers: Sequence[int] | None = None,
    ) -> Residuals:
        bridge, handle = self.bridge_for(handle)
        blocks = getattr(bridge, "blocks", None)
        if blocks is None or len(blocks) != handle.n_layers:
            raise UnsupportedArchitectureError(
                f"the TransformerLens bridge has {'no blocks' if blocks is None else f'{len(blocks)} blocks'} but "
                f"lensmap's {handle.adapter.family} adapter finds {handle.n_layers} decoder layers; this bridge's "
                "residual stream cannot be mapped to lensmap's layers (use the native backend)"
            )
        inputs = prepare_inputs(input_ids, attention_mask, positions=positions, layers=layers,
                                n_layers=handle.n_layers, device=handle.device,
                                with_position_ids=accepts_position_ids(bridge.original_model))
        mask, layers, kwargs = inputs.mask, inputs.layers, inputs.kwargs
        input_ids = kwargs.pop("input_ids")
        names = hook_names(layers)
        missing = [n for n in names.values() if n not in bridge.hook_dict]
        if missing:
            raise UnsupportedArchitectureError(f"the TransformerLens bridge has no hook points {missing}")
        deepest = layers[-1]
        store: dict[int, Tensor] = {}

        def make_hook(layer: int):
            def hook(tensor: Tensor, hook: Any = None) -> None:
                store[layer] = tensor[mask.to(tensor.device)].detach()
                if layer == deepest:
                    raise _Stop
            return hook

        fwd_hooks = [(names[layer], make_hook(layer)) for layer in layers]
        with model_lock(handle.model), preserved_state(bridge), torch.no_grad():
            bridge.eval()
            try:
                bridge.run_with_hooks(input_ids, fwd_hooks=fwd_hooks, return_type=None, **kwargs)
            except _Stop:
                pass
        return residuals_from(store, layers, mask, handle.device, self.name)
