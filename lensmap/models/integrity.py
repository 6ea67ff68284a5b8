"""Checksums of the large files lensmap keeps in its cache (joined zoo GGUFs, converted checkpoints).

Each file is hashed once, when lensmap creates it, and a record is kept beside it:
``size``, ``mtime_ns``, the full ``sha256``, and ``sampled`` — the sha256 of
:data:`SAMPLE_BLOCKS` blocks of :data:`BLOCK_BYTES` bytes spread evenly over the file (always
including its first and last block, so a GGUF or safetensors header is always covered). Files
no larger than the sample are covered entirely.

Two levels of checking (:func:`check_file`):

``cheap`` (every load)
    size, mtime and the sampled digest: about 1 MiB read, a few milliseconds even for a 2.5 GB
    checkpoint. It catches a truncated or extended file, any rewrite that updates the mtime
    (then the full hash decides, once, and the record is refreshed if the content is intact),
    any damage to the header, and damage inside one of the sampled blocks. It does **not**
    catch a flipped byte elsewhere whose mtime was preserved (``os.utime``, some copy tools,
    bit rot): for a 2.5 GB file the sample covers about 0.04 % of it.
``full`` (``load_model(..., verify="full")``, ``lensmap check --verify``)
    the sha256 of every byte against the recorded (or, for zoo GGUFs, pinned) digest: catches
    any change, at the cost of reading the whole file (measured in the module docs of
    :mod:`lensmap.models.loading`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

from lensmap.errors import ModelLoadError

#: Number and size of the blocks the cheap check reads.
SAMPLE_BLOCKS = 16
BLOCK_BYTES = 64 * 1024
_READ = 1 << 22

Level = Literal["cheap", "full"]


def verify_level(verify: bool | str) -> Level:
    """``False``/``"cheap"`` → ``"cheap"``; ``True``/``"full"`` → ``"full"``; anything else is an error."""
    if verify is True or verify == "full":
        return "full"
    if verify is False or verify is None or verify == "cheap":
        return "cheap"
    raise ModelLoadError(f"verify must be False/'cheap' (size, mtime and sampled blocks) or True/'full' "
                         f"(sha256 of every byte); got {verify!r}")


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of every byte of ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_READ), b""):
            digest.update(block)
    return digest.hexdigest()


def _sample_offsets(size: int) -> list[int]:
    if size <= SAMPLE_BLOCKS * BLOCK_BYTES:
        return list(range(0, size, BLOCK_BYTES))
    last = size - BLOCK_BYTES
    return sorted({round(i * last / (SAMPLE_BLOCKS - 1)) for i in range(SAMPLE_BLOCKS)})


def sampled_digest(path: str | os.PathLike, size: int | None = None) -> str:
    """sha256 of the size and of :data:`SAMPLE_BLOCKS` evenly spread blocks (whole file if small)."""
    size = os.stat(path).st_size if size is None else size
    digest = hashlib.sha256(f"{size}:".encode())
    with open(path, "rb") as f:
        for offset in _sample_offsets(size):
            f.seek(offset)
            digest.update(offset.to_bytes(8, "big") + f.read(BLOCK_BYTES))
    return digest.hexdigest()


def file_record(path: str | os.PathLike, sha256: str | None = None) -> dict[str, Any]:
    """The record of ``path`` as it is now (hashing it fully unless ``sha256`` is given)."""
    st = os.stat(path)
    return {
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "sha256": sha256 or sha256_file(path),
        "sampled": sampled_digest(path, st.st_size),
    }


def check_file(path: str | os.PathLike, record: dict[str, Any], level: Level) -> tuple[str | None, bool]:
    """Compare ``path`` with its ``record``; return ``(problem or None, record_is_stale)``.

    ``record_is_stale`` is True when the mtime moved but a full hash proved the content intact:
    the caller should store a refreshed :func:`file_record` so the next cheap check is cheap.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "the file is missing", False
    if st.st_size != record.get("size"):
        return f"it has {st.st_size:,} bytes, {record.get('size', 0):,} were recorded", False
    if level == "full" or st.st_mtime_ns != record.get("mtime_ns"):
        digest = sha256_file(path)
        if digest != record.get("sha256"):
            return f"its sha256 is {digest}, {record.get('sha256')} was recorded", False
        return None, st.st_mtime_ns != record.get("mtime_ns")
    if sampled_digest(path, st.st_size) != record.get("sampled"):
        return "the blocks sampled by the quick check differ from the recorded ones", False
    return None, False


def read_records(path: str | os.PathLike) -> dict[str, Any] | None:
    """The JSON record file at ``path``, or None when it is missing or not a lensmap record."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == "lensmap-integrity" else None


def write_records(path: str | os.PathLike, files: dict[str, dict[str, Any]], **extra: Any) -> None:
    """Write ``{"format": "lensmap-integrity", "files": files, **extra}`` atomically."""
    from lensmap.io import atomic_write_text

    atomic_write_text(path, json.dumps({"format": "lensmap-integrity", "version": 1, **extra, "files": files},
                                       indent=1, sort_keys=True) + "\n")
