"""Load a causal LM and its tokenizer from a zoo name, a ``.gguf`` file, a local directory or a hub id.

GGUF files (zoo models included) are dequantized once by transformers, then kept in lensmap's
cache as a plain float32 safetensors checkpoint with its tokenizer, so later loads take about a
second instead of ~30 s. Nothing here reaches a hub unless the user names a hub id that is not
already in the local Hugging Face cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from lensmap.errors import ModelLoadError
from lensmap.models.handle import ModelHandle
from lensmap.models.selfcheck import check_last_layer_lens
from lensmap.models.zoo import ZOO, cache_dir, get_zoo_entry, zoo_gguf_path

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


def _looks_like_path(spec: str) -> bool:
    return (
        spec.startswith(("/", ".", "~"))
        or spec.endswith(".gguf")
        or spec.count("/") > 1
        or os.sep in spec and os.path.exists(spec)
    )


def _quiet_transformers():
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantize a GGUF file into a float32 safetensors checkpoint + tokenizer in ``out_dir``."""
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    import transformers

    _quiet_transformers()
    transformers.logging.enable_progress_bar()  # the one slow step worth a bar
    print(f"lensmap: converting {gguf.name} to a cached float32 checkpoint (once, ~30 s) ...",
          file=sys.stderr, flush=True)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32,
            quantization_config=GgufConfig(dequantize=True),
        )
        save_model(model, str(tmp / "model.safetensors"))
        config = model.config.to_dict()
        config.pop("quantization_config", None)
        (tmp / "config.json").write_text(json.dumps(config, indent=1))
        tokenizer.save_pretrained(tmp)
        (tmp / "lensmap_source.json").write_text(json.dumps({"gguf": str(gguf)}))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        transformers.logging.disable_progress_bar()


def _gguf_cache_dir(gguf: Path, key: str | None = None) -> Path:
    if key is None:
        st = gguf.stat()
        key = hashlib.sha256(f"{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
    return cache_dir() / "converted" / f"{gguf.stem}-{key[:16]}"


def _converted_dir(gguf: Path, key: str | None = None) -> Path:
    out = _gguf_cache_dir(gguf, key)
    if not (out / "model.safetensors").is_file():
        try:
            _convert_gguf(gguf, out)
        except ModelLoadError:
            raise
        except Exception as error:
            raise ModelLoadError(f"could not load the GGUF file {gguf}: {error}") from error
    return out


def resolve_model_source(spec: str | os.PathLike) -> tuple[str, str]:
    """Return ``(kind, location)`` for a model spec: kind is zoo, gguf, dir or hub."""
    spec = str(spec)
    if spec in ZOO:
        return "zoo", spec
    path = Path(spec).expanduser()
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
            f"model path {spec!r} does not exist. Give an existing local directory, a .gguf file, "
            f"a zoo name ({', '.join(sorted(ZOO))}) or a Hugging Face id such as 'Qwen/Qwen2.5-0.5B'."
        )
    if "/" not in spec:
        raise ModelLoadError(
            f"{spec!r} is not a zoo model, a path or a Hugging Face id (org/name). "
            f"Zoo models: {', '.join(sorted(ZOO))} (list them with `lensmap zoo`)."
        )
    return "hub", spec


def _from_pretrained(location: str, dtype: torch.dtype, device: str, device_map: Any,
                     trust_remote_code: bool, local_only: bool):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = dict(dtype=dtype, trust_remote_code=trust_remote_code, local_files_only=local_only)
    if device_map is not None:
        kwargs["device_map"] = device_map
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code,
                                                  local_files_only=local_only)
    except (OSError, ValueError, TypeError) as error:
        if not Path(location).is_dir():
            raise
        raise ModelLoadError(
            f"found no tokenizer in {location} ({error}). Save the model's tokenizer there too "
            "(tokenizer.save_pretrained(directory))."
        ) from error
    model = AutoModelForCausalLM.from_pretrained(location, **kwargs)
    if device_map is None:
        model.to(device)
    return model, tokenizer


def load_model(
    spec: str | os.PathLike,
    *,
    dtype: str | torch.dtype = "auto",
    device: str = "cpu",
    device_map: Any = None,
    trust_remote_code: bool = False,
    self_check: bool = True,
) -> ModelHandle:
    """Load a model for analysis and return a :class:`ModelHandle`.

    Args:
        spec: a zoo name (``lensmap zoo`` lists them), a ``.gguf`` file, a local Hugging Face
            model directory, or a hub id (tried in the local cache first; downloads only if the
            id is missing locally and the network allows it).
        dtype: ``auto`` (bfloat16 where the hardware runs it natively, else float32),
            ``float32``, ``bfloat16`` or ``float16``.
        device: torch device for the whole model (ignored when ``device_map`` is given).
        device_map: passed to ``from_pretrained`` to shard a large model across devices.
        trust_remote_code: allow the model's own Python code (off by default).
        self_check: confirm the last layer's logit lens reproduces the model's logits.
    """
    _quiet_transformers()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    torch_dtype = resolve_dtype(dtype, device)
    kind, location = resolve_model_source(spec)
    start = time.perf_counter()
    if kind == "zoo":
        entry = get_zoo_entry(location)
        local = _converted_dir(zoo_gguf_path(location), entry.sha256)
        model, tokenizer = _from_pretrained(str(local), torch_dtype, device, device_map, False, True)
        name = location
    elif kind == "gguf":
        local = _converted_dir(Path(location))
        model, tokenizer = _from_pretrained(str(local), torch_dtype, device, device_map, False, True)
        name = Path(location).stem
    elif kind == "dir":
        try:
            model, tokenizer = _from_pretrained(location, torch_dtype, device, device_map, trust_remote_code, True)
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"could not load the model directory {location}: {error}") from error
        name = Path(location).name
    else:
        try:
            model, tokenizer = _from_pretrained(location, torch_dtype, device, device_map, trust_remote_code, True)
        except OSError:
            try:
                model, tokenizer = _from_pretrained(location, torch_dtype, device, device_map, trust_remote_code, False)
            except Exception as error:
                raise ModelLoadError(
                    f"{location!r} is not in the local Hugging Face cache and could not be downloaded "
                    f"({type(error).__name__}: {error}). Download it on a machine with network access, or "
                    "pass a local directory / .gguf file / zoo name instead."
                ) from error
        name = location
    model.eval()
    handle = ModelHandle.wrap(model, tokenizer, name=name)
    handle.info.update(
        source=kind, location=str(location), dtype=str(torch_dtype).replace("torch.", ""),
        load_seconds=round(time.perf_counter() - start, 2),
        n_layers=handle.n_layers, d_model=handle.d_model, vocab_size=handle.vocab_size,
        n_params=sum(p.numel() for p in model.parameters()),
    )
    if self_check:
        handle.info["self_check_max_abs_diff"] = check_last_layer_lens(handle)
    return handle


def load_tokenizer(spec: str | os.PathLike):
    """Load only the tokenizer of a model spec (zoo name, .gguf, directory or cached hub id)."""
    from transformers import AutoTokenizer

    _quiet_transformers()
    kind, location = resolve_model_source(spec)
    if kind == "zoo":
        location = str(_converted_dir(zoo_gguf_path(location), get_zoo_entry(location).sha256))
    elif kind == "gguf":
        location = str(_converted_dir(Path(location)))
    return AutoTokenizer.from_pretrained(location, local_files_only=kind != "hub")
