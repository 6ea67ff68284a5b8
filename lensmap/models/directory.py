"""Check and load a local Hugging Face model directory: config, weights and tokenizer, each with a clear error.

Every problem with the user's files — a truncated or corrupt ``model.safetensors``, a broken or
edited ``config.json``, missing tokenizer files — is a :class:`~lensmap.errors.ModelLoadError`
naming the file and the fix.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from lensmap.errors import ModelLoadError

#: Files that make a directory hold a tokenizer (any one of them, or a ``*.tiktoken`` file).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model",
                   "sentencepiece.bpe.model", "vocab.model")
#: Weight files ``from_pretrained`` reads from a directory, in its order of preference.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
#: Checkpoint keys transformers may drop on load without it mattering (recomputed buffers).
HARMLESS_UNEXPECTED = re.compile(r"(rotary_emb\.inv_freq|\.attn\.bias|\.attn\.masked_bias)$")





def config_problem(directory: Path, trust_remote_code: bool = False) -> None:
    """Raise a ModelLoadError if ``config.json`` is missing, not a JSON object, or rejected by transformers."""
    path = directory / "config.json"
    if not path.is_file():
        raise ModelLoadError(f"{directory} has no config.json: is it a Hugging Face model directory?")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        config = None
        detail = "it is not UTF-8 text"
    except json.JSONDecodeError as error:
        config = None
        detail = f"{error.msg} at line {error.lineno}, column {error.colno}"
    else:
        detail = "it is not a JSON object"
    if not isinstance(config, dict):
        raise ModelLoadError(
            f"the model's config file {path} is broken ({detail}): it looks truncated or edited by hand. "
            "Restore it from the original model (or save it again with model.config.save_pretrained(directory))"
        )
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(str(directory), trust_remote_code=trust_remote_code, local_files_only=True)
    except Exception as error:  # transformers validates the fields: name the config, not the tokenizer
        text = " ".join(str(error).split())
        if "trust_remote_code" in text:
            raise ModelLoadError(f"the model in {directory} needs its own Python code to load; if you trust it, "
                                 "set trust_remote_code: true (trust_remote_code=True)") from None
        if "does not recognize this architecture" in text or ("model type" in text and "recognize" in text):
            raise ModelLoadError(f"{path} names a model_type this transformers does not know ({text[:300]}). "
                                 "Check config.json, or update transformers") from None
        raise ModelLoadError(f"the model's config file {path} is inconsistent ({type(error).__name__}: {text[:400]}). "
                             "Restore it from the original model") from None


def _safetensors_files(directory: Path) -> list[Path]:
    """The safetensors files a directory's weights live in (one file, or the shards of its index)."""
    single = directory / "model.safetensors"
    if single.is_file():
        return [single]
    index = directory / "model.safetensors.index.json"
    if not index.is_file():
        return []
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        names = sorted(set(weight_map.values()))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ModelLoadError(f"{index} is broken ({type(error).__name__}: {error}). Restore it from the original "
                             "model") from None
    missing = [n for n in names if not (directory / n).is_file()]
    if missing:
        raise ModelLoadError(f"{directory} is missing weight shard(s) {', '.join(missing)} named in {index.name}. "
                             "Copy the complete model directory")
    return [directory / n for n in names]


def _check_weights(directory: Path, fix: str) -> None:
    """Raise a ModelLoadError for missing weights or a truncated/corrupt safetensors header."""
    if not any((directory / name).is_file() for name in WEIGHT_FILES):
        raise ModelLoadError(f"{directory} has no weights (none of {', '.join(WEIGHT_FILES)}). {fix}")
    from safetensors import SafetensorError, safe_open

    for path in _safetensors_files(directory):
        try:
            with safe_open(str(path), framework="pt") as f:
                f.keys()
        except (SafetensorError, OSError, ValueError) as error:
            raise ModelLoadError(f"{path} is truncated or corrupt ({error}). {fix}") from None


def _tokenizer_files(directory: Path) -> list[str]:
    return [n for n in TOKENIZER_FILES if (directory / n).is_file()] + [p.name for p in directory.glob("*.tiktoken")]


def load_tokenizer_dir(directory: Path, trust_remote_code: bool, fix: str):
    """The tokenizer saved in ``directory``, or a ModelLoadError (never an empty tokenizer)."""
    from transformers import AutoTokenizer

    from lensmap.models.tokenizers import tokenizer_problem

    if not _tokenizer_files(directory):
        raise ModelLoadError(
            f"found no tokenizer in {directory}: none of {', '.join(TOKENIZER_FILES)} is there. Save the "
            f"model's tokenizer there too (tokenizer.save_pretrained('{directory}'))"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory), trust_remote_code=trust_remote_code,
                                                  local_files_only=True)
    except Exception as error:  # tokenizers/transformers raise many types for a broken file
        raise ModelLoadError(
            f"could not load the tokenizer in {directory} ({type(error).__name__}: {error}). "
            f"Its tokenizer files ({', '.join(_tokenizer_files(directory))}, tokenizer_config.json) are "
            f"damaged or incomplete. {fix}"
        ) from None
    problem = tokenizer_problem(tokenizer)
    if problem:
        raise ModelLoadError(f"the tokenizer in {directory} is empty or broken: {problem}. Save the model's "
                             f"real tokenizer there (tokenizer.save_pretrained('{directory}')). {fix}")
    return tokenizer


