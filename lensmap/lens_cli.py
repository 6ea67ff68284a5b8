"""``lensmap lens train`` and ``lensmap lens eval``: the tuned lens from a YAML config.

The config is either a report config (the same file ``lensmap report`` reads; its ``lens_path``
and ``tuned_lens:`` section are used) or a short lens config::

    model: qwen2.5-0.5b
    languages: [en, fr, de, zh]
    lens_path: lenses/qwen-tuned     # optional; default: lensmap's cache (see below)
    tuned_lens: {tokens_per_language: 4096, sources: [bible]}

Without ``lens_path`` a lens lives in ``cache_dir()/lenses/<model>-<key>``, where the key
hashes the model's fingerprint, the languages and every training setting (and the contents of
the user's text files), so a report with ``lens: tuned`` finds the lens trained for exactly its
settings and trains one only when there is none.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from lensmap.config import ConfigError, ReportConfig, TunedLensConfig, validate_tuned_lens
from lensmap.errors import LensmapError

EVAL_CSV = "lens_eval.csv"
EVAL_HTML = "lens_eval.html"


@dataclass
class LensConfig:
    """The config of ``lensmap lens train|eval`` when it is not a full report config."""

    model: str
    languages: list[str]
    lens_path: str = ""
    dtype: str = "auto"
    device: str = "cpu"
    trust_remote_code: bool = False
    lens: str = "tuned"
    tuned_lens: TunedLensConfig = field(default_factory=TunedLensConfig)
    title: str = ""


def _read_yaml(path: str | os.PathLike) -> Any:
    from lensmap.config import read_yaml

    return read_yaml(path, "it needs at least model: and languages:")


def parse_lens_config(data: Any) -> LensConfig:
    """A :class:`LensConfig` from parsed YAML; a report config (it has ``probes``) is accepted too."""
    from lensmap.config import _build, _check_choice, parse_config
    from lensmap.languages.lid import validate_languages

    if isinstance(data, dict) and "probes" in data:
        report = parse_config(data)
        return LensConfig(model=report.model, languages=report.languages, lens_path=report.lens_path,
                          dtype=report.dtype, device=report.device, trust_remote_code=report.trust_remote_code,
                          tuned_lens=report.tuned_lens, title=report.title)
    config = _build(LensConfig, data, "")
    try:
        validate_languages(config.languages)
    except LensmapError as error:
        raise ConfigError(f"languages: {error}") from None
    _check_choice(config.dtype, ("auto", "float32", "bfloat16", "float16"), "dtype")
    _check_choice(config.lens, ("tuned",), "lens")
    validate_tuned_lens(config.tuned_lens, config.languages)
    return config


def load_lens_config(path: str | os.PathLike) -> LensConfig:
    return parse_lens_config(_read_yaml(path))


# --------------------------------------------------------------------------- where a lens lives


def training_languages(languages: list[str], section: TunedLensConfig) -> list[str]:
    return list(section.languages or languages)


def train_settings(section: TunedLensConfig):
    from lensmap.lenses.training import TrainSettings

    return TrainSettings(
        tokens_per_language=section.tokens_per_language, seq_len=section.seq_len,
        positions_per_sequence=section.positions_per_sequence, batch_size=section.batch_size,
        rows_per_step=section.rows_per_step, lr=section.lr,
        warmup_steps=section.warmup_steps, weight_decay=section.weight_decay, seed=section.seed,
    )


def lens_key(handle, languages: list[str], section: TunedLensConfig) -> str:
    """Hash of everything that decides the trained translators (not the evaluation settings)."""
    from lensmap.lenses.tuned import model_fingerprint

    fingerprint = {k: v for k, v in model_fingerprint(handle).items() if k != "name"}
    files = {}
    for lang, path in sorted(section.files.items()):
        files[lang] = hashlib.sha256(Path(path).read_bytes()).hexdigest() if Path(path).is_file() else path
    settings = dataclasses.asdict(section)
    for skip in ("evaluate", "eval_tokens_per_language", "languages", "files"):
        settings.pop(skip, None)
    blob = {"model": fingerprint, "languages": training_languages(languages, section), "files": files,
            "settings": settings, "dtype": str(handle.dtype)}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def default_lens_dir(handle, key: str) -> Path:
    from lensmap.models.zoo import cache_dir

    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(handle.name)).name or "model").strip("._") or "model"
    return cache_dir() / "lenses" / f"{slug}-{key[:16]}"


def lens_dir_for(handle, config: LensConfig | ReportConfig) -> tuple[Path, str]:
    key = lens_key(handle, config.languages, config.tuned_lens)
    return (Path(config.lens_path) if config.lens_path else default_lens_dir(handle, key)), key


# --------------------------------------------------------------------------- train / evaluate


def corpus_for(languages: list[str], section: TunedLensConfig, split: str, handle=None) -> dict[str, list[str]]:
    from lensmap.data.text import load_corpus

    return load_corpus(languages, section.sources, section.files, split=split, handle=handle)


def train_into(handle, languages: list[str], section: TunedLensConfig, lens_dir: Path, key: str, *,
               progress: bool = True):
    """Train a tuned lens per ``section`` and save it to ``lens_dir`` (resumes an interrupted run)."""
    from lensmap.lenses.training import train_tuned_lens

    langs = training_languages(languages, section)
    corpus = corpus_for(langs, section, "train", handle=handle)
    checkpoint = lens_dir.parent / f".{lens_dir.name}.checkpoint.pt"
    lens = train_tuned_lens(handle, corpus, train_settings(section), checkpoint=checkpoint,
                            max_minutes=section.max_minutes or None, progress=progress)
    lens.info["key"] = key
    lens.info["sources"] = list(section.sources)
    lens.info["files"] = dict(section.files)
    lens.save(lens_dir)
    return lens


def evaluate_into(handle, lens, languages: list[str], section: TunedLensConfig, out_dirs: list[Path], *,
                  title: str = "", progress: bool = True) -> pd.DataFrame:
    """Evaluate logit vs tuned lens on held-out text; write ``lens_eval.csv`` and ``lens_eval.html`` into each dir."""
    from lensmap.io import atomic_write_csv
    from lensmap.lenses.evaluation import evaluate_lenses

    langs = training_languages(languages, section)
    corpus = corpus_for(langs, section, "heldout")
    frame = evaluate_lenses(handle, corpus, [lens], tokens_per_language=section.eval_tokens_per_language,
                            seq_len=section.seq_len, positions_per_sequence=section.positions_per_sequence,
                            seed=section.seed + 1, progress=progress)
    for out in out_dirs:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_csv(out / EVAL_CSV, frame)
        write_eval_html(out / EVAL_HTML, frame, lens, title=title)
    return frame


def eval_section(frame: pd.DataFrame, lens=None):
    """A report section with the evaluation figure and the per-layer comparison table."""
    from lensmap.lens_plots import lens_eval_curves
    from lensmap.lenses.evaluation import beats_baseline_everywhere
    from lensmap.report import ReportSection

    table = summary_table(frame)
    verdict = ("The tuned lens has a lower held-out KL than the logit lens at every layer but the last, "
               "in every language." if beats_baseline_everywhere(frame)
               else "The tuned lens does NOT beat the logit lens everywhere: see the `worse in` column.")
    trained = ""
    if lens is not None and lens.info.get("result"):
        r = lens.info["result"]
        trained = (f"\n\nTrained on {r['tokens_per_language']:,} tokens per language "
                   f"({', '.join(r['languages'])}) in {r['steps']} steps, {r['seconds'] / 60:.1f} minutes"
                   + (" (stopped early at the time limit)" if r.get("stopped_early") else "") + ".")
    text = ("KL divergence from the model's final next-token distribution to each lens's distribution, "
            "on held-out text, per layer and language (lower is better; the last layer is the model itself), "
            "and how often the lens's top token is the model's. Solid lines: tuned lens; dotted: logit lens. "
            f"{verdict}{trained}")
    return ReportSection("Tuned lens vs logit lens on held-out text", text, [lens_eval_curves(frame)], table=table)


def write_eval_html(path: Path, frame: pd.DataFrame, lens=None, *, title: str = "") -> None:
    from lensmap.report import write_report

    model = str(frame["model"].iloc[0]) if len(frame) else ""
    write_report(path, [eval_section(frame, lens)], title=title or f"Lens evaluation: {model}")


def summary_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per layer: KL of both lenses pooled over languages, and the languages where the tuned lens is worse."""
    from lensmap.lenses.evaluation import compare_lenses

    side = compare_lenses(frame)
    pooled = side[side["language"] == "all"].set_index("layer")
    worse = (side[(side["language"] != "all") & (side["better"] == False)]  # noqa: E712 - object column
             .groupby("layer")["language"].apply(lambda s: ", ".join(s)))
    table = pd.DataFrame({
        "layer": pooled.index,
        "KL logit": pooled["kl_logit"].round(3).to_numpy(),
        "KL tuned": pooled["kl_tuned"].round(3).to_numpy(),
        "tuned / logit": pooled["ratio"].round(3).to_numpy(),
    })
    table["worse in"] = [worse.get(layer, "") for layer in pooled.index]
    return table


