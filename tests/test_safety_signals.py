"""Issue 18, kills: SIGTERM and SIGHUP during a staged write leave the previous output intact and no staging."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import lensmap.io as lio
from lensmap.errors import Terminated
from lensmap.outputs import OUTPUT_MANIFEST, staged_directory
from lensmap.signals import deferred_signals, terminate_on_signals

REPO = Path(__file__).resolve().parents[1]

# Writes a previous output once, then starts a second run that hangs half-way through its files.
STAGED_WRITE = textwrap.dedent("""
    import signal, sys, time
    from lensmap.errors import Terminated
    from lensmap.io import atomic_write_text
    from lensmap.outputs import staged_directory

    out, mode = sys.argv[1], sys.argv[2]
    if mode == "nohup":
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    with staged_directory(out, command="report") as staging:
        atomic_write_text(staging / "a.csv", "old")
        atomic_write_text(staging / "b.csv", "old")
    try:
        with staged_directory(out, command="report") as staging:
            atomic_write_text(staging / "a.csv", "new, partial")
            print("ready", flush=True)
            time.sleep(1.5 if mode == "nohup" else 30)
            atomic_write_text(staging / "b.csv", "new")
    except Terminated as error:
        print("terminated", error.signal_name, flush=True)
        sys.exit(error.exit_code)
    print("finished", flush=True)
""")


def run_and_signal(tmp_path: Path, signum: int, mode: str = "plain") -> tuple[subprocess.CompletedProcess, Path]:
    script = tmp_path / "staged.py"
    script.write_text(STAGED_WRITE)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, str(script), str(out), mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        line = proc.stdout.readline().strip()
        assert line == "ready", proc.stderr.read()
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, "ready\n" + stdout, stderr), out


def hidden_leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob(".*") if p.name != OUTPUT_MANIFEST)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_signal_during_a_staged_write_keeps_the_previous_output(tmp_path, signum):
    result, out = run_and_signal(tmp_path, signum)
    name = signal.Signals(signum).name
    assert f"terminated {name}" in result.stdout, result.stderr
    assert result.returncode == 128 + signum
    assert (out / "a.csv").read_text() == "old" and (out / "b.csv").read_text() == "old"
    assert hidden_leftovers(tmp_path) == [], "a staging directory or temporary file was left behind"


def test_an_ignored_sighup_stays_ignored(tmp_path):
    """``nohup lensmap ...`` ignores SIGHUP: lensmap must not turn it into a termination."""
    result, out = run_and_signal(tmp_path, signal.SIGHUP, mode="nohup")
    assert result.returncode == 0 and "finished" in result.stdout, result.stderr
    assert (out / "a.csv").read_text() == "new, partial" and (out / "b.csv").read_text() == "new"


def test_terminate_on_signals_raises_and_restores_the_handlers():
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    cleaned = []
    with pytest.raises(Terminated) as info:
        with terminate_on_signals():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler raises long before this ends
            finally:
                cleaned.append(True)
    assert cleaned == [True] and info.value.exit_code == 143 and "SIGTERM" in str(info.value)
    assert not isinstance(info.value, Exception)  # like KeyboardInterrupt: `except Exception` cannot swallow it
    assert {s: signal.getsignal(s) for s in before} == before
    with pytest.raises(Terminated, match="SIGHUP"):
        with terminate_on_signals():
            with terminate_on_signals():  # nesting is fine
                os.kill(os.getpid(), signal.SIGHUP)
                time.sleep(5)
    assert {s: signal.getsignal(s) for s in before} == before


def test_terminate_on_signals_is_a_no_op_outside_the_main_thread():
    errors = []

    def worker():
        try:
            with terminate_on_signals():
                pass
        except BaseException as error:  # noqa: BLE001 - the test reports anything
            errors.append(error)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert errors == [] and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_deferred_signals_hold_a_signal_until_the_block_ends():
    steps = []
    with pytest.raises(Terminated):
        with terminate_on_signals():
            with deferred_signals():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.1)
                steps.append("finished the critical section")
            steps.append("not reached")
    assert steps == ["finished the critical section"]
    with pytest.raises(KeyboardInterrupt):
        with deferred_signals():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
            steps.append("held Ctrl-C")
    assert steps[-1] == "held Ctrl-C"


def test_a_signal_while_publishing_completes_the_output_first(tmp_path, monkeypatch):
    """SIGTERM arriving between two of the renames that publish an output is acted on after them."""
    out = tmp_path / "out"
    with staged_directory(out) as staging:
        for name in ("a.csv", "b.csv", "c.csv"):
            lio.atomic_write_text(staging / name, "old")
    real_replace = os.replace
    sent = []

    def replace_and_signal(src, dst):
        real_replace(src, dst)
        if not sent and Path(dst).parent == out and Path(dst).name.endswith(".csv"):
            sent.append(dst)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)

    with pytest.raises(Terminated):
        with staged_directory(out) as staging:
            for name in ("a.csv", "b.csv", "c.csv"):
                lio.atomic_write_text(staging / name, "new")
            monkeypatch.setattr(lio.os, "replace", replace_and_signal)
    assert sent, "the signal was sent mid-commit"
    assert [(out / n).read_text() for n in ("a.csv", "b.csv", "c.csv")] == ["new"] * 3
    assert hidden_leftovers(tmp_path) == []
