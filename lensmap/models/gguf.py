"""GGUF files, dequantized once into a cached float32 checkpoint with its tokenizer and integrity record.

The conversion runs in a temporary directory that is removed on any error, Ctrl-C, SIGTERM or
SIGHUP, and swept at the next conversion if the process was killed outright. The checkpoint's
files are hashed once when written (``lensmap_integrity.json``) and checked at every load:
cheaply by default, fully with ``verify="full"`` (see :mod:`lensmap.models.integrity`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import torch

from lensmap.errors import IntegrityError, ModelLoadError
from lensmap.io import make_temporary_directory, sweep_stale
from lensmap.models.integrity import Level, check_file, file_record, read_records, write_records
from lensmap.models.sources import quiet_transformers
from lensmap.models.zoo import cache_dir
from lensmap.signals import deferred_signals, terminate_on_signals

#: The integrity record inside a converted checkpoint directory.
CHECKPOINT_RECORD = "lensmap_integrity.json"
#: Temporary conversion directories of lensmap versions that did not name them by process id.
_LEGACY_CONVERSION = re.compile(r"^\..+-[0-9a-f]{16}\.[a-z0-9_]{8}$")



def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantize a GGUF file into a float32 safetensors checkpoint + tokenizer in ``out_dir``.

    Written into a temporary directory beside ``out_dir`` (named for this process) that replaces
    ``out_dir`` only when complete; an error, Ctrl-C, SIGTERM or SIGHUP removes it, and temporary
    directories of conversions that were killed outright are swept first. The checksums of every
    file are recorded in :data:`CHECKPOINT_RECORD`.
    """
    import transformers
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(out_dir.parent, legacy=_LEGACY_CONVERSION, legacy_age_seconds=3600)
    quiet_transformers()
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


def gguf_cache_dir(gguf: Path, key: str | None = None) -> Path:
    import hashlib

    if key is None:
        st = gguf.stat()
        key = hashlib.sha256(f"{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
    return cache_dir() / "converted" / f"{gguf.stem}-{key[:16]}"


def converted_dir(gguf: Path, key: str | None = None, level: Level = "cheap") -> tuple[Path, str]:
    """The converted checkpoint of ``gguf`` (converting it if needed) and what was verified."""
    out = gguf_cache_dir(gguf, key)
    if (out / "model.safetensors").is_file():
        return out, _check_checkpoint(out, gguf, level)
    try:
        _convert_gguf(gguf, out)
    except ModelLoadError:
        raise
    except Exception as error:
        raise ModelLoadError(f"could not load the GGUF file {gguf}: {error}") from error
    return out, "full (just converted)"
