"""Load a causal LM and its tokenizer from a zoo name, a ``.gguf`` file, a local directory or a hub id.

GGUF files (zoo models included) are dequantized once by transformers, then kept in lensmap's
cache as a plain float32 safetensors checkpoint with its tokenizer, so later loads take about a
second instead of ~30 s. The conversion runs in a temporary directory that is removed on any
error, Ctrl-C, SIGTERM or SIGHUP, and swept at the next conversion if the process was killed
outright. The checkpoint's files are hashed once when written (``lensmap_integrity.json``) and
checked at every load: cheaply by default, fully with ``verify="full"`` (see
:mod:`lensmap.models.integrity`). Measured on the zoo's Qwen2.5-0.5B (converted checkpoint:
6 files, 2.53 GB; joined GGUF: 0.49 GB) on a shared 2-core machine with the files in the page
cache: the cheap check takes 1–6 ms for the checkpoint and under 1 ms for the GGUF; the full
check 4.2–5.0 s and 1.1 s (sha256 runs at ~0.5–0.7 GB/s there; from a cold disk it is
disk-bound).

Offline first: a hub id is looked up in the local Hugging Face cache only; nothing is
downloaded unless the user asks (``allow_download=True`` or ``LENSMAP_ALLOW_DOWNLOAD=1``, see
:mod:`lensmap.models.offline`).

Every problem with the user's files — a truncated or corrupt ``model.safetensors``, a broken or
edited ``config.json``, missing tokenizer files, a path that does not exist — is a
:class:`~lensmap.errors.ModelLoadError` naming the file and the fix.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from lensmap.errors import IntegrityError, ModelLoadError
from lensmap.io import make_temporary_directory, sweep_stale
from lensmap.models.devices import validate_device
from lensmap.models.handle import ModelHandle
from lensmap.models.integrity import Level, check_file, file_record, read_records, verify_level, write_records
from lensmap.models.selfcheck import check_last_layer_lens
from lensmap.models.offline import download_hint, downloads_allowed
from lensmap.models.zoo import ZOO, cache_dir, get_zoo_entry, zoo_gguf_path
from lensmap.signals import deferred_signals, terminate_on_signals

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

#: The integrity record inside a converted checkpoint directory.
CHECKPOINT_RECORD = "lensmap_integrity.json"
#: Files that make a directory hold a tokenizer (any one of them, or a ``*.tiktoken`` file).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model",
                   "sentencepiece.bpe.model", "vocab.model")
#: Weight files ``from_pretrained`` reads from a directory, in its order of preference.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
#: Temporary conversion directories of lensmap versions that did not name them by process id.
_LEGACY_CONVERSION = re.compile(r"^\..+-[0-9a-f]{16}\.[a-z0-9_]{8}$")
#: Checkpoint keys transformers may drop on load without it mattering (recomputed buffers).
_HARMLESS_UNEXPECTED = re.compile(r"(rotary_emb\.inv_freq|\.attn\.bias|\.attn\.masked_bias)$")


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


# --------------------------------------------------------------------------- what a spec names

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


def _quiet_transformers():
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


# --------------------------------------------------------------------------- checking a directory


def _config_problem(directory: Path, trust_remote_code: bool = False) -> None:
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


def _load_tokenizer_dir(directory: Path, trust_remote_code: bool, fix: str):
    """The tokenizer saved in ``directory``, or a ModelLoadError (never an empty tokenizer)."""
    from transformers import AutoTokenizer

    from lensmap.languages.tokens import tokenizer_problem

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


def _load_weights(directory: Path, dtype: torch.dtype, device: str, device_map: Any,
                  trust_remote_code: bool, fix: str):
    """``AutoModelForCausalLM.from_pretrained(directory)`` with every failure a ModelLoadError."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = dict(dtype=dtype, trust_remote_code=trust_remote_code, local_files_only=True,
                                  output_loading_info=True)
    if device_map is not None:
        kwargs["device_map"] = device_map
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
    unexpected = [k for k in info.get("unexpected_keys") or [] if not _HARMLESS_UNEXPECTED.search(k)]
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
    if device_map is None:
        model.to(device)
    return model