def read_eval(lens_dir: Path) -> pd.DataFrame | None:
    """The evaluation saved beside a lens (``lens_eval.csv``), or None."""
    path = Path(lens_dir) / EVAL_CSV
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path)
    except (ValueError, OSError):
        return None


def obtain_tuned_lens(handle, config: LensConfig | ReportConfig, *, progress: bool = True, train: bool = True):
    """The tuned lens a config asks for: load ``lens_path``, or find it in the cache, or train it there.

    Returns ``(lens, lens_dir)``. A ``lens_path`` that does not exist is an error (train it with
    ``lensmap lens train CONFIG.yaml``); a cached lens is trained on the fly when missing.
    """
    from lensmap.lenses.tuned import TunedLens, read_lens_config

    lens_dir, key = lens_dir_for(handle, config)
    if config.lens_path:
        return TunedLens.load(lens_dir, handle), lens_dir
    if (lens_dir / "config.json").is_file():
        saved = read_lens_config(lens_dir)
        if (saved.get("training") or {}).get("key") == key:
            return TunedLens.load(lens_dir, handle), lens_dir
    if not train:
        raise LensmapError(f"no tuned lens trained for these settings in {lens_dir}; "
                           "train it with `lensmap lens train CONFIG.yaml`")
    section = config.tuned_lens
    lens = train_into(handle, config.languages, section, lens_dir, key, progress=progress)
    if section.evaluate:
        evaluate_into(handle, lens, config.languages, section, [lens_dir], progress=progress)
    return lens, lens_dir


