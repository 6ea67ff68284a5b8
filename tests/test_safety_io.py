"""Issue 18, outputs: lensmap never deletes or overwrites a file it did not write."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import lensmap.io as lio
import lensmap.outputs as louts
from lensmap.errors import ConfigError, LensmapError, OutputError
from lensmap.io import expand_path, sweep_stale
from lensmap.outputs import OUTPUT_MANIFEST, prepare_output, staged_directory


def write_run(final, files: dict[str, str], **kwargs) -> None:
    """One lensmap-style run: stage ``files`` and publish them into ``final``."""
    with staged_directory(final, **kwargs) as out:
        for name, text in files.items():
            lio.atomic_write_text(out / name, text)


def leftovers(directory: Path) -> list[str]:
    """Hidden temporary or staging entries anywhere below ``directory``."""
    return [p.name for p in directory.rglob(".*") if "lensmap-tmp" in p.name or ".staging-" in p.name
            or ".old-" in p.name]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def user_dir(tmp_path):
    """A directory holding the user's own files."""
    d = tmp_path / "mine"
    (d / "sub").mkdir(parents=True)
    (d / "my_notes.txt").write_text("notes")
    (d / "sub" / "keep.txt").write_text("keep")
    return d


def test_user_directory_is_refused_and_untouched(user_dir, tmp_path):
    with pytest.raises(OutputError, match="holds files lensmap did not write.*my_notes.txt"):
        prepare_output(user_dir, "report")
    with pytest.raises(OutputError, match="my_notes.txt"):
        write_run(user_dir, {"report.html": "x"}, command="report")
    assert (user_dir / "my_notes.txt").read_text() == "notes"
    assert (user_dir / "sub" / "keep.txt").read_text() == "keep"
    assert sorted(p.name for p in user_dir.iterdir()) == ["my_notes.txt", "sub"]
    assert leftovers(tmp_path) == []


def test_project_directory_with_the_runs_own_inputs_is_refused(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "thesis.tex").write_text("\\documentclass{article}")
    (project / "prompts.jsonl").write_text('{"prompt": "a"}\n')
    with pytest.raises(OutputError, match="prompts.jsonl, thesis.tex"):
        write_run(project, {"run.json": "{}"})
    assert (project / "thesis.tex").is_file() and (project / "prompts.jsonl").is_file()


def test_overwrite_writes_beside_user_files_but_never_replaces_them(user_dir):
    write_run(user_dir, {"report.html": "r1", "run.json": "{}"}, command="report", overwrite=True)
    assert (user_dir / "report.html").read_text() == "r1"
    assert (user_dir / "my_notes.txt").read_text() == "notes"
    manifest = json.loads((user_dir / OUTPUT_MANIFEST).read_text())
    assert manifest["command"] == "report" and sorted(manifest["files"]) == ["report.html", "run.json"]
    # a new file whose name is a user's file is refused even with overwrite, and nothing changes
    with pytest.raises(OutputError, match="my_notes.txt .*did not write"):
        write_run(user_dir, {"report.html": "r2", "my_notes.txt": "clobbered"}, command="report", overwrite=True)
    assert (user_dir / "my_notes.txt").read_text() == "notes"
    assert (user_dir / "report.html").read_text() == "r1"
    # a file lensmap needs as a folder name is the user's file: refused too
    with pytest.raises(OutputError, match="my_notes.txt"):
        write_run(user_dir, {"my_notes.txt/inner.csv": "x"}, command="report", overwrite=True)
    assert leftovers(user_dir) == []


def test_rerun_replaces_only_lensmaps_files_and_removes_its_stale_ones(tmp_path):
    out = tmp_path / "out"
    write_run(out, {"a.csv": "1", "b.csv": "1", "weights/v1/w.bin": "1"}, command="report")
    write_run(out, {"a.csv": "2", "c.csv": "2"}, command="report")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [OUTPUT_MANIFEST, "a.csv", "c.csv"]
    assert (out / "a.csv").read_text() == "2"
    assert not (out / "weights").exists()  # lensmap's emptied folder goes too
    # a file the user added later stops a plain re-run; with overwrite it is kept
    (out / "my_analysis.ipynb").write_text("{}")
    with pytest.raises(OutputError, match="my_analysis.ipynb"):
        prepare_output(out, "report")
    write_run(out, {"a.csv": "3"}, command="report", overwrite=True)
    assert (out / "my_analysis.ipynb").read_text() == "{}" and not (out / "c.csv").exists()


