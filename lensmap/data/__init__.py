"""Prompt sets: CLDR translation and cloze probes, and prompts read from a user's file."""

from lensmap.data.probes import Prompt, cloze_probes, load_prompts_file, translation_probes

__all__ = ["Prompt", "cloze_probes", "load_prompts_file", "translation_probes"]
