"""Where a tuned lens lives: its cache directory, the key that names it, its saved evaluation.

Without an explicit directory a lens lives in ``cache_dir()/lenses/<model>-<key>``, where the
key hashes the model's fingerprint, the languages, every training setting and the contents of
the user's text files, so a report with ``lens: tuned`` finds the lens trained for exactly its
settings and trains one only when there is none.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from lensmap.models.handle import ModelHandle
from lensmap.models.identity import model_fingerprint
from lensmap.models.zoo import cache_dir

EVAL_CSV = "lens_eval.csv"
EVAL_HTML = "lens_eval.html"


def lens_key(handle: ModelHandle, languages: Sequence[str], settings: Mapping[str, Any],
             files: Mapping[str, str]) -> str:
    """Hash of everything that decides the trained translators.

    ``settings`` are the training settings and text sources (no evaluation settings, no
    languages, no files); ``files`` the user's text files, hashed by content.
    """
    fingerprint = {k: v for k, v in model_fingerprint(handle).items() if k != "name"}
    digests = {}
    for lang, path in sorted(files.items()):
        digests[lang] = hashlib.sha256(Path(path).read_bytes()).hexdigest() if Path(path).is_file() else path
    blob = {"model": fingerprint, "languages": list(languages), "files": digests, "settings": dict(settings),
            "dtype": str(handle.dtype)}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def default_lens_dir(handle: ModelHandle, key: str) -> Path:
    """The cache directory of the lens with ``key`` for this model."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(handle.name)).name or "model").strip("._") or "model"
    return cache_dir() / "lenses" / f"{slug}-{key[:16]}"


def read_eval(lens_dir: str | Path) -> pd.DataFrame | None:
    """The evaluation saved beside a lens (``lens_eval.csv``), or None."""
    path = Path(lens_dir) / EVAL_CSV
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path)
    except (ValueError, OSError):
        return None