def test_a_lensmap_file_the_user_edited_is_not_overwritten_without_overwrite(tmp_path):
    out = tmp_path / "out"
    write_run(out, {"report.html": "generated"}, command="report")
    time.sleep(0.01)
    (out / "report.html").write_text("generated + my edits")
    with pytest.raises(OutputError, match="changed since it wrote them .*report.html"):
        write_run(out, {"report.html": "new"}, command="report")
    assert (out / "report.html").read_text() == "generated + my edits"
    write_run(out, {"report.html": "new"}, command="report", overwrite=True)
    assert (out / "report.html").read_text() == "new"


def test_another_commands_output_is_refused(tmp_path):
    out = tmp_path / "out"
    write_run(out, {"eval_summary.csv": "x"}, command="eval")
    with pytest.raises(OutputError, match="output of `lensmap eval`, not of `lensmap report`"):
        prepare_output(out, "report")
    write_run(out, {"report.html": "x"}, command="report", overwrite=True)
    assert not (out / "eval_summary.csv").exists() and (out / "report.html").is_file()


def test_a_manifest_never_points_lensmap_outside_its_directory(tmp_path):
    out = tmp_path / "out"
    write_run(out, {"a.csv": "1"})
    victim = tmp_path / "thesis.tex"
    victim.write_text("precious")
    st = victim.stat()
    manifest = json.loads((out / OUTPUT_MANIFEST).read_text())
    manifest["files"]["../thesis.tex"] = [[st.st_size, st.st_mtime_ns]]
    manifest["files"][str(victim)] = [[st.st_size, st.st_mtime_ns]]
    (out / OUTPUT_MANIFEST).write_text(json.dumps(manifest))
    write_run(out, {"b.csv": "2"})
    assert victim.read_text() == "precious"


def test_a_lensmap_folder_replaced_by_a_link_to_the_users_files_is_not_followed(tmp_path):
    out = tmp_path / "out"
    write_run(out, {"weights/v1/w.bin": "1", "a.csv": "1"})
    mine = tmp_path / "mine" / "v1"
    mine.mkdir(parents=True)
    (mine / "w.bin").write_text("my own weights")
    shutil.rmtree(out / "weights")
    (out / "weights").symlink_to(tmp_path / "mine", target_is_directory=True)
    with pytest.raises(OutputError, match="weights"):
        write_run(out, {"a.csv": "2"})  # would otherwise delete mine/v1/w.bin as a stale lensmap file
    with pytest.raises(OutputError, match="weights"):
        write_run(out, {"a.csv": "2", "weights/v1/w.bin": "2"}, overwrite=True)
    assert (mine / "w.bin").read_text() == "my own weights"


def test_corrupt_manifest_is_a_clear_error(tmp_path):
    out = tmp_path / "out"
    write_run(out, {"a.csv": "1"})
    (out / OUTPUT_MANIFEST).write_text("{broken")
    with pytest.raises(OutputError, match="unreadable"):
        write_run(out, {"a.csv": "2"})
    assert (out / "a.csv").read_text() == "1"


def test_current_home_root_and_ancestors_are_refused(tmp_path, monkeypatch):
    work = tmp_path / "home" / "me" / "project"
    work.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(tmp_path / "home" / "me"))
    monkeypatch.chdir(work)
    for path, reason in [(".", "the current directory"), (str(work), "the current directory"),
                         ("..", "your home directory"), (str(tmp_path), "an ancestor of the current directory"),
                         ("~", "your home directory"), ("/", "root of the file system")]:
        with pytest.raises(OutputError, match=reason):
            prepare_output(path, "report")
        with pytest.raises(OutputError):
            write_run(path, {"a.csv": "1"})
    assert list(work.iterdir()) == [] and leftovers(tmp_path) == []


def test_symlinked_output_is_written_through_and_the_link_kept(tmp_path):
    real = tmp_path / "real"
    write_run(real, {"a.csv": "1"})
    link = tmp_path / "out"
    link.symlink_to(real, target_is_directory=True)
    write_run(link, {"a.csv": "2", "b.csv": "2"})
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert (real / "a.csv").read_text() == "2" and (real / "b.csv").is_file()
    assert leftovers(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["out", "real"]
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "missing")
    with pytest.raises(OutputError, match="symbolic link .* does not exist"):
        prepare_output(dangling, "report")


