"""Long tables across sessions: tools.table1 resumes a killed run from its last snapshot, training
keeps only the newest snapshots, and settings are chosen on a validation split inside the
training folds (tempregnet.training.validation_lists)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli import run_module
from data_prep.hdf5 import read_list
from data_prep.splits import write_splits
from fixtures_h5 import recipe_contract, write_prepared
from tempregnet import runs
from tempregnet.training import validation_lists

ITERS, SNAPSHOT = 150, 10
RECIPE = f"""description = "resume test fixture: the demo recipe, snapshots every {SNAPSHOT} iterations"
config = "small"
variants = ["tempreg"]
iterations = {ITERS}
decoder = "fit"
imagenet_weights = false
seed = 0
folds = "cv"
[data]
source = "synthetic"
patients = 24
seed = 0
label = "cycle"
roi = 0.5
[overrides]
snapshot = {SNAPSHOT}
"""


def test_validation_split_lies_inside_the_training_folds(tmp_path):
    groups = [f"patient{i // 3:02d}" for i in range(36)]          # 12 patients, 3 sequences each
    summary = write_splits(tmp_path, groups, "sequences.h5", k=4, seed=0)
    test_groups = {f["fold"]: set(f["test_groups"]) for f in summary["folds"]}
    for fold in range(4):
        fit, val = validation_lists(tmp_path, str(fold), tmp_path / f"v{fold}")
        fit_rows = {row for _, row in read_list(fit)}
        val_rows = {row for _, row in read_list(val)}
        train_rows = {row for _, row in read_list(tmp_path / f"fold{fold}_train.txt")}
        test_rows = {row for _, row in read_list(tmp_path / f"fold{fold}_test.txt")}
        assert fit_rows | val_rows == train_rows and not fit_rows & val_rows
        assert not val_rows & test_rows and val_rows
        assert {groups[r] for r in val_rows} == test_groups[(fold + 1) % 4]
        assert not {groups[r] for r in fit_rows} & {groups[r] for r in val_rows}
        # absolute h5 paths: the lists work from any folder
        assert all(h5 == (tmp_path / "sequences.h5").resolve() for h5, _ in read_list(val))


def snapshot_iterations(run_dir: Path) -> set[int]:
    return {runs.snapshot_iteration(p) for p in (run_dir / runs.SNAPSHOTS).glob("*_iter_*.*")}


@pytest.mark.slow
def test_a_killed_table_resumes_its_run_from_the_last_snapshot(tmp_path):
    pytest.importorskip("caffe")
    recipe = tmp_path / "resumable.toml"
    recipe.write_text(RECIPE)
    data = write_prepared(tmp_path / "prep", 24, 72, seed=3, n_test=6,
                          contract=recipe_contract("demo"))
    run_dir = tmp_path / "runs" / "resumable_tempreg_fold0"
    args = ["--recipe", recipe, "--data", data, "--runs", tmp_path / "runs", "--folds", "0",
            "--no-baselines", "--jobs", "1"]
    first = subprocess.Popen([sys.executable, "-m", "tools.table1", *map(str, args),
                              "--out", str(tmp_path / "first")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    deadline = time.time() + 300
    while runs.newest_solverstate(run_dir) is None or \
            runs.snapshot_iteration(runs.newest_solverstate(run_dir)) < 2 * SNAPSHOT:
        assert first.poll() is None, "table1 ended before it could be killed"
        assert time.time() < deadline, "no snapshot within 300 s"
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)                 # the command and its caffe child
    first.wait()
    assert not (run_dir / runs.FINAL_MODEL).exists()
    assert len(snapshot_iterations(run_dir)) <= 2          # older snapshots pruned while training
    killed_at = runs.snapshot_iteration(runs.newest_solverstate(run_dir))
    assert killed_at < ITERS

    again = run_module("tools.table1", *args, "--out", tmp_path / "second")
    assert again.returncode == 0, again.stderr
    assert f"resuming {run_dir}" in again.stdout
    log = (run_dir / "train.log").read_text()
    assert "Resuming from" in log and f"_iter_{killed_at}.solverstate" in log
    assert runs.final_model_path(run_dir).name == f"resumable_tempreg_iter_{ITERS}.caffemodel"
    assert (tmp_path / "second" / "table1.md").is_file()
    # a finished run keeps its final snapshot only (the solverstate for a later --resume)
    assert snapshot_iterations(run_dir) == {ITERS}
    assert (run_dir / runs.SNAPSHOTS / f"resumable_tempreg_iter_{ITERS}.solverstate").is_file()

    third = run_module("tools.table1", *args, "--out", tmp_path / "third")
    assert third.returncode == 0 and f"reusing {run_dir}" in third.stdout


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    """The demo recipe's data for a small synthetic cohort, written by the real generator and prepare."""
    from data_prep import prepare, synthetic
    root = tmp_path_factory.mktemp("demo_data")
    assert synthetic.main([str(root / "cohort"), "--patients", "8", "--seed", "0", "--format", "dicom"]) == 0
    assert prepare.main(["--recipe", "demo", str(root / "cohort"), str(root / "prep"), "--workers", "1"]) == 0
    return root / "prep"


@pytest.mark.slow
def test_a_killed_learning_curve_resumes_from_its_last_line(demo_data, tmp_path):
    import json
    pytest.importorskip("caffe")
    out = tmp_path / "curve"
    common = ["--recipe", "demo", "--data", demo_data, "--fold", "1", "--validation",
              "--every", "10", "--out", out]
    first = run_module("tools.learning_curve", *common, "--iters", "20")
    assert first.returncode == 0, first.stderr
    assert "validation sequences" in first.stdout
    saved = json.loads((out / "learning_curve.json").read_text())
    assert [line["iteration"] for line in saved["lines"]] == [10, 20]
    assert saved["held_out"] == "validation" and saved["decoder"] == "fit"
    # the validation sequences are fold 2's test patients, never fold 1's
    validation = {row for _, row in read_list(out / "fold1_validation.txt")}
    assert validation == {row for _, row in read_list(demo_data / "fold2_test.txt")}
    assert len(saved["final_records"]) == len(validation)

    again = run_module("tools.learning_curve", *common, "--iters", "40", "--resume")
    assert again.returncode == 0, again.stderr
    assert "resumed at iteration 20" in again.stdout
    resumed = json.loads((out / "learning_curve.json").read_text())
    assert [line["iteration"] for line in resumed["lines"]] == [10, 20, 30, 40]
    assert resumed["lines"][:2] == saved["lines"]
    assert {runs.snapshot_iteration(p) for p in out.glob("snapshot_iter_*")} == {30, 40}

    other = run_module("tools.learning_curve", *common[:-2], "--every", "20", "--out", out,
                       "--iters", "60", "--resume")
    assert other.returncode == 1 and "a curve with other every" in other.stderr
    # the recipe changed since the curve began (here: one more override) is refused too
    from tempregnet.recipes import RECIPE_DIR
    changed = tmp_path / "demo.toml"
    changed.write_text((RECIPE_DIR / "demo.toml").read_text().replace(
        "[overrides]", "[overrides]\ninput_scale = 0.5"))
    assert "input_scale = 0.5" in changed.read_text()
    moved = run_module("tools.learning_curve", "--recipe", changed, *common[2:], "--iters", "60",
                       "--resume")
    assert moved.returncode == 1 and "net_overrides" in moved.stderr
