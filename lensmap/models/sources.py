"""What a model spec names: a zoo model, a ``.gguf`` file, a local directory or a hub id."""

from __future__ import annotations

import os
import re
from pathlib import Path

from lensmap.errors import ModelLoadError
from lensmap.models.zoo import ZOO

_HUB_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _is_hub_id(spec: str) -> bool:
    """``org/name`` as the Hugging Face hub spells repository ids."""
    parts = spec.split("/")
    return (len(parts) == 2 and all(_HUB_PART.fullmatch(p) and len(p) <= 96 for p in parts)
            and "--" not in spec and ".." not in spec and not spec.endswith((".", "-")))


def _looks_like_path(spec: str) -> bool:
    """True when ``spec`` can only mean a file or directory (so a missing one is "does not exist")."""
    if spec.startswith(("/", ".", "~", "$")) or "\\" in spec:
        return True
    if spec.endswith((".gguf", ".safetensors", ".bin", ".json")) or spec.count("/") > 1:
        return True
    if "/" in spec and not _is_hub_id(spec):
        return True
    first = spec.split("/", 1)[0]
    return "/" in spec and Path(first).expanduser().is_dir()  # models/nope with a local models/ folder


def resolve_model_source(spec: str | os.PathLike) -> tuple[str, str]:
    """Return ``(kind, location)`` for a model spec: kind is zoo, gguf, dir or hub."""
    spec = os.fspath(spec)
    if spec in ZOO:
        return "zoo", spec
    path = Path(os.path.expandvars(spec)).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return "gguf", str(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is a directory but has no config.json: is it a Hugging Face model directory?")
        return "dir", str(path)
    if path.exists():
        raise ModelLoadError(f"{path} is neither a .gguf file nor a model directory")
    if _looks_like_path(spec):
        raise ModelLoadError(
            f"model path {spec!r} does not exist ({Path(os.path.abspath(path))}). Give an existing local "
            f"directory, a .gguf file, a zoo name ({', '.join(sorted(ZOO))}) or a Hugging Face id such as "
            "'Qwen/Qwen2.5-0.5B'."
        )
    if "/" not in spec:
        raise ModelLoadError(
            f"{spec!r} is not a zoo model, a path or a Hugging Face id (org/name). "
            f"Zoo models: {', '.join(sorted(ZOO))} (list them with `lensmap zoo`)."
        )
    return "hub", spec


def quiet_transformers():
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
