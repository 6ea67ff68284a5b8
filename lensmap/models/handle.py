"""A model together with its tokenizer and the parts its adapter points at.

The handle is the one accessor of each part a lens or a hook needs: ``blocks`` (the decoder
blocks), ``final_norm``, ``unembed``, ``embed``, ``mlp_activation(block)`` and ``head(hidden)``,
the model's own read-out of a residual vector (final norm, unembedding, soft-cap). Layer
numbering (:func:`residual_site`) is stated once, here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from lensmap.errors import LensmapError
from lensmap.models.adapters import ArchitectureAdapter, adapter_for_model_type, resolve, resolve_module


def execution_device(module: nn.Module) -> torch.device:
    """The device a module computes on: where its weights are, or — when accelerate offloads them
    to CPU or disk and they sit on ``meta`` between forward passes — the device its hook runs it on."""
    hook = getattr(module, "_hf_hook", None)
    execution = getattr(hook, "execution_device", None)
    if execution is not None:
        return torch.device(f"cuda:{execution}" if isinstance(execution, int) else execution)
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def residual_site(layer: int) -> tuple[int, str]:
    """Where residual layer ``layer`` is read: ``(block, "input")`` for layer 0, else ``(layer - 1, "output")``.

    Layer 0 is the residual stream entering block 0 (read with a forward *pre*-hook, so it is
    right for models that normalise or add position embeddings before the first block); layer
    ``l >= 1`` is block ``l - 1``'s output, before the final norm. This is Hugging Face's
    ``hidden_states`` numbering except that its last entry is after the final norm.
    """
    return (0, "input") if layer == 0 else (layer - 1, "output")


def block_output(output: object) -> Tensor:
    """The hidden states a decoder block returns.

    transformers 5 blocks return a Tensor (Qwen, Llama, GPT-2) or a tuple whose first item is
    the hidden states (BLOOM); anything else is a structure lensmap does not understand.
    """
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise LensmapError(f"unexpected decoder-block output of type {type(output).__name__}")


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

    def attention(self, block: int) -> nn.Module:
        """The attention sub-module of block ``block`` (its output is added to the residual)."""
        return resolve_module(self.blocks[block], self.adapter.attention, what="attention",
                              family=self.adapter.family)

    def mlp(self, block: int) -> nn.Module:
        """The MLP sub-module of block ``block`` (its output is added to the residual)."""
        return resolve_module(self.blocks[block], self.adapter.mlp, what="MLP", family=self.adapter.family)

    def mlp_down(self, block: int) -> nn.Module:
        """The MLP output projection of block ``block``; its input is one value per neuron."""
        return resolve_module(self.blocks[block], self.adapter.mlp_down, what="MLP output projection",
                              family=self.adapter.family)

    def head(self, hidden: Tensor) -> Tensor:
        """The model's own read-out: ``[..., d_model]`` residual vectors → ``[..., vocab]`` logits.

        ``unembed(final_norm(hidden))``, then the final-logit soft-cap ``tanh(x / c) * c`` where
        the model has one, in the model's dtype on the unembedding's device.
        """
        logits = self.unembed(self.final_norm(hidden.to(execution_device(self.final_norm))))
        cap = self.logit_softcap
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        return logits

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
    def context_length(self) -> int | None:
        """The longest sequence the model takes (its position table), or None when it has no limit (ALiBi)."""
        config = getattr(self.model, "config", None)
        for holder in (config, getattr(config, "text_config", None)):
            for name in ("max_position_embeddings", "n_positions", "seq_length"):
                value = getattr(holder, name, None)
                if isinstance(value, int) and value > 0:
                    return value
        return None

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
    def device(self) -> torch.device:
        """Where inputs go: the input embedding's execution device (:func:`execution_device`)."""
        return execution_device(self.embed)
