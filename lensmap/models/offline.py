"""lensmap's offline promise: nothing reaches a hub unless the user asks for a download.

Downloads are off unless the user opts in, either per call (``load_model(...,
allow_download=True)``, ``load_tokenizer(..., allow_download=True)``) or for a whole session with
the environment variable ``LENSMAP_ALLOW_DOWNLOAD=1``. Without it, a hub id is looked up in
the local Hugging Face cache only, and a missing one is an error that says how to download it.

:func:`set_offline_mode` sets the Hugging Face libraries' own offline switches
(``HF_HUB_OFFLINE``, ``HF_DATASETS_OFFLINE``, ``TRANSFORMERS_OFFLINE``), so code that calls them
directly (``datasets.load_dataset``, backends) cannot reach the network either. The CLI calls
it at start-up; it must run before those libraries are imported, since they read the
variables at import time (for modules already imported it also flips their flags).

This module imports nothing heavy, so it can run first.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

__all__ = ["ALLOW_DOWNLOAD_ENV", "OFFLINE_FLAGS", "downloads_allowed", "set_offline_mode", "offline_mode",
           "download_hint"]

#: Environment variable that allows hub downloads for a session (``1``, ``true`` or ``yes``).
ALLOW_DOWNLOAD_ENV = "LENSMAP_ALLOW_DOWNLOAD"
#: The Hugging Face variables :func:`set_offline_mode` sets to ``1``.
OFFLINE_FLAGS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
_TRUE = {"1", "true", "yes", "on"}


def downloads_allowed(allow_download: bool | None = None) -> bool:
    """True if a hub download may happen: ``allow_download`` if given, else ``$LENSMAP_ALLOW_DOWNLOAD``."""
    if allow_download is not None:
        return bool(allow_download)
    return os.environ.get(ALLOW_DOWNLOAD_ENV, "").strip().lower() in _TRUE


def download_hint() -> str:
    """The sentence every "not in the local cache" error ends with."""
    return (f"lensmap never downloads unless asked: to download it once, run with {ALLOW_DOWNLOAD_ENV}=1 "
            "(or pass allow_download=True) on a machine with network access")


def set_offline_mode(allow_download: bool | None = None) -> bool:
    """Switch the Hugging Face libraries offline unless downloads are allowed; return True if it did.

    Sets ``HF_HUB_OFFLINE=1``, ``HF_DATASETS_OFFLINE=1`` and ``TRANSFORMERS_OFFLINE=1`` in the
    environment and, when ``huggingface_hub`` or ``datasets`` is already imported, their cached
    offline flags (transformers asks ``huggingface_hub``). With downloads allowed (see
    :func:`downloads_allowed`) nothing is changed. Idempotent.
    """
    if downloads_allowed(allow_download):
        return False
    for name in OFFLINE_FLAGS:
        os.environ[name] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None and hasattr(constants, "HF_HUB_OFFLINE"):
        constants.HF_HUB_OFFLINE = True
    config = sys.modules.get("datasets.config")
    if config is not None:
        for attr in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
            if hasattr(config, attr):
                setattr(config, attr, True)
    return True


def _module_flags() -> list[tuple[object, str]]:
    found = []
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None and hasattr(constants, "HF_HUB_OFFLINE"):
        found.append((constants, "HF_HUB_OFFLINE"))
    config = sys.modules.get("datasets.config")
    if config is not None:
        found += [(config, attr) for attr in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if hasattr(config, attr)]
    return found


@contextlib.contextmanager
def offline_mode(allow_download: bool | None = None) -> Iterator[bool]:
    """:func:`set_offline_mode` for the duration of a block, then everything as it was.

    For library code that reads the local Hugging Face caches (``datasets.load_dataset`` of
    an ``hf:`` evaluation source): enter it *before* ``import datasets`` when it is not imported
    yet. On exit the environment variables and the flags of modules that were already imported
    come back; a module first imported inside the block keeps the offline setting it read then.
    Yields whether offline mode was switched on.
    """
    saved_env = {name: os.environ.get(name) for name in OFFLINE_FLAGS}
    saved_attrs = [(module, attr, getattr(module, attr)) for module, attr in _module_flags()]
    switched = set_offline_mode(allow_download)
    try:
        yield switched
    finally:
        if switched:
            for name, value in saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            for module, attr, value in saved_attrs:
                setattr(module, attr, value)
