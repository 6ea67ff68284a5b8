"""Fault injection into `lensmap report`: a failure or a kill at any stage changes nothing.

A small random Qwen2-shaped model with the zoo's real tokenizer is saved as a model directory.
One successful report makes the "previous output"; then each stage is made to fail (model
load, vocabulary map, capture, lens, similarity, figures, writing), and SIGINT / SIGTERM /
SIGHUP are sent to a `lensmap report` process while it writes. Every time: the previous output
is byte-for-byte as it was, no staging or temporary directory is left, no hook stays on the model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import transformers as tf

import lensmap.runs.report as report_run
from lensmap.cli import main
from lensmap.config.report import parse_config
from lensmap.outputs import OUTPUT_MANIFEST
from lensmap.runs.report import run_report

REPO = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, qwen_tokenizer) -> Path:
    """A 3-block random Qwen2 with the real Qwen tokenizer (so the vocabulary map is the real one)."""
    torch.manual_seed(0)
    config = tf.Qwen2Config(vocab_size=len(qwen_tokenizer), hidden_size=32, intermediate_size=64,
                            num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                            tie_word_embeddings=True)
    model = tf.AutoModelForCausalLM.from_config(config)
    path = tmp_path_factory.mktemp("faults") / "tiny-qwen"
    model.save_pretrained(path)
    qwen_tokenizer.save_pretrained(path)
    return path


def _config(model_dir: Path, out: Path) -> dict:
    return {"model": str(model_dir), "languages": ["en", "fr", "zh"], "dtype": "float32", "output": str(out),
            "probes": [{"kind": "translation", "source": "fr", "target": "zh", "n": 6}],
            "phases": {"n": 12, "n_boot": 20, "phase_boot": 10}}


def _snapshot(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if "lensmap-tmp" in p.name or "staging" in p.name)


@pytest.fixture(scope="module")
def first_output(model_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("first") / "out"
    run_report(parse_config(_config(model_dir, out)), progress=False)
    (out / "notes.txt").write_text("the user's own file")  # never touched by a later run
    return out


@pytest.fixture()
def previous(first_output, tmp_path) -> tuple[Path, dict[str, str]]:
    """A copy of the first run's output (sizes and mtimes kept, so its manifest still matches)."""
    out = tmp_path / "out"
    shutil.copytree(first_output, out, copy_function=shutil.copy2)
    return out, _snapshot(out)


class Boom(RuntimeError):
    pass


def _raise(*args, **kwargs):
    raise Boom("injected")


def _hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


STAGES = {
    "model load": ("load_for", None),
    "vocabulary map": ("build_vocabulary_map", None),
    "lens": ("run_probes", "lensmap.readout.probes.read_layers"),
    "similarity": ("run_similarity", None),
    "figures": ("default_sections", None),
    "writing": ("write_report", None),
}


@pytest.mark.parametrize("stage", [*STAGES, "capture"])
def test_a_failure_at_any_stage_leaves_the_previous_output(stage, model_dir, previous, monkeypatch):
    out, before = previous
    handles = []
    real_load = report_run.load_for

    def keep_handle(config, **kwargs):
        handle = real_load(config, **kwargs)
        handles.append(handle)
        if stage == "capture":  # fail inside the forward pass, while lensmap's hooks are on the model
            block = handle.blocks[2]
            block.forward = _raise
        return handle

    monkeypatch.setattr(report_run, "load_for", keep_handle)
    if stage != "capture":
        name, deeper = STAGES[stage]
        if deeper:
            module, attr = deeper.rsplit(".", 1)
            monkeypatch.setattr(sys.modules[module], attr, _raise)
        elif name != "load_for":
            monkeypatch.setattr(report_run, name, _raise)
        else:
            monkeypatch.setattr(report_run, "load_for", _raise)
    config = parse_config(_config(model_dir, out))
    with pytest.raises(Boom):
        run_report(config, progress=False, overwrite=True)
    assert _snapshot(out) == before
    assert _leftovers(out.parent) == []
    for handle in handles:
        assert _hooks(handle.model) == 0


def test_a_failure_is_one_line_from_the_cli_and_stale_staging_is_swept(model_dir, previous, tmp_path, capsys):
    """A stale staging directory of a killed run (dead pid) is removed by the next run."""
    out, _ = previous
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = out.parent / f".out.lensmap-tmp-{dead.stdout.strip()}-abcdefgh"
    stale.mkdir()
    (stale / "language_mass.csv").write_text("partial")
    config_path = tmp_path / "config.yaml"
    config_path.write_text(json.dumps(_config(model_dir, out)))
    assert main(["report", str(config_path), "-q"]) == 2  # the user's notes.txt: refused without --overwrite
    assert "notes.txt" in capsys.readouterr().err
    assert main(["report", str(config_path), "-q", "--overwrite"]) == 0
    assert not stale.exists() and (out / "notes.txt").read_text() == "the user's own file"
    assert OUTPUT_MANIFEST in {p.name for p in out.iterdir()}


KILL_DURING_WRITE = textwrap.dedent("""
    import sys, time
    import lensmap.runs.report as report_run
    from lensmap.cli import main

    real = report_run.write_outputs
    def slow_write(out, *args):
        real(out, *args)            # the CSVs are in the staging directory now
        print("ready", flush=True)
        time.sleep(60)
    report_run.write_outputs = slow_write
    sys.exit(main(["report", sys.argv[1], "-q", "--overwrite"]))
""")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_kill_while_writing_leaves_the_previous_output(signum, model_dir, previous, tmp_path):
    out, before = previous
    config_path = tmp_path / "config.yaml"
    config_path.write_text(json.dumps(_config(model_dir, out)))
    script = tmp_path / "kill.py"
    script.write_text(KILL_DURING_WRITE)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, str(script), str(config_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        proc.send_signal(signum)
        code = proc.wait(timeout=120)
    finally:
        proc.kill()
    assert code == {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}[signum]
    assert _snapshot(out) == before
    assert _leftovers(out.parent) == []
