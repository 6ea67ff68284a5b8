"""The ``lensmap`` command line: a thin layer over the library's run functions.

Every subcommand is one :class:`Command` entry in :data:`COMMANDS`: its name (``"lens train"``
for a nested one), a help line, the arguments it takes and the function that runs it. The
function receives the parsed arguments, calls one public library function, prints what was
written, and returns the exit code. To add a command, add an entry; nothing else changes.
A :class:`~lensmap.errors.LensmapError` (or an OSError: an unwritable path, a full disk) is
printed as one line (exit 2), never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from lensmap.errors import LensmapError, LensmapWarning, Terminated

Argument = tuple[tuple[str, ...], dict]  # (flags, add_argument keyword arguments)

QUIET = (("-q", "--quiet"), {"action": "store_true", "help": "no progress bars"})
MODEL = (("model",), {"help": "zoo name, .gguf file, model directory or hub id"})
OVERWRITE = (("--overwrite",), {"action": "store_true",
                                "help": "write into an output directory that holds other files (only lensmap's own "
                                        "files are ever replaced)"})


@dataclass(frozen=True)
class Command:
    """One subcommand: ``run(args) -> exit code``."""

    name: str
    help: str
    arguments: tuple[Argument, ...]
    run: Callable[[argparse.Namespace], int]


def _report(args: argparse.Namespace) -> int:
    from lensmap.runs.report import run_report

    out = run_report(args.config, progress=not args.quiet, overwrite=args.overwrite)
    print(f"wrote {out}/report.html (open it in a browser; it works offline)")
    return 0


def _vocab(args: argparse.Namespace) -> int:
    import pandas as pd

    from lensmap.io import atomic_write_csv
    from lensmap.languages.lid import validate_languages
    from lensmap.languages.vocab_map import build_vocabulary_map
    from lensmap.models.loading import load_model
    from lensmap.outputs import prepare_output_file

    table = prepare_output_file(args.table, overwrite=args.overwrite) if args.table else None
    languages = validate_languages([c.strip() for c in args.languages.split(",") if c.strip()])
    handle = load_model(args.model, self_check=False)
    vmap = build_vocabulary_map(handle.tokenizer, languages, vocab_size=handle.vocab_size,
                                threshold=args.threshold, progress=not args.quiet)
    with pd.option_context("display.max_rows", 200, "display.width", 160):
        print(f"{handle.name}: {handle.vocab_size} vocabulary ids")
        print(vmap.counts().to_string())
    if table is not None:
        atomic_write_csv(table, vmap.table)
        print(f"wrote the label of every token (text, language, method, confidence) to {table}")
    return 0


def _zoo(args: argparse.Namespace) -> int:
    from lensmap.models.zoo import ZOO, is_installed

    for entry in ZOO.values():
        state = "installed" if is_installed(entry.name) else "not installed"
        print(f"{entry.name:14s} {entry.architecture:7s} {entry.n_layers:3d} layers  {state:13s}  {entry.description}")
        if state != "installed":
            print(f"{'':14s} install: {entry.install_command}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from lensmap.models.loading import load_model

    handle = load_model(args.model, dtype=args.dtype, verify="full" if args.verify else False)
    for key, value in handle.info.items():
        print(f"{key:24s} {value}")
    print("self-check passed: the last layer's logit lens reproduces the model's logits")
    return 0


def _plan(args: argparse.Namespace) -> int:
    import pandas as pd

    from lensmap.models.plan import PlanSettings, device_map_advice, load_shape, plan

    shape = load_shape(args.model)
    settings = PlanSettings(dtype=args.dtype, batch=args.batch, seq=args.seq, gpus=args.gpus)
    print(f"{shape.name}: {shape.params / 1e9:.2f}B parameters, {shape.n_layers} blocks, d_model {shape.d_model}, "
          f"d_mlp {shape.d_mlp}, vocabulary {shape.vocab}")
    with pd.option_context("display.width", 200, "display.max_colwidth", 90):
        print(pd.DataFrame(plan(shape, settings)).to_string(index=False))
    if args.gpu_memory:
        print(f"\nfor analysis on {args.gpus} GPU(s) of {args.gpu_memory:g} GiB, put in the config:")
        print(device_map_advice(shape, args.gpu_memory, args.gpus, args.dtype))
    print("\nformulas: lensmap/models/plan.py; what runs where: docs/scale.md")
    return 0


def _print_lens_summary(frame) -> None:
    import pandas as pd

    from lensmap.figures.lens_eval import summary_table
    from lensmap.lenses.evaluation import beats_baseline_everywhere

    with pd.option_context("display.max_rows", 500, "display.width", 160):
        print(summary_table(frame).to_string(index=False))
    print("tuned lens beats the logit lens at every layer but the last in every language:",
          "yes" if beats_baseline_everywhere(frame) else "NO")


def _lens_train(args: argparse.Namespace) -> int:
    from lensmap.lenses.store import EVAL_CSV, EVAL_HTML
    from lensmap.runs.lens import run_lens_train

    run = run_lens_train(args.config, force=args.force, evaluate=not args.no_eval, progress=not args.quiet,
                         overwrite=args.overwrite)
    if not run.trained:
        print(f"a tuned lens with exactly these settings is already in {run.lens_dir} (use --force to train again)")
        return 0
    r = run.lens.info["result"]
    print(f"trained {r['steps']} steps on {r['tokens_per_language']:,} tokens per language "
          f"({', '.join(r['languages'])}) in {r['seconds'] / 60:.1f} min"
          + (" — stopped early at max_minutes; run the same command again to continue" if r["stopped_early"] else ""))
    print(f"saved the tuned lens to {run.lens_dir}")
    if run.evaluation is not None:
        _print_lens_summary(run.evaluation)
        print("wrote " + ", ".join(f"{d / EVAL_CSV} and {d / EVAL_HTML}" for d in run.written)
              + f" (total {run.seconds / 60:.1f} min)")
    return 0


def _lens_eval(args: argparse.Namespace) -> int:
    from lensmap.lenses.store import EVAL_CSV
    from lensmap.runs.lens import run_lens_eval

    run = run_lens_eval(args.config, output=args.output, progress=not args.quiet, overwrite=args.overwrite)
    _print_lens_summary(run.evaluation)
    print("wrote " + ", ".join(str(d / EVAL_CSV) for d in run.written))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from lensmap.runs.evaluation import run_evaluation

    out = run_evaluation(args.config, progress=not args.quiet, overwrite=args.overwrite)
    print(f"wrote {out}/eval_summary.csv, {out}/eval_items.csv and {out}/report.html")
    return 0


def _sft(args: argparse.Namespace) -> int:
    from lensmap.runs.sft import run_sft

    out = run_sft(args.config, progress=not args.quiet, overwrite=args.overwrite)
    print(f"wrote {out}/sft_comparison.csv and {out}/report.html; tuned weights in {out}/weights/")
    return 0


def _neurons(args: argparse.Namespace) -> int:
    from lensmap.runs.neurons import run_neurons

    out = run_neurons(args.config, progress=not args.quiet, overwrite=args.overwrite)
    print(f"wrote {out}/language_neurons.csv, {out}/deactivation.csv and {out}/report.html")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from lensmap.runs.sweep import run_sweep

    out = run_sweep(args.config, progress=not args.quiet, overwrite=args.overwrite)
    print(f"wrote {out}/sweep.csv, {out}/patching.csv, {out}/recommendation.json and {out}/report.html")
    return 0


COMMANDS: tuple[Command, ...] = (
    Command("report", "run the lens analysis of a YAML config and write an HTML report",
            ((("config",), {"help": "YAML config (see examples/demo.yaml)"}), OVERWRITE, QUIET), _report),
    Command("vocab", "print per-language token counts and coverage of a model's vocabulary", (
        MODEL,
        (("--languages",), {"default": "en,fr,de,zh", "help": "comma-separated language codes (default en,fr,de,zh)"}),
        (("--threshold",), {"type": float, "default": 0.5, "help": "fastText confidence below which a token is unk"}),
        (("--table",), {"metavar": "CSV", "help": "also write every token's label and method to this CSV file"}),
        OVERWRITE, QUIET), _vocab),
    Command("zoo", "list the zoo models and how to install them", (), _zoo),
    Command("plan", "memory per device for each command, from a model's config (no weights read)", (
        (("model",), {"help": "a preset (qwen3-32b, llama-2-7b, bloom-7b1, ...), config.json, model directory, "
                              "zoo name or cached hub id"}),
        (("--dtype",), {"default": "bfloat16", "choices": ["bfloat16", "float16", "float32"]}),
        (("--batch",), {"type": int, "default": 8, "help": "analysis batch size"}),
        (("--seq",), {"type": int, "default": 512, "help": "tokens per sequence"}),
        (("--gpus",), {"type": int, "default": 1}),
        (("--gpu-memory",), {"type": float, "default": 0.0, "help": "GiB per GPU: print the device_map lines"}),
    ), _plan),
    Command("check", "load a model and run the adapter self-check",
            (MODEL, (("--dtype",), {"default": "auto", "help": "auto, float32, bfloat16 or float16"}),
             (("--verify",), {"action": "store_true",
                              "help": "hash every byte of lensmap's cached files (default: a quick sampled check)"})),
            _check),
    Command("lens train", "train a tuned lens per the config's tuned_lens: section, then evaluate it", (
        (("config",), {"help": "a lens or report YAML config"}),
        (("--force",), {"action": "store_true", "help": "train again even if a lens with these settings exists"}),
        (("--no-eval",), {"action": "store_true", "help": "skip the held-out evaluation after training"}),
        OVERWRITE, QUIET), _lens_train),
    Command("lens eval", "compare the tuned lens with the logit lens on held-out text", (
        (("config",), {"help": "a lens or report YAML config"}),
        (("--output",), {"metavar": "DIR", "help": "also write lens_eval.csv and lens_eval.html here"}),
        OVERWRITE, QUIET), _lens_eval),
    Command("eval", "the four-scenario evaluation (MMLU, MGSM, XQuAD): accuracy and language consistency",
            ((("config",), {"help": "YAML config (see examples/eval.yaml and docs/evaluation.md)"}), OVERWRITE, QUIET),
            _eval),
    Command("sft", "fine-tune the recommended layers (and baselines) and compare with the base model",
            ((("config",), {"help": "YAML config (see examples/sft.yaml and docs/sft.md)"}), OVERWRITE, QUIET), _sft),
    Command("neurons", "find language-specific neurons (LAPE), switch them off, compare activations across languages",
            ((("config",), {"help": "YAML config (see examples/neurons.yaml and docs/neurons.md)"}), OVERWRITE, QUIET),
            _neurons),
    Command("sweep", "layer sweeps (skip/ablate/revert from the input and output side) and cross-lingual patching",
            ((("config",), {"help": "YAML config (see examples/sweep.yaml and docs/sweeps.md)"}), OVERWRITE, QUIET),
            _sweep),
)

GROUPS = {"lens": "train or evaluate a tuned lens (lensmap lens train|eval CONFIG.yaml)"}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command in :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(prog="lensmap",
                                     description="Which layers of a multilingual LLM speak which language.")
    sub = parser.add_subparsers(dest="command", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    for command in COMMANDS:
        *group, name = command.name.split()
        where = sub
        if group:
            if group[0] not in groups:
                holder = sub.add_parser(group[0], help=GROUPS.get(group[0], ""))
                groups[group[0]] = holder.add_subparsers(dest=f"{group[0]}_command", required=True)
            where = groups[group[0]]
        p = where.add_parser(name, help=command.help)
        for flags, options in command.arguments:
            p.add_argument(*flags, **options)
        p.set_defaults(func=command.run)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """lensmap's warnings as one line, without Python's source excerpt."""
    if issubclass(category, LensmapWarning):
        print(f"lensmap: warning: {message}", file=file or sys.stderr)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


_python_showwarning = warnings.showwarning


def main(argv: list[str] | None = None) -> int:
    from lensmap.models.offline import set_offline_mode
    from lensmap.signals import terminate_on_signals

    set_offline_mode()  # before any hub library runs: nothing is downloaded unless LENSMAP_ALLOW_DOWNLOAD=1
    args = build_parser().parse_args(argv)
    try:
        with terminate_on_signals(), warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return args.func(args)
    except Terminated as error:  # SIGTERM / SIGHUP: outputs left as they were, temporaries removed
        print(f"lensmap: {error}", file=sys.stderr)
        return error.exit_code
    except LensmapError as error:
        print(f"lensmap: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lensmap: interrupted", file=sys.stderr)
        return 130
    except OSError as error:  # a path that cannot be written, a full disk: the environment, not a bug
        where = f" ({error.filename})" if error.filename else ""
        print(f"lensmap: error: {error.strerror or error}{where}; check that the path exists, is writable "
              "and that the disk has space", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
