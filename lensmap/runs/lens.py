"""``lensmap lens train`` and ``lensmap lens eval``: the tuned lens of a config, trained and evaluated.

The config is a lens config or a report config (:mod:`lensmap.config.lens`). Where the lens
lives is :mod:`lensmap.lenses.store`'s rule: ``lens_path`` when given, else lensmap's cache,
keyed by the model and every training setting.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lensmap.config.lens import LensConfig, load_lens_config
from lensmap.config.report import ReportConfig
from lensmap.config.sections import TunedLensConfig
from lensmap.errors import LensmapError
from lensmap.figures.lens_eval import write_eval_html
from lensmap.io import atomic_write_csv
from lensmap.lenses.corpus import lens_corpus
from lensmap.lenses.evaluation import evaluate_lenses
from lensmap.lenses.store import EVAL_CSV, EVAL_HTML, default_lens_dir, lens_key, read_eval
from lensmap.lenses.training import train_tuned_lens
from lensmap.lenses.tuned import TunedLens, read_lens_config
from lensmap.models.handle import ModelHandle
from lensmap.outputs import prepare_output, record_output_files, staged_directory
from lensmap.runs.common import Stopwatch, load_for

__all__ = ["EVAL_CSV", "EVAL_HTML", "LensRun", "evaluate_into", "lens_dir_for", "obtain_tuned_lens", "read_eval",
           "run_lens_eval", "run_lens_train", "train_into"]

_NOT_TRAINING = ("evaluate", "eval_tokens_per_language", "languages", "files")  # fields that leave the lens as it is


def training_languages(languages: list[str], section: TunedLensConfig) -> list[str]:
    return list(section.languages or languages)


def lens_dir_for(handle: ModelHandle, config: LensConfig | ReportConfig) -> tuple[Path, str]:
    """``(directory, key)`` of the lens a config asks for."""
    section = config.tuned_lens
    settings = {k: v for k, v in dataclasses.asdict(section).items() if k not in _NOT_TRAINING}
    key = lens_key(handle, training_languages(config.languages, section), settings, section.files)
    return (Path(config.lens_path) if config.lens_path else default_lens_dir(handle, key)), key


def train_into(handle: ModelHandle, languages: list[str], section: TunedLensConfig, lens_dir: Path, key: str, *,
               progress: bool = True) -> TunedLens:
    """Train a tuned lens per ``section`` and save it to ``lens_dir`` (resumes an interrupted run)."""
    langs = training_languages(languages, section)
    corpus = lens_corpus(langs, section.sources, section.files, split="train", handle=handle)
    checkpoint = lens_dir.parent / f".{lens_dir.name}.checkpoint.pt"
    lens = train_tuned_lens(handle, corpus, section.train_settings(), checkpoint=checkpoint,
                            max_minutes=section.max_minutes or None, progress=progress)
    lens.info["key"] = key
    lens.info["sources"] = list(section.sources)
    lens.info["files"] = dict(section.files)
    lens.save(lens_dir)
    return lens


def evaluate_into(handle: ModelHandle, lens: TunedLens, languages: list[str], section: TunedLensConfig,
                  out_dirs: list[Path], *, title: str = "", progress: bool = True,
                  overwrite: bool = False) -> pd.DataFrame:
    """Evaluate logit vs tuned lens on held-out text; write ``lens_eval.csv`` and ``lens_eval.html`` into each dir.

    The first directory is the lens's own (written in place, beside the lens); every other one
    is an output directory, written atomically through a staging directory.
    """
    langs = training_languages(languages, section)
    corpus = lens_corpus(langs, section.sources, section.files, split="heldout")
    frame = evaluate_lenses(handle, corpus, [lens], tokens_per_language=section.eval_tokens_per_language,
                            seq_len=section.seq_len, positions_per_sequence=section.positions_per_sequence,
                            seed=section.seed + 1, progress=progress)
    for i, out in enumerate(out_dirs):
        if i == 0:  # beside the lens: its directory is lensmap's own (the lens was saved there)
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_csv(out / EVAL_CSV, frame)
            write_eval_html(out / EVAL_HTML, frame, lens, title=title)
            record_output_files(out, [EVAL_CSV, EVAL_HTML], command="lens")
            continue
        with staged_directory(out, command="lens-eval", overwrite=overwrite) as staged:
            atomic_write_csv(staged / EVAL_CSV, frame)
            write_eval_html(staged / EVAL_HTML, frame, lens, title=title)
    return frame


def _saved_lens(handle: ModelHandle, lens_dir: Path, key: str) -> TunedLens | None:
    """The lens in ``lens_dir`` if it was trained with exactly ``key``, else None."""
    if not (lens_dir / "config.json").is_file():
        return None
    try:
        if (read_lens_config(lens_dir).get("training") or {}).get("key") == key:
            return TunedLens.load(lens_dir, handle)
    except LensmapError:
        return None
    return None


def obtain_tuned_lens(handle: ModelHandle, config: LensConfig | ReportConfig, *, progress: bool = True,
                      train: bool = True) -> tuple[TunedLens, Path]:
    """The tuned lens a config asks for: load ``lens_path``, or find it in the cache, or train it there.

    Returns ``(lens, lens_dir)``. A ``lens_path`` that does not exist is an error (train it with
    ``lensmap lens train CONFIG.yaml``); a cached lens is trained on the fly when missing.
    """
    lens_dir, key = lens_dir_for(handle, config)
    if config.lens_path:
        return TunedLens.load(lens_dir, handle), lens_dir
    saved = _saved_lens(handle, lens_dir, key)
    if saved is not None:
        return saved, lens_dir
    if not train:
        raise LensmapError(f"no tuned lens trained for these settings in {lens_dir}; "
                           "train it with `lensmap lens train CONFIG.yaml`")
    section = config.tuned_lens
    lens = train_into(handle, config.languages, section, lens_dir, key, progress=progress)
    if section.evaluate:
        evaluate_into(handle, lens, config.languages, section, [lens_dir], progress=progress)
    return lens, lens_dir


@dataclass
class LensRun:
    """What ``lensmap lens train|eval`` did: where the lens is, and what was written."""

    lens_dir: Path
    lens: TunedLens
    trained: bool  # False when a lens with exactly these settings was already there
    evaluation: pd.DataFrame | None
    written: list[Path]
    seconds: float


def _outputs(config: LensConfig, extra: str | None, overwrite: bool) -> list[Path]:
    """The output directories besides the lens's own, checked before the model loads."""
    outs = [config.output] + ([extra] if extra and extra != config.output else [])
    return [prepare_output(out, "lens-eval", overwrite=overwrite) for out in outs if out]


