"""``lensmap sft``: train the recommended layers and the baselines, then compare them with the base.

For each variant (``selective``, ``full``, ``random``, ``lora``) the base model is loaded fresh,
trained on the code-switched examples, checked (every parameter outside the trained set is
bit-identical to the base), saved as a compact delta, and then evaluated beside the base model:
the four-scenario evaluation (accuracy and language consistency) and, when probes are
configured, the lens readout (per-layer language mass).

Work in progress lives in ``<output>.work/``: Trainer checkpoints, and one finished directory
per variant. A run that is stopped resumes there, variant by variant and checkpoint by
checkpoint; the output directory itself is written in one step when everything is done.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd

from lensmap.analysis.recommend import recommend
from lensmap.config.report import load_config
from lensmap.config.sft import SFTConfig, load_sft_config
from lensmap.distributed import is_main_process, local_device, sharded_parameters_engine, world_size
from lensmap.errors import LensmapError, OutputError, TrainingError
from lensmap.evaluation.protocol import evaluate_model
from lensmap.figures.html import write_report
from lensmap.figures.sft import sft_sections
from lensmap.frames import columns
from lensmap.io import atomic_write_csv, atomic_write_text
from lensmap.languages.vocab_map import build_vocabulary_map
from lensmap.models.handle import ModelHandle
from lensmap.models.identity import model_fingerprint
from lensmap.outputs import prepare_output, staged_directory
from lensmap.readout.probes import run_probes
from lensmap.runs.common import load_for
from lensmap.runs.report import analyse_phases, build_prompts
from lensmap.training.delta import changed_parameters, save_delta, snapshot
from lensmap.training.items import (
    SFTItem,
    check_item_languages,
    items_from_mmlu,
    load_items,
    sample_items_path,
    select_languages,
)
from lensmap.training.prompts import build_examples
from lensmap.training.selection import TrainableSet, from_layers, from_recommendation, full, random_like
from lensmap.training.trainer import train_sft

COMPARISON_COLUMNS = columns("sft_comparison")
DONE = "variant.json"


def training_items(config: SFTConfig) -> list[SFTItem]:
    """The config's training items (its files and converted MMLU files, or else the shipped set), checked."""
    paths = config.train_files or ([] if config.train_mmlu else [str(sample_items_path())])
    items = [item for path in paths for item in load_items(path)]
    items += [item for lang, path in config.train_mmlu.items() for item in items_from_mmlu(path, lang)]
    items = select_languages(items, config.languages)
    if config.check_language:
        check_item_languages(items)
    return items


def selective_set(handle: ModelHandle, config: SFTConfig) -> TrainableSet:
    """The layers the ``selective`` variant trains, from the config's ``select:``."""
    select = config.select
    if select.recommendation:
        return from_recommendation(handle, select.recommendation)
    if select.layers:
        return from_layers(handle, select.layers)
    return recommend_for_config(handle, select.strategy, select.report)


def recommend_for_config(handle: ModelHandle, strategy: str, report_config: str = "") -> TrainableSet:
    """For ``select: {strategy: ...}``: the :class:`~lensmap.training.selection.TrainableSet`.

    ``cogsym`` needs only the model. ``linguamap`` needs phases: it runs the report config's
    similarity and probes on ``handle`` first.
    """
    phases = None
    if strategy == "linguamap":
        phases = analyse_phases(handle, load_config(report_config), progress=False).phases
    rec = recommend(handle, strategy, phases=phases)
    chosen = from_layers(handle, rec.layers, source=f"strategy {strategy}")
    chosen.notes = {"strategy": strategy, "boundaries": rec.boundaries}
    return chosen


def variant_set(handle: ModelHandle, variant: str, selective: TrainableSet, seed: int) -> TrainableSet:
    if variant == "full":
        return full(handle)
    if variant == "random":
        return random_like(handle, selective, seed=seed)
    chosen = dataclasses.replace(selective, name=variant)
    return chosen


