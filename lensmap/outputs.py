"""Output directories lensmap owns: it never deletes or overwrites a file it did not write.

- :func:`prepare_output` checks an output location *before* any slow work (loading a model):
  it expands ``~`` and ``$VARS``, refuses files, the current/home/root directory and their
  ancestors, directories holding the user's own files, and locations that cannot be written.
- :func:`staged_directory` collects a run's files in a hidden staging directory and publishes
  them into the output directory only when the run succeeded. Every output directory gets a
  small manifest, :data:`OUTPUT_MANIFEST` (``.lensmap-output.json``), listing the command and
  every file lensmap wrote there (with size and mtime); only files listed there are ever
  replaced or removed by a later run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from lensmap.errors import OutputError
from lensmap.io import (
    atomic_write_text,
    expand_path,
    is_temporary,
    make_temporary_directory,
    sweep_stale,
    temporary_name,
)
from lensmap.signals import deferred_signals, terminate_on_signals
from lensmap.version import __version__

__all__ = ["OUTPUT_MANIFEST", "prepare_output", "prepare_output_file", "read_output_manifest",
           "record_output_files", "staged_directory"]

#: Name of the manifest lensmap writes into every output directory it fills.
OUTPUT_MANIFEST = ".lensmap-output.json"
_MANIFEST_FORMAT = "lensmap-output"


def _forbidden_reason(resolved: Path) -> str | None:
    """Why ``resolved`` must never be an output directory, or None."""
    if resolved == Path(resolved.anchor):
        return "the root of the file system"
    cwd = home = None
    with contextlib.suppress(OSError):
        cwd = Path.cwd().resolve()
    with contextlib.suppress(RuntimeError, KeyError, OSError):
        home = Path.home().resolve()
    if resolved == cwd:
        return "the current directory"
    if resolved == home:
        return "your home directory"
    if cwd is not None and resolved in cwd.parents:
        return "an ancestor of the current directory"
    if home is not None and resolved in home.parents:
        return "an ancestor of your home directory"
    return None


def read_output_manifest(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of an output directory lensmap wrote, or None if it has none.

    Raises OutputError if the manifest exists but is unreadable (lensmap then cannot tell its
    files from the user's, so it touches nothing).
    """
    path = Path(directory) / OUTPUT_MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if manifest.get("format") != _MANIFEST_FORMAT or not isinstance(manifest.get("files"), dict):
            raise ValueError(f"not a {_MANIFEST_FORMAT} manifest")
    except (OSError, ValueError, AttributeError) as error:
        raise OutputError(
            f"{path} is unreadable ({error}), so lensmap cannot tell which files in {directory} it wrote. "
            "Move the files you want to keep elsewhere and delete the directory, or choose another output"
        ) from None
    return manifest


def _safe_relative(name: Any) -> str | None:
    """``name`` if it is a plain relative path inside a directory (no ``..``, not absolute), else None."""
    if not isinstance(name, str) or not name or "\x00" in name:
        return None
    parts = Path(name).parts
    if Path(name).is_absolute() or any(p in ("..", ".", "") for p in parts) or name != Path(*parts).as_posix():
        return None
    return name


def _through_symlink(target: Path, rel: str) -> bool:
    """True if a folder on the way from ``target`` to ``rel`` is a symbolic link (it may lead to the user's files)."""
    current = target
    for part in Path(rel).parts[:-1]:
        current = current / part
        if current.is_symlink():
            return True
    return False


def _stat_pair(path: Path) -> list[int]:
    st = path.lstat()
    return [st.st_size, st.st_mtime_ns]


def _owned_files(target: Path, manifest: dict[str, Any] | None, adopt: Iterable[str]) -> dict[str, bool]:
    """Files in ``target`` lensmap may replace or remove: ``{relative path: unchanged since written}``.

    A listed file counts as unchanged when its size and mtime match one the manifest recorded;
    a file the user edited afterwards is reported as changed. ``adopt``: names the caller knows
    lensmap wrote (outputs from before manifests existed); they count as unchanged.
    """
    owned: dict[str, bool] = {}
    if manifest is not None:
        for name, stats in manifest["files"].items():
            rel = _safe_relative(name)
            if rel is None or _through_symlink(target, rel):
                continue  # a manifest can never point lensmap outside its directory
            path = target / rel
            if not (path.is_file() or path.is_symlink()):
                continue
            recorded = stats if isinstance(stats, list) else []
            owned[rel] = _stat_pair(path) in [list(s) for s in recorded if isinstance(s, list)]
    for name in adopt:
        rel = _safe_relative(name)
        if rel is not None and not _through_symlink(target, rel) and ((target / rel).is_file() or (target / rel).is_symlink()):
            owned[rel] = True
    return owned