def _shape_mismatches(directory: Path, limit: int = 3) -> list[str]:
    """``name: [shape] in the file, [shape] for config.json`` for weights that do not fit the config."""
    try:
        from safetensors import safe_open
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(str(directory), local_files_only=True)
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config)
        expected = {k: list(v.shape) for k, v in skeleton.state_dict().items()}
        found: dict[str, list[int]] = {}
        for path in _safetensors_files(directory):
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():
                    found[key] = list(f.get_slice(key).get_shape())
    except Exception:  # only for a better message: never fail here
        return []
    out = []
    for key, shape in found.items():
        want = expected.get(key) or next((v for k, v in expected.items() if k.endswith("." + key)), None)
        if want is not None and want != shape:
            out.append(f"{key}: {shape} in the file, {want} for config.json")
    return out[:limit]


def load_weights(directory: Path, dtype: torch.dtype, device: str, spread: dict[str, Any] | None,
                  trust_remote_code: bool, fix: str):
    """``AutoModelForCausalLM.from_pretrained(directory)`` with every failure a ModelLoadError.

    ``spread`` holds the placement keywords (``device_map``, ``max_memory``, ``offload_folder``:
    :func:`lensmap.models.devices.placement`); None puts the whole model on ``device``.
    """
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = dict(dtype=dtype, trust_remote_code=trust_remote_code, local_files_only=True,
                                  output_loading_info=True)
    kwargs.update(spread or {})
    try:
        model, info = AutoModelForCausalLM.from_pretrained(str(directory), **kwargs)
    except Exception as error:  # the user's files: every failure gets a message naming them
        text = str(error)
        if "mismatch" in text or "ignore_mismatched_sizes" in text:
            details = _shape_mismatches(directory)
            raise ModelLoadError(
                f"the weights in {directory} do not fit its config.json"
                + (f" ({'; '.join(details)})" if details else "")
                + ". Was config.json edited (hidden_size, intermediate_size, num_attention_heads, vocab_size, ...)? "
                f"Restore the model's original config.json. {fix}"
            ) from None
        if "does not recognize this architecture" in text or ("model type" in text and "recognize" in text):
            raise ModelLoadError(f"config.json in {directory} names a model_type this transformers does not "
                                 f"know ({text.splitlines()[0]}). Check config.json, or update transformers") from None
        if type(error).__name__.startswith("StrictDataclass") or type(error) is ValueError:
            raise ModelLoadError(f"config.json in {directory} is inconsistent ({type(error).__name__}: "
                                 f"{' '.join(text.split())}). Restore the model's original config.json. {fix}") from None
        raise ModelLoadError(f"could not load the model in {directory} ({type(error).__name__}: "
                             f"{' '.join(text.split())}). {fix}") from None
    missing = list(info.get("missing_keys") or [])
    unexpected = [k for k in info.get("unexpected_keys") or [] if not HARMLESS_UNEXPECTED.search(k)]
    mismatched = list(info.get("mismatched_keys") or [])
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} weight(s) the config needs are not in the file (e.g. {missing[0]}), "
                         "so they would be random")
        if unexpected:
            parts.append(f"{len(unexpected)} weight(s) in the file do not belong to the config (e.g. {unexpected[0]})")
        if mismatched:
            parts.append(f"{len(mismatched)} weight(s) have the wrong shape (e.g. {mismatched[0]})")
        raise ModelLoadError(f"the weights in {directory} do not match its config.json: {'; '.join(parts)}. "
                             "Was config.json edited (num_hidden_layers, ...)? Restore the model's original "
                             f"config.json. {fix}")
    if not spread:
        model.to(device)
    return model


def load_directory(directory: Path, dtype: torch.dtype, device: str, spread: dict[str, Any] | None,
                    trust_remote_code: bool, fix: str):
    """Model and tokenizer from a local Hugging Face directory, each input problem a ModelLoadError.

    Checked before the slow load, in this order: ``config.json`` is valid JSON, the weights exist
    and their safetensors headers are intact (a truncated file fails here), tokenizer files
    exist; then the tokenizer must have ordinary tokens and every weight must fit the config.
    """
    config_problem(directory, trust_remote_code)
    _check_weights(directory, fix)
    tokenizer = load_tokenizer_dir(directory, trust_remote_code, fix)
    model = load_weights(directory, dtype, device, spread, trust_remote_code, fix)
    return model, tokenizer