class Evaluator:
    """What is measured on the base model and every tuned variant (both optional)."""

    def __init__(self, config: SFTConfig, handle: ModelHandle, progress: bool):
        self.config, self.progress = config, progress
        self.prompts, self.vmap = [], None
        if config.probes:
            self.prompts = build_prompts(config.probes)
            self.vmap = build_vocabulary_map(handle.tokenizer, config.lens_languages, vocab_size=handle.vocab_size,
                                             progress=progress)

    def lens(self, handle: ModelHandle, variant: str) -> pd.DataFrame:
        """Per-layer language mass of the configured probes (empty without probes)."""
        if not self.prompts:
            return pd.DataFrame()
        share = self.vmap.vocab_share()
        result = run_probes(handle, self.prompts, self.vmap.weights(), self.vmap.columns(),
                            vocab_share=[float(share[c]) for c in self.vmap.columns()], progress=self.progress)
        return result.mass.assign(variant=variant)

    def tasks(self, handle: ModelHandle, variant: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        """``(items, summary)`` of the four-scenario evaluation (empty frames when switched off)."""
        if not self.config.evaluate:
            return pd.DataFrame(), pd.DataFrame()
        items, summary = evaluate_model(handle, self.config.evaluation, progress=self.progress)
        return items.assign(variant=variant), summary.assign(variant=variant)


def _load(config: SFTConfig) -> ModelHandle:
    if world_size() > 1:  # one GPU per process
        config = dataclasses.replace(config, device=local_device(config.device))
    return load_for(config, self_check=False)


def _measure(evaluator: Evaluator, handle: ModelHandle, variant: str, where: Path) -> None:
    items, summary = evaluator.tasks(handle, variant)
    mass = evaluator.lens(handle, variant)
    for name, frame in (("eval_items", items), ("eval_summary", summary), ("language_mass", mass)):
        atomic_write_csv(where / f"{name}.csv", frame)


def _read(where: Path, name: str) -> pd.DataFrame:
    path = where / f"{name}.csv"
    if not path.is_file() or path.stat().st_size <= 1:
        return pd.DataFrame()
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def train_variant(
    config: SFTConfig, variant: str, selective: TrainableSet, examples: list, evaluator: Evaluator,
    work: Path, fingerprint: dict, progress: bool,
) -> Path:
    """Train, check, save and measure one variant in ``work/<variant>``; skip it if already done."""
    where = work / variant
    if (where / DONE).is_file():
        return where
    handle = _load(config)
    chosen = variant_set(handle, variant, selective, config.random_seed)
    before = snapshot(handle.model)  # every parameter: the frozen ones must come out bit-identical
    result = train_sft(handle, examples, chosen, config.training, work / f"{variant}.trainer",
                       lora=variant == "lora", progress=progress)
    if not is_main_process():  # every process holds the same weights now; rank 0 checks, saves, measures
        return where
    changed = set(changed_parameters(handle.model, before))
    outside = sorted(name for name in changed if not any(name.startswith(m) for m in chosen.modules))
    if outside:
        raise LensmapError(f"{variant}: parameters outside the trained set changed ({outside[:3]}); "
                           "this is a bug in lensmap, please report it")
    where.mkdir(parents=True, exist_ok=True)
    manifest = save_delta(handle, before, where / "weights", fingerprint,
                          info={"variant": variant, "trainable": chosen.to_dict(), "settings":
                                dataclasses.asdict(config.training)})
    atomic_write_csv(where / "training_curve.csv", result.history.assign(variant=variant))
    _measure(evaluator, handle, variant, where)
    record = {"variant": variant, "trainable": chosen.to_dict(), "optimised_params": result.optimised_params,
              "changed_tensors": len(manifest["tensors"]), "changed_params": manifest["changed_params"],
              "frozen_bit_identical": True, "train_seconds": round(result.seconds, 1), "steps": result.steps,
              "resumed_from": result.resumed_from}
    atomic_write_text(where / DONE, json.dumps(record, indent=2))
    shutil.rmtree(work / f"{variant}.trainer", ignore_errors=True)  # checkpoints are no longer needed
    return where


def work_settings(config: SFTConfig, items: list[SFTItem]) -> dict[str, Any]:
    """What a resumed run must share with the run that started the work directory.

    Everything in the config except ``output`` and ``variants`` (adding a variant to a stopped
    run is fine), plus a hash of the training items (a file edited in between counts).
    """
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("output", "variants")}
    text = json.dumps([dataclasses.asdict(item) for item in items], sort_keys=True, ensure_ascii=False)
    settings["items_sha256"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return json.loads(json.dumps(settings, default=str))


def check_work_settings(work: Path, config: SFTConfig, items: list[SFTItem]) -> None:
    """Record the settings of a new work directory; refuse to resume one started with others."""
    path = work / "settings.json"
    settings = work_settings(config, items)
    if work.exists() and not path.is_file() and (not work.is_dir() or any(work.iterdir())):
        raise OutputError(f"{work} exists and is not a stopped `lensmap sft` run (it has no settings.json): lensmap "
                          "keeps its checkpoints there and deletes the directory when done. Move it, or set another "
                          "output directory")
    if path.is_file():
        before = json.loads(path.read_text(encoding="utf-8"))
        changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
        if changed:
            raise LensmapError(
                f"{work} holds a stopped run with other settings (changed: {', '.join(changed)}); "
                f"its results would be mixed with this run's. Delete {work} to start again, or set "
                "another output directory.")
        return
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(settings, indent=2, ensure_ascii=False))


