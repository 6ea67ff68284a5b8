"""The nnsight 0.8 backend: residuals read inside an nnsight trace.

Layer 0 is the hidden-states argument entering block 0 (``.inputs``), layer ``l`` is block
``l-1``'s ``.output``. In transformers 5 a block's output is a Tensor for most families and a
tuple for BLOOM, so the value is inspected rather than indexed (``.output[0]`` on a Tensor would
silently take batch row 0). Only the selected rows are saved, and the trace stops after the
deepest requested layer (no final norm, no unembedding), as the native backend does.

Given a :class:`~lensmap.models.handle.ModelHandle`, the backend wraps a shadow of the handle's
model in ``nnsight.NNsight`` (nnsight installs a controller as the ``forward`` of every module
it wraps; the caller's modules must stay as they are). Given the user's own nnsight model
(``TransformersModel``, ``LanguageModel`` or ``NNsight``, or a handle made from one with
:func:`lensmap.capture.wrapped.as_handle`) it traces that model.

``NNsightBackend(remote=True)`` runs the trace on NDIF (nnsight's remote execution) for a
``TransformersModel`` built from a hub id; see docs/backends.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from lensmap.capture.backends import require
from lensmap.capture.hooks import model_lock, preserved_state
from lensmap.capture.inputs import PositionSpec, accepts_position_ids, prepare_inputs
from lensmap.capture.residuals import Residuals, residuals_from
from lensmap.capture.shadow import ShadowCache, shadow_copy
from lensmap.capture.wrapped import as_handle, is_nnsight_model, wrapped_object
from lensmap.errors import LensmapError, UnsupportedArchitectureError
from lensmap.models.adapters import adapter_for_model_type, resolve
from lensmap.models.handle import ModelHandle, residual_site


def wrap_shadow(model: torch.nn.Module):
    """``nnsight.NNsight`` around a shadow of ``model`` (``model`` itself is not modified)."""
    import nnsight

    return nnsight.NNsight(shadow_copy(model))


class NNsightBackend:
    """Capture inside an nnsight trace.

    Args:
        remote: passed to ``model.trace(remote=...)``: ``True`` runs on NDIF (needs an NDIF API
            key and a ``TransformersModel`` of a model NDIF hosts), ``"local"`` runs nnsight's
            local simulation of the remote path. Off by default.
    """

    name = "nnsight"

    def __init__(self, remote: bool | str = False) -> None:
        require(self.name)
        self.remote = remote
        self._wrapped = ShadowCache(wrap_shadow)

    def __repr__(self) -> str:
        return f"NNsightBackend(remote={self.remote!r})"

    def model_for(self, obj: Any):
        """``(nnsight model, handle or None)`` for an nnsight model, a handle made from one, or any other model."""
        if is_nnsight_model(obj):
            return obj, None
        handle = as_handle(obj)
        source = wrapped_object(handle)
        if is_nnsight_model(source):
            return source, handle
        if source is not None:
            raise LensmapError(
                f"this handle was made from a {type(source).__name__}, not an nnsight model; use the "
                "transformer-lens or native backend with it, or pass the plain Hugging Face model"
            )
        if self.remote:
            raise LensmapError(
                "remote=True needs an nnsight TransformersModel (built from a hub id NDIF hosts), not a "
                "local model: pass the nnsight model, or use remote=False"
            )
        return self._wrapped.get(handle.model), handle

    def __call__(
        self,
        handle: ModelHandle | Any,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        *,
        positions: PositionSpec = "last",
        layers: Sequence[int] | None = None,
    ) -> Residuals:
        import nnsight

        model, handle = self.model_for(handle)
        inner = model._module
        config = getattr(inner, "config", None)
        model_type = getattr(config, "model_type", None) or type(inner).__name__
        try:
            adapter = adapter_for_model_type(model_type)
            blocks = resolve(model, adapter.layers, what="decoder layers", family=adapter.family)
            n_layers = len(resolve(inner, adapter.layers, what="decoder layers", family=adapter.family))
        except UnsupportedArchitectureError as error:
            raise UnsupportedArchitectureError(f"this nnsight model wraps a {model_type!r} model: {error}") from None
        if handle is None:
            handle = _LightHandle(inner, n_layers, adapter)
        inputs = prepare_inputs(input_ids, attention_mask, positions=positions, layers=layers,
                                n_layers=handle.n_layers, device=handle.device,
                                with_position_ids=accepts_position_ids(inner))
        mask, layers, kwargs = inputs.mask, inputs.layers, inputs.kwargs
        trace_kwargs = dict(kwargs)
        if self.remote:
            trace_kwargs["remote"] = self.remote
        deepest = layers[-1]
        sites = {layer: residual_site(layer) for layer in layers}
        with model_lock(inner), preserved_state(inner), torch.no_grad():
            inner.eval()
            # The body only uses torch and the trace's own values (no lensmap code), so that it
            # can also run on a remote nnsight server; the types are checked after the trace.
            with model.trace(**trace_kwargs) as tracer:
                store = {}
                for layer, (block, site) in sites.items():
                    if site == "input":
                        block_args, block_kwargs = blocks[block].inputs
                        hidden = block_args[0] if block_args else block_kwargs.get("hidden_states")
                    else:
                        hidden = blocks[block].output
                        if isinstance(hidden, (tuple, list)):  # BLOOM: (hidden, ...); never index a Tensor
                            hidden = hidden[0]
                    if isinstance(hidden, torch.Tensor):
                        hidden = hidden[mask.to(hidden.device)].detach()
                    store[layer] = hidden
                    if layer == deepest:
                        nnsight.save(store)
                        tracer.stop()
        for layer, value in store.items():
            if not isinstance(value, Tensor):
                where = "entering the first decoder block" if layer == 0 else f"output by decoder block {layer - 1}"
                raise LensmapError(f"unexpected {type(value).__name__} as the hidden states {where} in the nnsight trace")
        return residuals_from(store, layers, mask, handle.device, self.name)


class _LightHandle:
    """The two things :func:`prepare_inputs` needs from a model that is not wrapped as a handle."""

    def __init__(self, model: torch.nn.Module, n_layers: int, adapter) -> None:
        self.n_layers = n_layers
        embed = resolve(model, adapter.embed, what="input embedding", family=adapter.family)
        device = embed.weight.device
        # a model built for remote execution has its weights on the meta device: inputs stay local
        self.device = torch.device("cpu") if device.type == "meta" else device