# --------------------------------------------------------------------------- commands


def _load(config: LensConfig):
    from lensmap.models.loading import load_model

    return load_model(config.model, dtype=config.dtype, device=config.device,
                      trust_remote_code=config.trust_remote_code)


def _print_summary(frame: pd.DataFrame) -> None:
    from lensmap.lenses.evaluation import beats_baseline_everywhere

    with pd.option_context("display.max_rows", 500, "display.width", 160):
        print(summary_table(frame).to_string(index=False))
    print("tuned lens beats the logit lens at every layer but the last in every language:",
          "yes" if beats_baseline_everywhere(frame) else "NO")


def cmd_train(args: argparse.Namespace) -> int:
    from lensmap.lenses.tuned import TunedLens, read_lens_config

    config = load_lens_config(args.config)
    handle = _load(config)
    lens_dir, key = lens_dir_for(handle, config)
    section = config.tuned_lens
    existing = None
    if not args.force and (lens_dir / "config.json").is_file():
        try:
            if (read_lens_config(lens_dir).get("training") or {}).get("key") == key:
                existing = TunedLens.load(lens_dir, handle)
        except LensmapError:
            existing = None
    if existing is not None:
        print(f"a tuned lens with exactly these settings is already in {lens_dir} (use --force to train again)")
        return 0
    started = time.perf_counter()
    lens = train_into(handle, config.languages, section, lens_dir, key, progress=not args.quiet)
    r = lens.info["result"]
    print(f"trained {r['steps']} steps on {r['tokens_per_language']:,} tokens per language "
          f"({', '.join(r['languages'])}) in {r['seconds'] / 60:.1f} min"
          + (" — stopped early at max_minutes; run the same command again to continue" if r["stopped_early"] else ""))
    print(f"saved the tuned lens to {lens_dir}")
    if section.evaluate and not args.no_eval:
        frame = evaluate_into(handle, lens, config.languages, section, [lens_dir], title=config.title,
                              progress=not args.quiet)
        _print_summary(frame)
        print(f"wrote {lens_dir / EVAL_CSV} and {lens_dir / EVAL_HTML} "
              f"(total {(time.perf_counter() - started) / 60:.1f} min)")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    config = load_lens_config(args.config)
    handle = _load(config)
    lens, lens_dir = obtain_tuned_lens(handle, config, progress=not args.quiet, train=False)
    outs = [lens_dir] + ([Path(args.output)] if args.output else [])
    frame = evaluate_into(handle, lens, config.languages, config.tuned_lens, outs, title=config.title,
                          progress=not args.quiet)
    _print_summary(frame)
    print("wrote " + ", ".join(str(o / EVAL_CSV) for o in outs))
    return 0


def add_lens_commands(sub) -> None:
    """Register ``lensmap lens train|eval`` on the main parser's subparsers."""
    lens = sub.add_parser("lens", help="train or evaluate a tuned lens (lensmap lens train|eval CONFIG.yaml)")
    lsub = lens.add_subparsers(dest="lens_command", required=True)
    p = lsub.add_parser("train", help="train a tuned lens per the config's tuned_lens: section, then evaluate it")
    p.add_argument("config", help="a lens or report YAML config")
    p.add_argument("--force", action="store_true", help="train again even if a lens with these settings exists")
    p.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation after training")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)
    p = lsub.add_parser("eval", help="compare the tuned lens with the logit lens on held-out text")
    p.add_argument("config", help="a lens or report YAML config")
    p.add_argument("--output", metavar="DIR", help="also write lens_eval.csv and lens_eval.html here")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_eval)