def run_sft(config: SFTConfig | str | os.PathLike, *, progress: bool = True, overwrite: bool = False) -> Path:
    """Run ``lensmap sft`` for one config; returns the output directory.

    Writes ``sft_comparison.csv`` (variant × benchmark × scenario × language: accuracy and
    language consistency), ``eval_items.csv``, ``training_curves.csv``, ``variants.json``
    (trained sets, parameter counts, timings, the frozen-parameter check), ``language_mass.csv``
    (base and every variant, when probes are configured), ``weights/<variant>/`` (compact
    deltas, loadable with :func:`lensmap.training.load_delta`) and ``report.html``.
    """
    if not isinstance(config, SFTConfig):
        config = load_sft_config(config)
    output = prepare_output(config.output, "sft", overwrite=overwrite)
    start = time.perf_counter()
    items = training_items(config)
    work = Path(f"{str(output).rstrip('/')}.work")
    engine = sharded_parameters_engine()
    if engine:
        raise TrainingError(f"lensmap sft under {engine}: the parameters are sharded across processes, so rank 0 "
                            "cannot check the frozen ones or save the delta from its own copy. Launch with DDP "
                            "(examples/accelerate/ddp.yaml) or DeepSpeed ZeRO-2 (examples/accelerate/zero2.yaml), "
                            "which keep a full copy per GPU; docs/scale.md says what fits")
    main = is_main_process()  # under torchrun / accelerate launch only rank 0 writes (docs/scale.md)
    if main:
        check_work_settings(work, config, items)
    base = _load(config)
    fingerprint = model_fingerprint(base)
    examples = build_examples(items, base.tokenizer, loss_spans=config.training.loss_spans,
                              max_length=config.training.max_length)
    selective = selective_set(base, config)
    evaluator = Evaluator(config, base, progress)
    if main and not (work / "base" / DONE).is_file():
        (work / "base").mkdir(parents=True, exist_ok=True)
        _measure(evaluator, base, "base", work / "base")
        atomic_write_text(work / "base" / DONE, json.dumps({"variant": "base", "fingerprint": fingerprint}))
    del base
    for variant in config.variants:
        train_variant(config, variant, selective, examples, evaluator, work, fingerprint, progress)
    if not main:
        return output
    out = write_outputs(config, work, items, time.perf_counter() - start, output, overwrite)
    shutil.rmtree(work, ignore_errors=True)
    return out


def comparison_table(summary: pd.DataFrame) -> pd.DataFrame:
    """``sft_comparison.csv``: the evaluation summary of every variant in one tidy frame."""
    if summary.empty:
        return pd.DataFrame(columns=COMPARISON_COLUMNS)
    return summary[[c for c in COMPARISON_COLUMNS if c in summary.columns]].reset_index(drop=True)


def write_outputs(config: SFTConfig, work: Path, items: list[SFTItem], seconds: float, output: Path | None = None,
                  overwrite: bool = False) -> Path:
    """Assemble the output directory from ``work`` in one atomic step."""
    names = ["base", *config.variants]
    frames: dict[str, list[pd.DataFrame]] = {"eval_items": [], "eval_summary": [], "language_mass": [],
                                            "training_curve": []}
    for name in names:
        for key in frames:
            frame = _read(work / name, key)
            if not frame.empty:
                frames[key].append(frame)
    merged = {key: pd.concat(parts, ignore_index=True) if parts else pd.DataFrame() for key, parts in frames.items()}
    records = [json.loads((work / name / DONE).read_text()) for name in config.variants]
    comparison = comparison_table(merged["eval_summary"])
    output = Path(config.output) if output is None else output
    with staged_directory(output, command="sft", overwrite=overwrite) as out:
        for name in config.variants:  # hard links: the deltas are not copied twice on disk
            shutil.copytree(work / name / "weights", out / "weights" / name, copy_function=_link_or_copy)
        atomic_write_csv(out / "sft_comparison.csv", comparison)
        atomic_write_csv(out / "eval_items.csv", merged["eval_items"])
        atomic_write_csv(out / "training_curves.csv", merged["training_curve"])
        if not merged["language_mass"].empty:
            atomic_write_csv(out / "language_mass.csv", merged["language_mass"])
        atomic_write_text(out / "variants.json", json.dumps(records, indent=2))
        run = {"config": dataclasses.asdict(config), "training_items": len(items),
               "languages": sorted({item.language for item in items}), "seconds": round(seconds, 1)}
        atomic_write_text(out / "run.json", json.dumps(run, indent=2, default=str))
        sections = sft_sections(records, comparison, merged["training_curve"], merged["language_mass"])
        write_report(out / "report.html", sections, title=config.title or f"lensmap sft: {config.model}",
                     summary={"model": config.model, "variants": ", ".join(config.variants),
                              "training items": f"{len(items)} in {', '.join(run['languages'])}",
                              "time (s)": f"{seconds:.0f}"})
    return output


def _link_or_copy(src: str, dst: str) -> Any:
    try:
        return os.link(src, dst)
    except OSError:
        return shutil.copy2(src, dst)
