"""A model together with its tokenizer and the parts its adapter points at."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from lensmap.models.adapters import ArchitectureAdapter, adapter_for_model_type, resolve, resolve_module


@dataclass
class ModelHandle:
    """A causal LM, its tokenizer and its adapter, with the adapter's modules resolved.

    Build one with :func:`lensmap.load_model` or, for a model you loaded yourself,
    :meth:`ModelHandle.wrap`. Layer indices follow Hugging Face's ``hidden_states``: layer 0
    is the residual stream entering the first block (the embedding output), layer ``l`` for
    ``1 <= l <= n_layers`` is the output of block ``l - 1`` (before the final norm).
    """

    model: nn.Module
    tokenizer: Any
    adapter: ArchitectureAdapter
    name: str
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def wrap(cls, model: nn.Module, tokenizer: Any = None, *, name: str | None = None) -> "ModelHandle":
        """Wrap a Hugging Face causal LM (any supported architecture) without copying it."""
        config = getattr(model, "config", None)
        model_type = getattr(config, "model_type", None) or type(model).__name__
        adapter = adapter_for_model_type(model_type)
        handle = cls(model, tokenizer, adapter, name or getattr(config, "_name_or_path", "") or model_type)
        handle.blocks  # resolve every path now, so a wrong structure fails here, not mid-analysis
        handle.final_norm, handle.unembed, handle.embed
        return handle

    def _module(self, path: str, what: str) -> nn.Module:
        return resolve_module(self.model, path, what=what, family=self.adapter.family)

    @property
    def blocks(self) -> nn.ModuleList:
        """The decoder blocks, in order."""
        return self._module(self.adapter.layers, "decoder layers")  # type: ignore[return-value]

    @property
    def final_norm(self) -> nn.Module:
        return self._module(self.adapter.final_norm, "final norm")

    @property
    def unembed(self) -> nn.Module:
        return self._module(self.adapter.unembed, "unembedding")

    @property
    def embed(self) -> nn.Module:
        return self._module(self.adapter.embed, "input embedding")

    def mlp_activation(self, block: int) -> nn.Module:
        """The MLP activation module inside decoder block ``block``."""
        return resolve_module(self.blocks[block], self.adapter.mlp_activation, what="MLP activation",
                              family=self.adapter.family)

    @property
    def logit_softcap(self) -> float | None:
        """Final-logit soft-capping constant, or None when the model does not cap."""
        if self.adapter.logit_softcap is None:
            return None
        try:
            value = resolve(self.model.config, self.adapter.logit_softcap, what="soft-cap", family=self.adapter.family)
        except Exception:
            return None
        return float(value) if value else None

    @property
    def n_layers(self) -> int:
        """Number of decoder blocks; residual layers are numbered 0..n_layers."""
        return len(self.blocks)

    @property
    def d_model(self) -> int:
        return int(self.embed.weight.shape[1])

    @property
    def vocab_size(self) -> int:
        """Rows of the unembedding (may exceed the tokenizer's length)."""
        return int(self.unembed.weight.shape[0])

    @property
    def dtype(self):
        return self.unembed.weight.dtype

    @property
    def device(self):
        return self.embed.weight.device
