"""Safe file writes: a reader never sees a half-written file, and a killed run leaves nothing behind.

- :func:`atomic_write_text` / :func:`atomic_write_bytes` / :func:`atomic_write_csv` write one
  file through a temporary file in the same directory, then rename it into place.
- Temporary files and directories carry the writing process's id in their name
  (``.NAME.lensmap-tmp-PID-XXXXXXXX``); :func:`sweep_stale` removes those whose process is gone
  (a run killed with SIGKILL or by a power cut), and lensmap calls it before writing again.
- :func:`expand_path` expands ``~`` and ``$VARS`` in a path a config names, or says which is unset.

Output *directories* (manifests, refusing the user's files, staging) are :mod:`lensmap.outputs`.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd

from lensmap.errors import ConfigError

#: Name of the manifest lensmap writes into every output directory it fills.
_TMP_TAG = "lensmap-tmp"
#: ``.NAME.lensmap-tmp-PID-RANDOM`` (RANDOM may end in ``.tmp``).
_TMP_PATTERN = re.compile(r"^\..*\." + _TMP_TAG + r"-(?P<pid>\d+)-[A-Za-z0-9_.]+$")
#: Staging directories of lensmap versions before the manifest (``.NAME.staging-XXXXXXXX``):
#: they carry no process id, so only old ones are swept.
_LEGACY_STAGING = re.compile(r"^\..+\.staging-[a-z0-9_]{8}$")
_LEGACY_AGE_SECONDS = 6 * 3600


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --------------------------------------------------------------------------- temporaries


def temporary_name(name: str) -> str:
    """The prefix of a temporary file or directory made for ``name`` by this process.

    ``tempfile.mkstemp(prefix=temporary_name(name), dir=...)`` gives
    ``.NAME.lensmap-tmp-PID-XXXXXXXX``, which :func:`sweep_stale` recognises.
    """
    return f".{name}.{_TMP_TAG}-{os.getpid()}-"


def make_temporary_directory(parent: str | os.PathLike, name: str) -> Path:
    """Create a fresh temporary directory for ``name`` inside ``parent`` (mode as ``mkdir`` gives)."""
    path = Path(tempfile.mkdtemp(prefix=temporary_name(name), dir=parent))
    os.chmod(path, 0o777 & ~_umask())  # mkdtemp creates 0700
    return path


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    except (OverflowError, ValueError, OSError):
        return False
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def sweep_stale(
    directory: str | os.PathLike,
    *,
    legacy: re.Pattern[str] | None = _LEGACY_STAGING,
    legacy_age_seconds: float = _LEGACY_AGE_SECONDS,
) -> list[Path]:
    """Remove lensmap's temporary files and directories in ``directory`` left by dead processes.

    An entry is removed when its name is lensmap's temporary pattern
    (``.NAME.lensmap-tmp-PID-XXXXXXXX``) and process PID no longer exists; or when it matches
    ``legacy`` (the pid-less names of older lensmap versions) and was last modified more than
    ``legacy_age_seconds`` ago (six hours by default). Nothing else is touched. Returns the removed paths; never raises for an
    unreadable directory.
    """
    directory = Path(directory)
    removed: list[Path] = []
    try:
        entries = list(directory.iterdir())
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        match = _TMP_PATTERN.match(entry.name)
        stale = False
        if match:
            stale = not _pid_alive(int(match.group("pid")))
        elif legacy is not None and legacy.match(entry.name):
            with contextlib.suppress(OSError):
                stale = now - entry.lstat().st_mtime > legacy_age_seconds
        if stale:
            _remove(entry)
            removed.append(entry)
    return removed


def is_temporary(name: str) -> bool:
    return bool(_TMP_PATTERN.match(name) or _LEGACY_STAGING.match(name))


# --------------------------------------------------------------------------- single files


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same directory, then rename."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same directory, then rename.

    The temporary file is named for this process (see :func:`temporary_name`), removed on any
    error or interrupt, and swept by :func:`sweep_stale` if the process was killed outright.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temporary_name(path.name), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the mode open() would
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_csv(path: str | os.PathLike, frame: pd.DataFrame) -> Path:
    """Write a DataFrame as CSV (no index) atomically.

    Every non-numeric field is quoted, so token texts holding a lone carriage return or other
    control characters read back as one row.
    """
    return atomic_write_text(path, frame.to_csv(index=False, quoting=csv.QUOTE_NONNUMERIC))


# --------------------------------------------------------------------------- paths

_ENV_VAR = re.compile(r"\$(?:\{(?P<braced>[^}]*)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


def expand_path(path: str | os.PathLike, *, field: str | None = None) -> Path:
    """``~``, ``~user``, ``$VAR`` and ``${VAR}`` expanded, as a shell would; no other change.

    Use it on every path a config names (``output:``, prompt files, ``lens_path:``, ...).
    A variable that is not set, or a ``~user`` that does not exist, is a
    :class:`~lensmap.errors.ConfigError` naming ``field`` (e.g. ``"output"``), instead of a
    directory literally called ``$OUT`` or ``~``.
    """
    what = f"{field}: " if field else ""
    try:
        text = os.fspath(path)
    except TypeError:
        raise ConfigError(f"{what}expected a path, got {type(path).__name__} {path!r}") from None
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if not text.strip():
        raise ConfigError(f"{what}the path is empty; give a file or directory name")
    for match in _ENV_VAR.finditer(text):
        name = match.group("braced") if match.group("braced") is not None else match.group("plain")
        if name not in os.environ:
            raise ConfigError(
                f"{what}{text!r} uses the environment variable {name!r}, which is not set. "
                f"Set it (export {name}=...) or write the path out in full"
            )
    expanded = os.path.expanduser(os.path.expandvars(text))
    if expanded.startswith("~"):
        user = expanded[1:].split(os.sep, 1)[0]
        raise ConfigError(
            f"{what}{text!r} starts with ~{user}, but there is no user {user!r} on this machine. "
            "Write the path out in full"
        )
    return Path(expanded)