def _load_directory(directory: Path, dtype: torch.dtype, device: str, device_map: Any,
                    trust_remote_code: bool, fix: str):
    """Model and tokenizer from a local Hugging Face directory, each input problem a ModelLoadError.

    Checked before the slow load, in this order: ``config.json`` is valid JSON, the weights exist
    and their safetensors headers are intact (a truncated file fails here), tokenizer files
    exist; then the tokenizer must have ordinary tokens and every weight must fit the config.
    """
    _config_problem(directory, trust_remote_code)
    _check_weights(directory, fix)
    tokenizer = _load_tokenizer_dir(directory, trust_remote_code, fix)
    model = _load_weights(directory, dtype, device, device_map, trust_remote_code, fix)
    return model, tokenizer


# --------------------------------------------------------------------------- GGUF conversion cache


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantize a GGUF file into a float32 safetensors checkpoint + tokenizer in ``out_dir``.

    Written into a temporary directory beside ``out_dir`` (named for this process) that replaces
    ``out_dir`` only when complete; an error, Ctrl-C, SIGTERM or SIGHUP removes it, and temporary
    directories of conversions that were killed outright are swept first. The checksums of every
    file are recorded in :data:`CHECKPOINT_RECORD`.
    """
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    import transformers

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(out_dir.parent, legacy=_LEGACY_CONVERSION, legacy_age_seconds=3600)
    _quiet_transformers()
    transformers.logging.enable_progress_bar()  # the one slow step worth a bar
    print(f"lensmap: converting {gguf.name} to a cached float32 checkpoint (once, ~30 s) ...",
          file=sys.stderr, flush=True)
    try:
        with terminate_on_signals():
            tmp = make_temporary_directory(out_dir.parent, out_dir.name)
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
                _record_checkpoint(tmp, gguf)
                with deferred_signals():
                    if out_dir.exists():
                        shutil.rmtree(out_dir)
                    os.replace(tmp, out_dir)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    finally:
        transformers.logging.disable_progress_bar()


def _record_checkpoint(directory: Path, source: Path) -> None:
    """Hash every file of a converted checkpoint once and write :data:`CHECKPOINT_RECORD`."""
    files = {p.name: file_record(p) for p in sorted(directory.iterdir())
             if p.is_file() and p.name != CHECKPOINT_RECORD}
    write_records(directory / CHECKPOINT_RECORD, files, source=str(source))


def _check_checkpoint(directory: Path, source: Path, level: Level) -> str:
    """Check a converted checkpoint against its record; return what was checked (for ``handle.info``).

    A checkpoint from a lensmap version that kept no record is hashed now and recorded.
    """
    records = read_records(directory / CHECKPOINT_RECORD)
    if records is None:
        print(f"lensmap: recording checksums of the cached checkpoint {directory} (once) ...",
              file=sys.stderr, flush=True)
        try:
            _record_checkpoint(directory, source)
        except OSError:
            return "none (cache not writable)"
        return "full (checksums recorded now)"
    stale = False
    for name, record in sorted(records["files"].items()):
        problem, refreshed = check_file(directory / name, record, level)
        if problem is not None:
            raise IntegrityError(
                f"the cached checkpoint file {directory / name} is damaged: {problem}. Delete the cached "
                f"conversion and run again, and lensmap converts {source} anew (~30-60 s):\n"
                f"    rm -r '{directory}'"
            )
        stale = stale or refreshed
    if stale:  # a touched but intact file: refresh the record so the next check is cheap again
        try:
            _record_checkpoint(directory, source)
        except OSError:
            pass
    return f"{level} ({len(records['files'])} files)"


def _gguf_cache_dir(gguf: Path, key: str | None = None) -> Path:
    import hashlib

    if key is None:
        st = gguf.stat()
        key = hashlib.sha256(f"{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
    return cache_dir() / "converted" / f"{gguf.stem}-{key[:16]}"


def _converted_dir(gguf: Path, key: str | None = None, level: Level = "cheap") -> tuple[Path, str]:
    """The converted checkpoint of ``gguf`` (converting it if needed) and what was verified."""
    out = _gguf_cache_dir(gguf, key)
    if (out / "model.safetensors").is_file():
        return out, _check_checkpoint(out, gguf, level)
    try:
        _convert_gguf(gguf, out)
    except ModelLoadError:
        raise
    except Exception as error:
        raise ModelLoadError(f"could not load the GGUF file {gguf}: {error}") from error
    return out, "full (just converted)"


# --------------------------------------------------------------------------- hub ids


def _hub_snapshot(repo_id: str) -> Path | None:
    """The local Hugging Face cache's snapshot of ``repo_id``, or None. Never touches the network."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # LocalEntryNotFoundError, an invalid id, an unreadable cache: not there
        return None


