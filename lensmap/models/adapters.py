"""Declarative architecture adapters: where each architecture keeps the parts a lens needs.

One :class:`ArchitectureAdapter` entry per family says, as dotted attribute paths from the
``*ForCausalLM`` model, where the stack of decoder blocks, the final norm, the unembedding and
the embedding live, and where the MLP activation sits inside a block. Nothing else in lensmap
knows an architecture by name. Adding a family is one entry in :data:`ADAPTERS`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from lensmap.errors import UnsupportedArchitectureError


@dataclass(frozen=True)
class ArchitectureAdapter:
    """Where a causal LM keeps its layers, final norm, unembedding, embedding and MLP activation.

    Paths are dotted attribute paths from the top-level model; ``mlp_activation``,
    ``attention``, ``mlp`` and ``mlp_down`` are relative to one decoder block: the activation
    function's module (``act_fn(gate)`` in gated MLPs), the attention and MLP sub-modules whose
    outputs are added to the residual stream, and the MLP's output projection, whose *input* is
    the per-neuron activation (``act_fn(gate) * up`` in gated MLPs). ``logit_softcap`` names the config attribute holding Gemma-2-style
    final-logit soft-capping (``tanh(x / c) * c``), when the family has one.
    """

    family: str
    model_types: tuple[str, ...]
    layers: str
    final_norm: str
    unembed: str
    embed: str
    mlp_activation: str
    attention: str
    mlp: str
    mlp_down: str
    logit_softcap: str | None = None


_LLAMA_LIKE = dict(
    layers="model.layers",
    final_norm="model.norm",
    unembed="lm_head",
    embed="model.embed_tokens",
    mlp_activation="mlp.act_fn",
    attention="self_attn",
    mlp="mlp",
    mlp_down="mlp.down_proj",
)

ADAPTERS: tuple[ArchitectureAdapter, ...] = (
    ArchitectureAdapter("qwen2", ("qwen2",), **_LLAMA_LIKE),
    ArchitectureAdapter("qwen3", ("qwen3",), **_LLAMA_LIKE),
    ArchitectureAdapter("llama", ("llama",), **_LLAMA_LIKE),
    ArchitectureAdapter("mistral", ("mistral",), **_LLAMA_LIKE),
    ArchitectureAdapter("gemma", ("gemma",), **_LLAMA_LIKE),
    ArchitectureAdapter("gemma2", ("gemma2",), **_LLAMA_LIKE, logit_softcap="final_logit_softcapping"),
    ArchitectureAdapter("gemma3", ("gemma3_text",), **_LLAMA_LIKE, logit_softcap="final_logit_softcapping"),
    ArchitectureAdapter(
        "gemma3-multimodal",
        ("gemma3",),
        layers="model.language_model.layers",
        final_norm="model.language_model.norm",
        unembed="lm_head",
        embed="model.language_model.embed_tokens",
        mlp_activation="mlp.act_fn",
        attention="self_attn",
        mlp="mlp",
        mlp_down="mlp.down_proj",
        logit_softcap="text_config.final_logit_softcapping",
    ),
    ArchitectureAdapter(
        "bloom",
        ("bloom",),
        layers="transformer.h",
        final_norm="transformer.ln_f",
        unembed="lm_head",
        embed="transformer.word_embeddings",
        mlp_activation="mlp.gelu_impl",
        attention="self_attention",
        mlp="mlp",
        mlp_down="mlp.dense_4h_to_h",
    ),
    ArchitectureAdapter(
        "gpt2",
        ("gpt2",),
        layers="transformer.h",
        final_norm="transformer.ln_f",
        unembed="lm_head",
        embed="transformer.wte",
        mlp_activation="mlp.act",
        attention="attn",
        mlp="mlp",
        mlp_down="mlp.c_proj",
    ),
)

_BY_MODEL_TYPE: dict[str, ArchitectureAdapter] = {t: a for a in ADAPTERS for t in a.model_types}


def supported_model_types() -> list[str]:
    """The ``config.model_type`` values lensmap has an adapter for."""
    return sorted(_BY_MODEL_TYPE)


def adapter_for_model_type(model_type: str) -> ArchitectureAdapter:
    """Return the adapter for a ``config.model_type`` or raise a clear error."""
    try:
        return _BY_MODEL_TYPE[model_type]
    except KeyError:
        raise UnsupportedArchitectureError(
            f"lensmap has no adapter for architecture {model_type!r}. Supported: "
            f"{', '.join(supported_model_types())}. To add one, append an ArchitectureAdapter to "
            "lensmap.models.adapters.ADAPTERS giving the dotted paths of the decoder-block list, the "
            "final norm, the unembedding (lm_head), the input embedding, and inside a block the MLP "
            "activation, the attention and MLP sub-modules and the MLP output projection."
        ) from None


def resolve(root: object, path: str, *, what: str, family: str) -> object:
    """Follow a dotted attribute path from ``root``; a missing step raises a clear error."""
    obj = root
    for step in path.split("."):
        if not hasattr(obj, step):
            raise UnsupportedArchitectureError(
                f"cannot find the {what} of this {family} model at {path!r} (no attribute {step!r} "
                f"on {type(obj).__name__}). The model's structure differs from lensmap's {family} "
                "adapter: was it wrapped or patched? Pass the unwrapped *ForCausalLM model."
            )
        obj = getattr(obj, step)
    return obj


def resolve_module(root: nn.Module, path: str, *, what: str, family: str) -> nn.Module:
    """Like :func:`resolve` but the result must be an ``nn.Module``."""
    obj = resolve(root, path, what=what, family=family)
    if not isinstance(obj, nn.Module):
        raise UnsupportedArchitectureError(
            f"the {what} of this {family} model at {path!r} is a {type(obj).__name__}, not a module."
        )
    return obj
