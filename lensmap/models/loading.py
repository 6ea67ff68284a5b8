"""Load a causal LM and its tokenizer from a zoo name, a ``.gguf`` file, a local directory or a hub id.

The entry points (:func:`load_model`, :func:`load_tokenizer`); each kind of source has its own
module: :mod:`~lensmap.models.sources` (what a spec names), :mod:`~lensmap.models.gguf` (GGUF
files and zoo models, converted once into a cached float32 checkpoint), :mod:`~lensmap.models.directory`
(a local Hugging Face directory), :mod:`~lensmap.models.hub` (hub ids: local cache first, a
download only when the user allows it, see :mod:`lensmap.models.offline`).

Cached files are checked at every load: cheaply by default, fully with ``verify="full"``.
Measured on the zoo's Qwen2.5-0.5B (converted checkpoint: 6 files, 2.53 GB; joined GGUF:
0.49 GB) on a shared 2-core machine with the files in the page cache: the cheap check takes
1–6 ms for the checkpoint and under 1 ms for the GGUF; the full check 4.2–5.0 s and 1.1 s.
"""

from __future__ import annotations

import logging
import os
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from lensmap.errors import ModelLoadError
from lensmap.models.devices import placement, validate_device
from lensmap.models.directory import config_problem, load_directory, load_tokenizer_dir
from lensmap.models.gguf import converted_dir
from lensmap.models.handle import ModelHandle
from lensmap.models.hub import download, hub_snapshot, not_cached
from lensmap.models.integrity import verify_level
from lensmap.models.offline import download_hint, downloads_allowed
from lensmap.models.selfcheck import check_last_layer_lens
from lensmap.models.sources import quiet_transformers, resolve_model_source
from lensmap.models.zoo import get_zoo_entry, zoo_gguf_path

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

@lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 matmul support (AVX-512 BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(dtype: str | torch.dtype, device: str = "cpu") -> torch.dtype:
    """``"auto"`` → bfloat16 on CUDA or on a CPU with native bf16, else float32."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if str(device).startswith("cuda") or cpu_has_fast_bf16():
            return torch.bfloat16
        return torch.float32
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ModelLoadError(f"dtype must be one of auto, {', '.join(DTYPES)}; got {dtype!r}") from None



# --------------------------------------------------------------------------- entry points


def load_model(
    spec: str | os.PathLike,
    *,
    dtype: str | torch.dtype = "auto",
    device: str = "cpu",
    device_map: Any = None,
    max_memory: dict[Any, str] | None = None,
    offload_folder: str | os.PathLike | None = None,
    trust_remote_code: bool = False,
    self_check: bool = True,
    verify: bool | str = False,
    allow_download: bool | None = None,
) -> ModelHandle:
    """Load a model for analysis and return a :class:`ModelHandle`.

    Args:
        spec: a zoo name (``lensmap zoo`` lists them), a ``.gguf`` file, a local Hugging Face
            model directory, or a hub id (looked up in the local Hugging Face cache; downloaded
            only with ``allow_download``).
        dtype: ``auto`` (bfloat16 where the hardware runs it natively, else float32),
            ``float32``, ``bfloat16`` or ``float16``.
        device: torch device for the whole model (ignored when ``device_map`` is given); checked
            first against this machine's devices (:func:`lensmap.models.devices.validate_device`).
        device_map: passed to ``from_pretrained`` to shard a large model across devices
            (``auto``, ``balanced``, ``sequential`` or ``{module: device}``; docs/scale.md).
        max_memory: with ``device_map``, a cap per device (``{"cuda:0": "20GiB", "cpu": "60GiB"}``).
        offload_folder: with ``device_map``, where weights that fit on no device are kept on disk.
        trust_remote_code: allow the model's own Python code (off by default).
        self_check: confirm the last layer's logit lens reproduces the model's logits.
        verify: integrity check of lensmap's cached files (zoo GGUF, converted checkpoint).
            ``False``/``"cheap"`` (default): size, mtime and a digest of 16 sampled 64 KiB
            blocks per file — milliseconds; catches truncation, rewrites, header damage.
            ``True``/``"full"``: the sha256 of every byte (a few seconds for a 0.5B model) —
            catches any flipped byte. ``handle.info["verified"]`` says what was checked.
        allow_download: allow a hub download when a hub id is not in the local cache. ``None``
            (default) reads ``LENSMAP_ALLOW_DOWNLOAD`` (``1`` allows); otherwise nothing is
            downloaded.

    Raises:
        ModelLoadError: every problem with the model's files (missing, truncated, corrupt, a
            config that does not fit the weights, no tokenizer), with the file and the fix;
            :class:`~lensmap.errors.IntegrityError` for a damaged cache file.
        DeviceError: a device this machine does not have.
    """
    device = validate_device(device, device_map)
    spread = placement(device_map, max_memory, None if offload_folder is None else str(offload_folder))
    level = verify_level(verify)
    quiet_transformers()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    torch_dtype = resolve_dtype(dtype, device)
    kind, location = resolve_model_source(spec)
    start = time.perf_counter()
    verified = "none (not a lensmap cache)"
    if kind in ("zoo", "gguf"):
        if kind == "zoo":
            entry = get_zoo_entry(location)
            local, verified = converted_dir(zoo_gguf_path(location, verify=level), entry.sha256, level)
            name = location
        else:
            local, verified = converted_dir(Path(location), None, level)
            name = Path(location).stem
        fix = f"The cached conversion is damaged: delete it and run again (rm -r '{local}')."
        model, tokenizer = load_directory(local, torch_dtype, device, spread, False, fix)
    elif kind == "dir":
        fix = "Copy or save the model directory again (model.save_pretrained / tokenizer.save_pretrained)."
        model, tokenizer = load_directory(Path(location), torch_dtype, device, spread, trust_remote_code, fix)
        name = Path(location).name
    else:
        snapshot = hub_snapshot(location)
        if snapshot is not None:
            fix = (f"The local Hugging Face cache of {location!r} is incomplete or damaged: delete {snapshot} "
                   f"and download it again ({download_hint()}).")
            model, tokenizer = load_directory(snapshot, torch_dtype, device, spread, trust_remote_code, fix)
        elif downloads_allowed(allow_download):
            model, tokenizer = download(location, torch_dtype, device, spread, trust_remote_code)
        else:
            raise not_cached(location)
        name = location
    model.eval()
    handle = ModelHandle.wrap(model, tokenizer, name=name)
    handle.info.update(
        source=kind, location=str(location), dtype=str(torch_dtype).replace("torch.", ""),
        load_seconds=round(time.perf_counter() - start, 2),
        n_layers=handle.n_layers, d_model=handle.d_model, vocab_size=handle.vocab_size,
        n_params=sum(p.numel() for p in model.parameters()), verified=verified,
    )
    if self_check:
        handle.info["self_check_max_abs_diff"] = check_last_layer_lens(handle)
    return handle


def load_tokenizer(spec: str | os.PathLike, *, allow_download: bool | None = None, verify: bool | str = False):
    """Load only the tokenizer of a model spec (zoo name, .gguf, directory or hub id).

    Same rules as :func:`load_model`: local files only unless ``allow_download`` (or
    ``LENSMAP_ALLOW_DOWNLOAD=1``); a directory without tokenizer files, or with an empty or
    broken tokenizer, is a ModelLoadError.
    """
    level = verify_level(verify)
    quiet_transformers()
    kind, location = resolve_model_source(spec)
    if kind == "zoo":
        local, _ = converted_dir(zoo_gguf_path(location, verify=level), get_zoo_entry(location).sha256, level)
        return load_tokenizer_dir(local, False, f"Delete the cached conversion and run again (rm -r '{local}').")
    if kind == "gguf":
        local, _ = converted_dir(Path(location), None, level)
        return load_tokenizer_dir(local, False, f"Delete the cached conversion and run again (rm -r '{local}').")
    if kind == "dir":
        config_problem(Path(location))
        return load_tokenizer_dir(Path(location), False, "Save the tokenizer there again.")
    snapshot = hub_snapshot(location)
    if snapshot is not None:
        return load_tokenizer_dir(snapshot, False, f"Delete {snapshot} and download it again ({download_hint()}).")
    if downloads_allowed(allow_download):
        return download(location, torch.float32, "cpu", None, False, tokenizer_only=True)[1]
    raise not_cached(location)