def _listing(names: Iterable[str], limit: int = 6) -> str:
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _user_entries(target: Path, owned: Iterable[str]) -> list[str]:
    """Top-level entries of ``target`` that are neither lensmap's files nor its temporaries."""
    owned_top = {Path(rel).parts[0] for rel in owned}
    entries = []
    for entry in target.iterdir():
        if entry.name == OUTPUT_MANIFEST or is_temporary(entry.name):
            continue
        if entry.name in owned_top and (entry.is_file() or entry.is_symlink()):
            continue
        if entry.name in owned_top and entry.is_dir() and not entry.is_symlink():
            inner = [p for p in entry.rglob("*") if not p.is_dir()]
            if all(p.relative_to(target).as_posix() in set(owned) for p in inner):
                continue
        entries.append(entry.name + ("/" if entry.is_dir() else ""))
    return entries


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path(path.anchor)


def _check_writable(shown: str, directory: Path) -> None:
    """Prove ``directory`` is writable by creating and removing a temporary directory in it."""
    try:
        probe = tempfile.mkdtemp(prefix=temporary_name("write-check"), dir=directory)
        os.rmdir(probe)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise OutputError(
            f"cannot write the output {shown}: {directory} is not writable ({reason}). "
            "Choose an output directory you can write to, or fix its permissions"
        ) from None


def _check_output(path: Path, command: str | None, overwrite: bool, adopt: Iterable[str] = ()) -> Path:
    """All checks of :func:`prepare_output`; returns the real directory (symlinks resolved)."""
    shown = f"{str(path)!r}"
    absolute = Path(os.path.abspath(path))
    target = Path(os.path.realpath(absolute))
    reason = _forbidden_reason(target)
    if reason:
        raise OutputError(
            f"refusing to write the output into {shown}: it is {reason}, and lensmap's files would be "
            "mixed with yours. Name a new subdirectory instead, e.g. output: reports/run1"
        )
    if absolute.is_symlink() and not target.exists():
        raise OutputError(
            f"the output {shown} is a symbolic link to {target}, which does not exist. "
            "Create that directory or point the output elsewhere"
        )
    if target.exists() and not target.is_dir():
        raise OutputError(
            f"the output {shown} is an existing file, not a directory; lensmap never replaces your files. "
            "Choose a directory name for the output (it is created if missing)"
        )
    if target.is_dir():
        manifest = read_output_manifest(target)
        previous = manifest.get("command") if manifest else None
        if manifest is not None and command and previous and previous != command and not overwrite:
            raise OutputError(
                f"the output directory {shown} holds the output of `lensmap {previous}`, not of "
                f"`lensmap {command}`. Choose another directory, or pass overwrite=True "
                f"(the --overwrite option) to replace lensmap's files there"
            )
        owned = _owned_files(target, manifest, adopt)
        user = _user_entries(target, owned)
        changed = [rel for rel, same in owned.items() if not same]
        if (user or changed) and not overwrite:
            if manifest is None:
                hint = (" It looks like the output of an earlier lensmap version (it has run.json but no "
                        f"{OUTPUT_MANIFEST}): delete it to write a new one there."
                        if (target / "run.json").is_file() else "")
                raise OutputError(
                    f"the output directory {shown} already exists and holds files lensmap did not write "
                    f"({_listing(user)}); lensmap never deletes or overwrites your files.{hint} "
                    "Choose a new directory (it is created), or empty this one"
                )
            what = []
            if user:
                what.append(f"files lensmap did not write ({_listing(user)})")
            if changed:
                what.append(f"lensmap files changed since it wrote them ({_listing(changed)})")
            raise OutputError(
                f"the output directory {shown} holds {' and '.join(what)}; lensmap never overwrites them. "
                "Move them elsewhere or choose a new directory; with overwrite=True (the --overwrite "
                "option) lensmap replaces only its own files and leaves yours alone"
            )
        _check_writable(shown, target)
    else:
        base = _nearest_existing(target.parent)
        if not base.is_dir():
            raise OutputError(
                f"cannot create the output directory {shown}: {base} is a file, not a directory. "
                "Choose another output location"
            )
        _check_writable(shown, base)
    return target


