"""The ``lensmap`` command line: a thin layer over the library."""

from __future__ import annotations

import argparse
import sys

from lensmap.errors import LensmapError


def _cmd_report(args: argparse.Namespace) -> int:
    from lensmap.pipeline import run_report

    out = run_report(args.config, progress=not args.quiet)
    print(f"wrote {out}/report.html (open it in a browser; it works offline)")
    return 0


def _cmd_vocab(args: argparse.Namespace) -> int:
    from lensmap.languages.lid import validate_languages
    from lensmap.languages.vocab_map import build_vocabulary_map
    from lensmap.models.loading import load_model

    languages = validate_languages([c.strip() for c in args.languages.split(",") if c.strip()])
    handle = load_model(args.model, self_check=False)
    vmap = build_vocabulary_map(handle.tokenizer, languages, vocab_size=handle.vocab_size,
                                threshold=args.threshold, progress=not args.quiet)
    import pandas as pd

    with pd.option_context("display.max_rows", 200, "display.width", 160):
        print(f"{handle.name}: {handle.vocab_size} vocabulary ids")
        print(vmap.counts().to_string())
    if args.table:
        from lensmap.io import atomic_write_csv

        atomic_write_csv(args.table, vmap.table)
        print(f"wrote the label of every token (text, language, method, confidence) to {args.table}")
    return 0


def _cmd_zoo(args: argparse.Namespace) -> int:
    from lensmap.models.zoo import ZOO, is_installed

    for entry in ZOO.values():
        state = "installed" if is_installed(entry.name) else "not installed"
        print(f"{entry.name:14s} {entry.architecture:7s} {entry.n_layers:3d} layers  {state:13s}  {entry.description}")
        if state != "installed":
            print(f"{'':14s} install: {entry.install_command}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from lensmap.models.loading import load_model

    handle = load_model(args.model, dtype=args.dtype)
    for key, value in handle.info.items():
        print(f"{key:24s} {value}")
    print("self-check passed: the last layer's logit lens reproduces the model's logits")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from lensmap.evaluation.run import run_evaluation

    out = run_evaluation(args.config, progress=not args.quiet)
    print(f"wrote {out}/eval_summary.csv, {out}/eval_items.csv and {out}/report.html")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lensmap", description="Which layers of a multilingual LLM speak which language.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("report", help="run the lens analysis of a YAML config and write an HTML report")
    p.add_argument("config", help="YAML config (see examples/demo.yaml)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("vocab", help="print per-language token counts and coverage of a model's vocabulary")
    p.add_argument("model", help="zoo name, .gguf file, model directory or hub id")
    p.add_argument("--languages", default="en,fr,de,zh", help="comma-separated language codes (default en,fr,de,zh)")
    p.add_argument("--threshold", type=float, default=0.5, help="fastText confidence below which a token is unk")
    p.add_argument("--table", metavar="CSV", help="also write every token's label and method to this CSV file")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_vocab)

    p = sub.add_parser("zoo", help="list the zoo models and how to install them")
    p.set_defaults(func=_cmd_zoo)

    p = sub.add_parser("check", help="load a model and run the adapter self-check")
    p.add_argument("model", help="zoo name, .gguf file, model directory or hub id")
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    p.set_defaults(func=_cmd_check)

    from lensmap.lens_cli import add_lens_commands

    add_lens_commands(sub)  # lensmap lens train|eval CONFIG.yaml
    p = sub.add_parser("eval", help="the four-scenario evaluation (MMLU, MGSM, XQuAD): accuracy and language consistency")
    p.add_argument("config", help="YAML config (see examples/eval.yaml and docs/evaluation.md)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_eval)

    from lensmap.training.cli import add_sft_commands

    add_sft_commands(sub)  # lensmap sft CONFIG.yaml
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LensmapError as error:
        print(f"lensmap: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lensmap: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
