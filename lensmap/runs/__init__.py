"""Runs: a command's config → the model → the analyses → files in the output directory.

One module per command (``report``, ``lens``, ``evaluation``, ``sft``); each exposes a public
``run_*`` function a notebook can call with a config object or a YAML path. The CLI
(:mod:`lensmap.cli`) is a thin layer over them.
"""
