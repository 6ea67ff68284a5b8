"""``lensmap sft CONFIG.yaml``: selective fine-tuning with baselines, evaluated before and after."""

from __future__ import annotations

import argparse


def _cmd_sft(args: argparse.Namespace) -> int:
    from lensmap.training.run import run_sft

    out = run_sft(args.config, progress=not args.quiet)
    print(f"wrote {out}/sft_comparison.csv and {out}/report.html; tuned weights in {out}/weights/")
    return 0


def add_sft_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sft", help="fine-tune the recommended layers (and baselines) and compare with the base model")
    p.add_argument("config", help="YAML config (see examples/sft.yaml and docs/sft.md)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_sft)
