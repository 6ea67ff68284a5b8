"""Shared fixtures: small random models of every supported architecture, and the real zoo models.

Real zoo models come from PyPI packages that the README's test command installs; if one is
missing the fixture fails with the install command instead of skipping silently.
"""

from __future__ import annotations

import pytest
import torch
import transformers as tf

from lensmap.models.handle import ModelHandle

TINY = dict(vocab_size=257, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2)

TINY_CONFIGS = {
    "qwen2": lambda: tf.Qwen2Config(**TINY),
    "qwen3": lambda: tf.Qwen3Config(**TINY, head_dim=8),
    "llama": lambda: tf.LlamaConfig(**TINY),
    "mistral": lambda: tf.MistralConfig(**TINY),
    "gemma3": lambda: tf.Gemma3TextConfig(**TINY, head_dim=8),
    "gemma2-softcap": lambda: tf.Gemma2Config(**TINY, head_dim=8, final_logit_softcapping=5.0),
    "bloom": lambda: tf.BloomConfig(vocab_size=257, hidden_size=32, n_layer=3, n_head=4),
    "gpt2": lambda: tf.GPT2Config(vocab_size=257, n_embd=32, n_layer=3, n_head=4, bos_token_id=0, eos_token_id=0),
}


def tiny_model(arch: str, seed: int = 0) -> torch.nn.Module:
    """A random float32 causal LM of architecture ``arch`` (see TINY_CONFIGS), in train mode as built."""
    torch.manual_seed(seed)
    config = TINY_CONFIGS[arch]()
    config._attn_implementation = "eager"
    return tf.AutoModelForCausalLM.from_config(config)


@pytest.fixture(params=sorted(TINY_CONFIGS))
def tiny_handle(request) -> ModelHandle:
    """A ModelHandle around a tiny random model, one per supported architecture."""
    return ModelHandle.wrap(tiny_model(request.param), None, name=f"tiny-{request.param}")


@pytest.fixture(scope="session")
def qwen_tokenizer():
    from lensmap.models.loading import load_tokenizer

    return load_tokenizer("qwen2.5-0.5b")


@pytest.fixture(scope="session")
def gemma_tokenizer():
    from lensmap.models.loading import load_tokenizer

    return load_tokenizer("gemma-3-270m")


@pytest.fixture(scope="session")
def qwen_handle():
    from lensmap.models.loading import load_model

    return load_model("qwen2.5-0.5b", dtype="float32")
