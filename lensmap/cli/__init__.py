"""The ``lensmap`` command line: argparse only, one declarative entry per subcommand (:mod:`.main`)."""

from lensmap.cli.main import COMMANDS, build_parser, main

__all__ = ["COMMANDS", "build_parser", "main"]