def test_an_existing_file_is_refused_and_left_in_place(tmp_path):
    target = tmp_path / "out"
    target.write_text("my file")
    with pytest.raises(OutputError, match="is an existing file"):
        prepare_output(target, "report")
    with pytest.raises(OutputError, match="is an existing file"):
        write_run(target, {"a.csv": "1"})
    assert target.read_text() == "my file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_home_and_environment_variables_are_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RUNS", str(tmp_path / "runs"))
    monkeypatch.chdir(tmp_path)
    assert expand_path("~/reports/x") == tmp_path / "home" / "reports" / "x"
    assert expand_path("$RUNS/a") == expand_path("${RUNS}/a") == tmp_path / "runs" / "a"
    assert prepare_output("~/reports/x", "report") == tmp_path / "home" / "reports" / "x"
    write_run("~/reports/x", {"a.csv": "1"})
    assert (tmp_path / "home" / "reports" / "x" / "a.csv").is_file()
    assert not (tmp_path / "~").exists()
    with pytest.raises(ConfigError, match="output: .*NOT_SET_ANYWHERE.*not set"):
        prepare_output("$NOT_SET_ANYWHERE/x", "report")
    with pytest.raises(ConfigError, match="no user 'no_such_user_xyz'"):
        expand_path("~no_such_user_xyz/x")
    assert not (tmp_path / "$NOT_SET_ANYWHERE").exists()


def test_unwritable_locations_are_clear_errors(tmp_path, monkeypatch):
    for path in ["/proc/lensmap-test/out", "/proc/self/lensmap-out", str(tmp_path / "file.txt" / "out")]:
        (tmp_path / "file.txt").write_text("x")
        with pytest.raises(OutputError, match=r"cannot (write|create) the output"):
            prepare_output(path, "report")
        with pytest.raises(OutputError):
            write_run(path, {"a.csv": "1"})

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(lio.tempfile, "mkdtemp", read_only)
    with pytest.raises(OutputError, match="not writable \\(Read-only file system\\)"):
        prepare_output(tmp_path / "new" / "out", "report")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_parent_is_a_clear_error(tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="not writable"):
            prepare_output(parent / "out", "report")
    finally:
        parent.chmod(0o755)


def test_failure_changes_nothing_and_leaves_no_staging(tmp_path):
    out = tmp_path / "out"
    write_run(out, {"a.csv": "1"})
    with pytest.raises(RuntimeError):
        with staged_directory(out) as staging:
            lio.atomic_write_text(staging / "a.csv", "partial")
            raise RuntimeError("boom")
    assert (out / "a.csv").read_text() == "1" and leftovers(tmp_path) == []
    fresh = tmp_path / "new" / "deeper" / "out"
    with pytest.raises(KeyboardInterrupt):
        with staged_directory(fresh) as staging:
            lio.atomic_write_text(staging / "a.csv", "partial")
            raise KeyboardInterrupt
    assert not (tmp_path / "new").exists()  # the parents created for it are gone again


def test_stale_temporaries_of_dead_runs_are_swept(tmp_path):
    out = tmp_path / "out"
    write_run(out, {"a.csv": "1"})
    pid = dead_pid()
    beside = tmp_path / f".out.lensmap-tmp-{pid}-abc123"
    inside = out / f".lensmap-staging.lensmap-tmp-{pid}-x"
    tmp_file = out / f".a.csv.lensmap-tmp-{pid}-q1w2.tmp"
    live = tmp_path / f".out.lensmap-tmp-{os.getpid()}-live"
    legacy_old, legacy_new = tmp_path / ".out.staging-abcd1234", tmp_path / ".out.staging-wxyz9876"
    for d in (beside, inside, live, legacy_old, legacy_new):
        d.mkdir()
        (d / "partial.csv").write_text("half")
    tmp_file.write_text("half")
    old = time.time() - 7 * 3600
    os.utime(legacy_old, (old, old))
    write_run(out, {"a.csv": "2"})  # a run sweeps before it writes
    assert not beside.exists() and not inside.exists() and not tmp_file.exists() and not legacy_old.exists()
    assert live.exists() and legacy_new.exists()  # a live process's, and a recent pid-less one, stay
    assert sweep_stale(tmp_path) == []


