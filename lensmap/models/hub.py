"""Hub ids: the local Hugging Face cache first; a download only when the user allows it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from lensmap.errors import ModelLoadError
from lensmap.models.offline import download_hint
from lensmap.models.zoo import ZOO


def hub_snapshot(repo_id: str) -> Path | None:
    """The local Hugging Face cache's snapshot of ``repo_id``, or None. Never touches the network."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # LocalEntryNotFoundError, an invalid id, an unreadable cache: not there
        return None


def not_cached(repo_id: str) -> ModelLoadError:
    try:
        from huggingface_hub import constants

        where = f" ({constants.HF_HUB_CACHE})"
    except Exception:
        where = ""
    local = Path(os.path.abspath(repo_id))
    return ModelLoadError(
        f"{repo_id!r} is not a local path ({local} does not exist) and not in the local Hugging Face "
        f"cache{where}. {download_hint()}; or give a local model directory, a .gguf file or a zoo name "
        f"({', '.join(sorted(ZOO))})."
    )


def download(repo_id: str, dtype: torch.dtype, device: str, spread: dict[str, Any] | None, trust_remote_code: bool,
              tokenizer_only: bool = False):
    """Fetch ``repo_id`` from the hub (only called when the user allowed downloads)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(repo_id, trust_remote_code=trust_remote_code)
        if tokenizer_only:
            return None, tokenizer
        kwargs: dict[str, Any] = dict(dtype=dtype, trust_remote_code=trust_remote_code)
        kwargs.update(spread or {})
        model = AutoModelForCausalLM.from_pretrained(repo_id, **kwargs)
    except Exception as error:
        offline = " (HF_HUB_OFFLINE is set, which forbids it)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise ModelLoadError(
            f"{repo_id!r} is not in the local Hugging Face cache and could not be downloaded{offline} "
            f"({type(error).__name__}: {' '.join(str(error).split())[:300]}). Check the id and the network, or "
            "pass a local directory / .gguf file / zoo name instead."
        ) from error
    if not spread:
        model.to(device)
    return model, tokenizer