def _not_cached(repo_id: str) -> ModelLoadError:
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


def _download(repo_id: str, dtype: torch.dtype, device: str, device_map: Any, trust_remote_code: bool,
              tokenizer_only: bool = False):
    """Fetch ``repo_id`` from the hub (only called when the user allowed downloads)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(repo_id, trust_remote_code=trust_remote_code)
        if tokenizer_only:
            return None, tokenizer
        kwargs: dict[str, Any] = dict(dtype=dtype, trust_remote_code=trust_remote_code)
        if device_map is not None:
            kwargs["device_map"] = device_map
        model = AutoModelForCausalLM.from_pretrained(repo_id, **kwargs)
    except Exception as error:
        offline = " (HF_HUB_OFFLINE is set, which forbids it)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise ModelLoadError(
            f"{repo_id!r} is not in the local Hugging Face cache and could not be downloaded{offline} "
            f"({type(error).__name__}: {' '.join(str(error).split())[:300]}). Check the id and the network, or "
            "pass a local directory / .gguf file / zoo name instead."
        ) from error
    if device_map is None:
        model.to(device)
    return model, tokenizer


# --------------------------------------------------------------------------- entry points


def load_model(
    spec: str | os.PathLike,
    *,
    dtype: str | torch.dtype = "auto",
    device: str = "cpu",
    device_map: Any = None,
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
        device_map: passed to ``from_pretrained`` to shard a large model across devices.
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
    level = verify_level(verify)
    _quiet_transformers()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    torch_dtype = resolve_dtype(dtype, device)
    kind, location = resolve_model_source(spec)
    start = time.perf_counter()
    verified = "none (not a lensmap cache)"
    if kind in ("zoo", "gguf"):
        if kind == "zoo":
            entry = get_zoo_entry(location)
            local, verified = _converted_dir(zoo_gguf_path(location, verify=level), entry.sha256, level)
            name = location
        else:
            local, verified = _converted_dir(Path(location), None, level)
            name = Path(location).stem
        fix = f"The cached conversion is damaged: delete it and run again (rm -r '{local}')."
        model, tokenizer = _load_directory(local, torch_dtype, device, device_map, False, fix)
    elif kind == "dir":
        fix = "Copy or save the model directory again (model.save_pretrained / tokenizer.save_pretrained)."
        model, tokenizer = _load_directory(Path(location), torch_dtype, device, device_map, trust_remote_code, fix)
        name = Path(location).name
    else:
        snapshot = _hub_snapshot(location)
        if snapshot is not None:
            fix = (f"The local Hugging Face cache of {location!r} is incomplete or damaged: delete {snapshot} "
                   f"and download it again ({download_hint()}).")
            model, tokenizer = _load_directory(snapshot, torch_dtype, device, device_map, trust_remote_code, fix)
        elif downloads_allowed(allow_download):
            model, tokenizer = _download(location, torch_dtype, device, device_map, trust_remote_code)
        else:
            raise _not_cached(location)
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
    _quiet_transformers()
    kind, location = resolve_model_source(spec)
    if kind == "zoo":
        local, _ = _converted_dir(zoo_gguf_path(location, verify=level), get_zoo_entry(location).sha256, level)
        return _load_tokenizer_dir(local, False, f"Delete the cached conversion and run again (rm -r '{local}').")
    if kind == "gguf":
        local, _ = _converted_dir(Path(location), None, level)
        return _load_tokenizer_dir(local, False, f"Delete the cached conversion and run again (rm -r '{local}').")
    if kind == "dir":
        _config_problem(Path(location))
        return _load_tokenizer_dir(Path(location), False, "Save the tokenizer there again.")
    snapshot = _hub_snapshot(location)
    if snapshot is not None:
        return _load_tokenizer_dir(snapshot, False, f"Delete {snapshot} and download it again ({download_hint()}).")
    if downloads_allowed(allow_download):
        return _download(location, torch.float32, "cpu", None, False, tokenizer_only=True)[1]
    raise _not_cached(location)