def prepare_output(path: str | os.PathLike, command: str | None, *, overwrite: bool = False) -> Path:
    """Check an output directory before any slow work; return the path with ``~``/``$VARS`` expanded.

    Call it first thing (before loading a model), with the command's name (``"report"``,
    ``"eval"``, ``"sft"``, ``"lens-eval"``, ...). It raises :class:`~lensmap.errors.OutputError`
    with the path and the fix when:

    - ``path`` is (or links to) an existing file;
    - ``path`` is ``/``, your home directory, the current directory, or an ancestor of one of
      them (their files would be mixed with lensmap's);
    - ``path`` is a non-empty directory that is not a previous lensmap output (no
      :data:`OUTPUT_MANIFEST`), or holds files that are not listed in its manifest, or listed
      files the user changed since — unless ``overwrite=True``, and even then a later
      :func:`staged_directory` replaces and removes only files listed in the manifest and
      refuses to touch any other file;
    - it is the output of another command (unless ``overwrite=True``);
    - the directory, or the nearest existing parent it would be created in, cannot be written
      (a read-only location, ``/proc/...``): checked by creating and removing a temporary
      directory there.

    A symbolic link to a directory is accepted (lensmap writes through it and keeps the link);
    a dangling link is refused. Nothing is created or changed. The returned path is relative
    if ``path`` was.
    """
    expanded = expand_path(path, field="output")
    _check_output(expanded, command, overwrite)
    return expanded