def run_lens_train(config: LensConfig | str | os.PathLike, *, force: bool = False, evaluate: bool = True,
                   progress: bool = True, overwrite: bool = False) -> LensRun:
    """Train the config's tuned lens (unless one with these settings exists), then evaluate it.

    The evaluation goes beside the lens and into the config's ``output`` (when set).
    """
    if not isinstance(config, LensConfig):
        config = load_lens_config(config)
    extra = _outputs(config, None, overwrite)
    clock = Stopwatch()
    handle = load_for(config)
    lens_dir, key = lens_dir_for(handle, config)
    existing = None if force else _saved_lens(handle, lens_dir, key)
    if existing is not None:
        return LensRun(lens_dir, existing, False, None, [], clock.total)
    section = config.tuned_lens
    lens = train_into(handle, config.languages, section, lens_dir, key, progress=progress)
    frame, outs = None, []
    if section.evaluate and evaluate:
        outs = [lens_dir, *extra]
        frame = evaluate_into(handle, lens, config.languages, section, outs, title=config.title, progress=progress,
                              overwrite=overwrite)
    return LensRun(lens_dir, lens, True, frame, outs, clock.total)


def run_lens_eval(config: LensConfig | str | os.PathLike, *, output: str | None = None,
                  progress: bool = True, overwrite: bool = False) -> LensRun:
    """Evaluate the config's (already trained) tuned lens against the logit lens on held-out text."""
    if not isinstance(config, LensConfig):
        config = load_lens_config(config)
    extra = _outputs(config, output, overwrite)
    clock = Stopwatch()
    handle = load_for(config)
    lens, lens_dir = obtain_tuned_lens(handle, config, progress=progress, train=False)
    outs = [lens_dir, *extra]
    frame = evaluate_into(handle, lens, config.languages, config.tuned_lens, outs, title=config.title,
                          progress=progress, overwrite=overwrite)
    return LensRun(lens_dir, lens, False, frame, outs, clock.total)