def test_atomic_writes_name_their_temporaries_for_the_sweep(tmp_path, monkeypatch):
    seen = []
    real = os.replace

    def spy(src, dst):
        seen.append(Path(src).name)
        return real(src, dst)

    monkeypatch.setattr(lio.os, "replace", spy)
    lio.atomic_write_text(tmp_path / "x.csv", "1")
    assert seen and lio._TMP_PATTERN.match(seen[0]) and f"-{os.getpid()}-" in seen[0]


def test_errors_are_lensmap_errors():
    assert issubclass(OutputError, LensmapError)


def test_files_written_straight_into_an_output_can_be_recorded_as_lensmaps(tmp_path):
    lens_dir = tmp_path / "lens"
    write_run(lens_dir, {"config.json": "{}", "translators.safetensors": "w"}, command="lens")
    lio.atomic_write_text(lens_dir / "lens_eval.csv", "eval")  # written after the lens was saved
    with pytest.raises(OutputError, match="lens_eval.csv"):
        prepare_output(lens_dir, "lens")
    louts.record_output_files(lens_dir, ["lens_eval.csv"])
    assert prepare_output(lens_dir, "lens") == lens_dir
    write_run(lens_dir, {"config.json": "{}", "translators.safetensors": "w2"}, command="lens")
    assert not (lens_dir / "lens_eval.csv").exists()  # the old lens's evaluation went with it
    with pytest.raises(ValueError):
        louts.record_output_files(lens_dir, ["../elsewhere.txt"])


def test_adopted_files_of_an_output_from_before_manifests_can_be_replaced(tmp_path):
    legacy = tmp_path / "lens"
    legacy.mkdir()
    (legacy / "config.json").write_text("old")
    (legacy / "translators.safetensors").write_text("old")
    with pytest.raises(OutputError):
        write_run(legacy, {"config.json": "new"})
    write_run(legacy, {"config.json": "new"}, adopt=["config.json", "translators.safetensors"])
    assert (legacy / "config.json").read_text() == "new" and not (legacy / "translators.safetensors").exists()


def test_a_legacy_report_directory_gets_a_specific_hint(tmp_path):
    old = tmp_path / "reports" / "demo"
    old.mkdir(parents=True)
    (old / "run.json").write_text("{}")
    (old / "report.html").write_text("<html>")
    with pytest.raises(OutputError, match="earlier lensmap version .*delete it"):
        prepare_output(old, "report")


def test_single_output_files_are_never_overwritten_unasked(tmp_path):
    from lensmap.outputs import prepare_output_file

    table = tmp_path / "tokens.csv"
    assert prepare_output_file(table) == table
    table.write_text("my data")
    with pytest.raises(OutputError, match="already exists"):
        prepare_output_file(table)
    assert prepare_output_file(table, overwrite=True) == table
    with pytest.raises(OutputError, match="is an existing directory"):
        prepare_output_file(tmp_path)
    with pytest.raises(OutputError, match="cannot (write|create)"):
        prepare_output_file("/proc/lensmap-test/tokens.csv")


def test_every_path_in_the_sft_and_eval_configs_is_expanded(tmp_path, monkeypatch):
    """`~` and `$VARS` in the SFT config's paths (output, layer selection, training files) and in
    the evaluation data paths become real paths, not directories literally named `~`."""
    from lensmap.config.sft import SFTConfig
    from lensmap.schema import build

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DATA", str(tmp_path / "data"))
    config = build(SFTConfig, {
        "model": "qwen2.5-0.5b", "output": "~/runs/sft",
        "select": {"recommendation": "$DATA/recommendation.json"},
        "train_files": ["$DATA/train.jsonl"], "train_mmlu": {"fr": "~/mmlu_fr.csv"},
        "evaluation": {"data": {"mmlu": "$DATA/mmlu_{lang}.csv", "mgsm": "samples"}},
    })
    assert config.output == str(tmp_path / "home" / "runs" / "sft")
    assert config.select.recommendation == str(tmp_path / "data" / "recommendation.json")
    assert config.train_files == [str(tmp_path / "data" / "train.jsonl")]
    assert config.train_mmlu == {"fr": str(tmp_path / "home" / "mmlu_fr.csv")}
    assert config.evaluation.data == {"mmlu": str(tmp_path / "data" / "mmlu_{lang}.csv"), "mgsm": "samples"}