def prepare_output_file(path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Check a single output *file* (``lensmap vocab --table tokens.csv``) before any slow work.

    Expands ``~``/``$VARS``; refuses an existing file unless ``overwrite=True`` (lensmap cannot
    tell its own single files from the user's), an existing directory, and a location that
    cannot be written. Returns the expanded path; nothing is created.
    """
    expanded = expand_path(path, field="output file")
    shown = f"{str(expanded)!r}"
    target = Path(os.path.realpath(os.path.abspath(expanded)))
    if target.is_dir():
        raise OutputError(f"the output file {shown} is an existing directory. Give a file name, e.g. {shown[:-1]}/tokens.csv'")
    if target.exists() and not overwrite:
        raise OutputError(
            f"the output file {shown} already exists; lensmap never overwrites a file it cannot tell is its own. "
            "Choose a new name, delete it, or pass overwrite=True (the --overwrite option)"
        )
    base = _nearest_existing(target.parent)
    if not base.is_dir():
        raise OutputError(f"cannot create the output file {shown}: {base} is a file, not a directory")
    _check_writable(shown, base)
    return expanded


def record_output_files(directory: str | os.PathLike, names: Iterable[str], *, command: str | None = None) -> None:
    """Add files lensmap wrote straight into an output directory (not through :func:`staged_directory`)
    to its manifest, so a later run may replace or remove them like the rest of its files.

    ``names`` are paths relative to ``directory`` of files that exist. Example: ``lensmap lens
    eval`` writes ``lens_eval.csv`` into a saved lens's directory after the lens itself was staged.
    """
    directory = Path(directory)
    manifest = read_output_manifest(directory)
    files: dict[str, Any] = dict(manifest["files"]) if manifest else {}
    for name in names:
        rel = _safe_relative(Path(name).as_posix())
        if rel is None or not (directory / rel).is_file():
            raise ValueError(f"{name!r} is not a file inside {directory}")
        files[rel] = [_stat_pair(directory / rel)]
    _write_manifest(directory, manifest.get("command") if manifest else command, files)


# --------------------------------------------------------------------------- staged directories


def _list_files(root: Path) -> list[str]:
    """Every file (and symlink) below ``root`` as a relative POSIX path, manifest excluded."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for name in filenames + [d for d in dirnames if (base / d).is_symlink()]:
            rel = (base / name).relative_to(root).as_posix()
            if rel != OUTPUT_MANIFEST:
                found.append(rel)
    return sorted(found)


def _write_manifest(directory: Path, command: str | None, files: dict[str, list[list[int]]]) -> None:
    manifest = {
        "format": _MANIFEST_FORMAT,
        "version": 1,
        "command": command,
        "lensmap_version": __version__,
        "note": "lensmap replaces or removes only the files listed here; every other file is yours",
        "files": files,
    }
    atomic_write_text(directory / OUTPUT_MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def _make_parents(directory: Path) -> list[Path]:
    """``mkdir -p directory``; return the directories that were created, outermost first."""
    missing = []
    for candidate in (directory, *directory.parents):
        if candidate.exists():
            break
        missing.append(candidate)
    for candidate in reversed(missing):
        candidate.mkdir(exist_ok=True)
    return list(reversed(missing))


def _remove_created(created: list[Path]) -> None:
    for directory in reversed(created):
        with contextlib.suppress(OSError):
            directory.rmdir()  # only if still empty


def _prune_empty_parents(path: Path, root: Path) -> None:
    for parent in path.parents:
        if parent == root or root not in parent.parents:
            break
        try:
            parent.rmdir()
        except OSError:
            break


def _commit_into(target: Path, staging: Path, command: str | None, overwrite: bool, shown: str,
                 adopt: Iterable[str]) -> None:
    """Move the staged files into the existing directory ``target``; lensmap's own files only."""
    manifest = read_output_manifest(target)
    owned = _owned_files(target, manifest, adopt)
    new = _list_files(staging)
    blocked = []
    for rel in new:
        dest = target / rel
        for parent in list(reversed(Path(rel).parents))[1:]:  # a user's file where lensmap needs a folder
            p = target / parent
            if (p.exists() or p.is_symlink()) and not (p.is_dir() and not p.is_symlink()):
                blocked.append(parent.as_posix())
        if dest.is_dir() and not dest.is_symlink():
            blocked.append(rel + "/")
        elif (dest.exists() or dest.is_symlink()) and (rel not in owned or (not owned[rel] and not overwrite)):
            blocked.append(rel)
    stale = [rel for rel in owned if rel not in new]
    blocked += [rel for rel in stale if not owned[rel] and not overwrite]
    if blocked:
        raise OutputError(
            f"not writing into {shown}: {_listing(set(blocked))} would be replaced or removed, but lensmap "
            "did not write them (or they changed since). Move them elsewhere or choose another output "
            "directory, then run again; nothing in the directory was changed"
        )
    staged_stats = {rel: [_stat_pair(staging / rel)] for rel in new}
    # 1. a manifest covering old and new files, so a hard kill mid-way never orphans lensmap's files
    interim: dict[str, list[list[int]]] = {rel: [_stat_pair(target / rel)] for rel in owned}
    for rel, stats in staged_stats.items():
        interim[rel] = interim.get(rel, []) + stats
    _write_manifest(target, command, interim)
    # 2. move the new files in (a rename keeps size and mtime), 3. remove lensmap's stale files
    for rel in new:
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / rel, target / rel)
    for rel in stale:
        with contextlib.suppress(FileNotFoundError):
            (target / rel).unlink()
        _prune_empty_parents(target / rel, target)
    # 4. the final manifest: exactly the files of this run
    _write_manifest(target, command, staged_stats)


@contextlib.contextmanager
def staged_directory(
    final: str | os.PathLike,
    *,
    command: str | None = None,
    overwrite: bool = False,
    adopt: Iterable[str] = (),
) -> Iterator[Path]:
    """Yield an empty staging directory whose files are published into ``final`` if the block succeeds.

    On success lensmap's files land in ``final``: a new directory is created by one rename; into
    an existing one (an earlier output of this command, or an empty directory) the files are
    moved one by one with SIGINT/SIGTERM/SIGHUP held back until the moves are done. Files that an
    earlier run listed in ``final``'s :data:`OUTPUT_MANIFEST` and this run did not write are
    removed; every other file in ``final`` is left exactly as it was, and a new file that would
    replace one of them is refused with an :class:`~lensmap.errors.OutputError` (nothing is
    changed then). A symbolic link ``final`` is written through to its target and kept.

    On an exception, Ctrl-C, SIGTERM or SIGHUP (turned into
    :class:`~lensmap.errors.Terminated` while the block runs) the staging directory is removed
    and ``final`` is left as it was; parent directories created for it are removed again.
    Staging directories of earlier runs that were killed outright are swept on entry.

    Args:
        final: the output directory (``~`` and ``$VARS`` are expanded).
        command: the command writing it (``"report"``, ...), recorded in the manifest; a directory
            holding another command's output is refused unless ``overwrite``.
        overwrite: also write into a directory holding files lensmap did not write, or another
            command's output, or lensmap files the user changed — still replacing and removing
            only files listed in its manifest (or ``adopt``), never any other file.
        adopt: relative paths in ``final`` that the caller has verified lensmap wrote before
            manifests existed (e.g. a saved tuned lens); they are treated as listed.

    The checks of :func:`prepare_output` run on entry, so a library caller is protected too.
    """
    final = expand_path(final, field="output")
    adopt = tuple(adopt)
    shown = f"{str(final)!r}"
    target = _check_output(final, command, overwrite, adopt)
    existed = target.is_dir()
    sweep_stale(target.parent)
    if existed:
        sweep_stale(target)
    try:
        created = _make_parents(target.parent)
        staging = make_temporary_directory(target if existed else target.parent, target.name)
    except OSError as error:
        raise OutputError(f"cannot create the output {shown}: {error.strerror or error}. "
                          "Choose an output directory you can write to") from None
    try:
        with terminate_on_signals():
            yield staging
            with deferred_signals():  # the publishing renames are never cut in half by a signal
                if existed or target.exists():
                    _commit_into(target, staging, command, overwrite, shown, adopt)
                    shutil.rmtree(staging, ignore_errors=True)
                else:
                    files = {rel: [_stat_pair(staging / rel)] for rel in _list_files(staging)}
                    _write_manifest(staging, command, files)
                    os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_created(created)
        raise
