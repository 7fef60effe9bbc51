"""tools/table1.py end to end on a small prepared synthetic set, with finished (trivial) runs reused."""
import csv
import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from cli import run_module
from trivial_net import write_run_dir

pytest.importorskip("caffe")
synthetic = pytest.importorskip("data_prep.synthetic")

CROP = 24              # the trivial net's input; the frames are the recipe's (config small: 72 px)
RECIPE = """description = "table1 test fixture"
config = "small"
variants = ["cnn_reg", "tempreg_notsc", "tempreg"]
iterations = 1
decoder = "fit"
imagenet_weights = false
seed = 0
folds = "cv"
[data]
source = "dicom"
seed = 0
label = "cycle"
roi = 1.0
[overrides]
"""
VARIANTS = ("cnn_reg", "tempreg_notsc", "tempreg")
STACKED = tuple(f"{v}_stack" for v in VARIANTS)     # the same nets, decoded per cine stack
METHODS = ("level_set", "graph_cut") + VARIANTS + STACKED + ("trivial",)


def run_table1(*args):
    return run_module("tools.table1", *args)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from tempregnet.contract import read_contract
    from tempregnet.recipes import load_recipe
    root = tmp_path_factory.mktemp("table1")
    recipe_file = root / "fixture.toml"
    recipe_file.write_text(RECIPE)
    synthetic.write_dicom_cohort(root / "cohort", 4, seed=11, size=64)
    subprocess.run([sys.executable, "-m", "data_prep.prepare", "--recipe", recipe_file,
                    root / "cohort", root / "prep", "--workers", "1"],
                   check=True, capture_output=True)
    recipe, contract = load_recipe(recipe_file), read_contract(root / "prep")
    for variant in VARIANTS:
        for fold in range(4):
            write_run_dir(root / "runs" / f"fixture_{variant}_fold{fold}", crop=CROP,
                          contract=contract, recipe=recipe, variant=variant, fold=fold)
    out = root / "results"
    res = run_table1("--recipe", recipe_file, "--data", root / "prep", "--runs", root / "runs",
                     "--out", out)
    return root, out, res


def test_writes_every_output_with_every_method(setup):
    root, out, res = setup
    assert res.returncode == 0, res.stderr
    for name in ("table1.md", "table1.json", "table1_per_sequence.csv", "test_curves.png"):
        assert (out / name).is_file()
    summary = json.loads((out / "table1.json").read_text())["summary"]
    assert sorted(summary) == sorted(METHODS)
    assert "[table1] reusing" in res.stdout and "[table1] training" not in res.stdout


def test_pooled_numbers_match_the_per_sequence_csv(setup):
    _, out, _ = setup
    summary = json.loads((out / "table1.json").read_text())["summary"]
    with open(out / "table1_per_sequence.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    n_test = len(h5py.File(out.parent / "prep" / "sequences.h5")["ed"])
    for method in METHODS:
        mine = [r for r in rows if r["method"] == method]
        assert len(mine) == n_test                      # every sequence tested exactly once
        for phase in ("ed", "es"):
            d = np.array([abs(int(r[f"{phase}_pred_0based"]) - int(r[f"{phase}_true_0based"]))
                          for r in mine])
            assert summary[method]["pooled"][phase]["afd"] == pytest.approx(d.mean())
            assert summary[method]["pooled"][phase]["std"] == pytest.approx(d.std())


def test_stack_rows_share_one_pair_per_patient_stack(setup):
    root, out, _ = setup
    sequences = json.loads((out / "table1.json").read_text())["sequences"]
    h5 = h5py.File(root / "prep" / "sequences.h5")
    stack_of = {sid.decode(): (g.decode(), int(n)) for sid, g, n in
                zip(h5["seq_id"][()], h5["group"][()], h5["n_frames"][()])}
    assert max(list(stack_of.values()).count(k) for k in stack_of.values()) > 1, \
        "the fixture should have stacks of several slices"
    for method in STACKED:
        pairs = {}
        for s in sequences:
            if s["method"] == method:
                pairs.setdefault(stack_of[s["seq_id"]], set()).add((s["ed_pred"], s["es_pred"]))
        assert pairs and all(len(p) == 1 for p in pairs.values())


def test_trivial_reference_uses_the_training_folds_fraction(setup):
    root, out, _ = setup
    data = json.loads((out / "table1.json").read_text())
    h5 = h5py.File(root / "prep" / "sequences.h5")
    ed, es, n = h5["ed"][()], h5["es"][()], h5["n_frames"][()]
    rows = [int(line.split()[1]) for line in
            (root / "prep" / "fold0_train.txt").read_text().splitlines()]
    expected = np.median(((es[rows] - ed[rows]) % n[rows]) / n[rows])
    assert data["meta"]["es_fractions"]["fold0"] == pytest.approx(expected)
    test_rows = [int(line.split()[1]) for line in
                 (root / "prep" / "fold0_test.txt").read_text().splitlines()]
    preds = {(s["seq_id"]): s for s in data["sequences"]
             if s["method"] == "trivial" and s["fold"] == "fold0"}
    for r in test_rows:
        rec = preds[h5["seq_id"][r].decode()]
        assert rec["ed_pred"] == 0
        assert rec["es_pred"] == max(1, min(int(round(expected * n[r])), n[r] - 1))


def test_markdown_has_the_papers_numbers_and_the_notes(setup):
    _, out, _ = setup
    md = (out / "table1.md").read_text()
    for paper in ("0.38 / 0.44", "1.54 / 1.24", "2.27 / 1.65", "1.30 / 1.97", "0.47 / 0.52"):
        assert paper in md
    assert "ImageNet weights: no" in md and "population" in md and "unattended" in md
    assert "72 x 72" in md and f"{CROP} x {CROP}" in md and "Recipe: 'fixture'" in md


def test_refuses_to_overwrite_results(setup):
    root, out, _ = setup
    res = run_table1("--recipe", root / "fixture.toml", "--data", root / "prep",
                     "--runs", root / "runs", "--out", out)
    assert res.returncode == 2
    assert "--force" in res.stderr and "Traceback" not in res.stderr


def test_mismatched_run_is_refused_not_silently_reused(setup):
    root, _, _ = setup
    res = run_table1("--recipe", root / "fixture.toml", "--data", root / "prep", "--iters", 7,
                     "--runs", root / "runs", "--out", root / "other", "--no-baselines")
    assert res.returncode == 2 and "--retrain" in res.stderr and "Traceback" not in res.stderr


def test_package_model_reports_the_cross_validation(setup, tmp_path):
    """tools.package_model --cv: the readme shows TempReg-Net's pooled rows of a real table1.json,
    per sequence and per stack, as tools.table1 wrote them."""
    from cli import run_module
    from tempregnet import runs
    root, out, _ = setup
    run = root / "runs" / "fixture_tempreg_fold0"
    ev = tmp_path / "eval"
    res = run_module("tools.evaluate_afd", "--run", run, "--data", root / "prep", "--list",
                     "fold0_test.txt", "--out", ev)
    assert res.returncode == 0, res.stderr
    folder = tmp_path / "model"
    res = run_module("tools.package_model", "--run", run, "--eval", ev / "afd.json",
                     "--cv", out / "table1.json", "--out", folder)
    assert res.returncode == 0, res.stderr
    readme = (folder / "readme.md").read_text()
    summary = json.loads((out / "table1.json").read_text())["summary"]
    for key in ("tempreg", "tempreg_stack"):
        pooled = summary[key]["pooled"]
        assert (f"| {pooled['n_sequences']} | {pooled['ed']['afd']:.2f} ({pooled['ed']['std']:.2f}) | "
                f"{pooled['es']['afd']:.2f} ({pooled['es']['std']:.2f}) |") in readme
    assert "recipe `fixture`" in readme and "cross-validation" in readme
    settings = json.loads((folder / runs.SETTINGS).read_text())
    assert not [v for v in settings.values() if isinstance(v, str) and v.startswith("/")]
    res = run_module("tools.package_model", "--run", run, "--eval", ev / "afd.json",
                     "--cv", ev / "afd.json", "--out", tmp_path / "other")
    assert res.returncode == 2 and "table1.json" in res.stderr and "Traceback" not in res.stderr


def test_paper_table_shows_the_papers_rows_beside_ours(setup):
    """tools.paper_table on the table1.json tools.table1 wrote: the paper's five methods in its
    order, the paper's numbers, and ours recomputed from the per-sequence CSV (pooled aFD, STD,
    and the SD of the four folds' aFD)."""
    _, out, _ = setup
    res = run_module("tools.paper_table", f"ours={out / 'table1.json'}", f"again={out / 'table1.json'}")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "| method | paper (Kong et al.) | ours | again |"
    rows = lines[2:]
    assert [r.split(" | ")[0] for r in rows] == [
        "| Seg-based: Level set (auto-init)", "| Seg-based: Graph cut (auto-init)",
        "| Reg-based: CNN + Reg", "| TempReg-Net (without TSC)", "| TempReg-Net"]
    assert "**0.38 / 0.44**<br>STD 0.39 / 0.46" in rows[-1]
    with open(out / "table1_per_sequence.csv", newline="") as f:
        mine = [r for r in csv.DictReader(f) if r["method"] == "tempreg"]
    diff = {p: np.array([abs(int(r[f"{p}_pred_0based"]) - int(r[f"{p}_true_0based"])) for r in mine])
            for p in ("ed", "es")}
    folds = sorted({r["fold"] for r in mine})
    fold_sd = {p: np.std([np.mean([abs(int(r[f"{p}_pred_0based"]) - int(r[f"{p}_true_0based"]))
                                   for r in mine if r["fold"] == f]) for f in folds])
               for p in ("ed", "es")}
    expected = (f"**{diff['ed'].mean():.2f} / {diff['es'].mean():.2f}**<br>STD "
                f"{diff['ed'].std():.2f} / {diff['es'].std():.2f}<br>folds ±"
                f"{fold_sd['ed']:.2f} / {fold_sd['es']:.2f}")
    assert rows[-1].split(" | ")[2] == expected
    # a column of several draws (seeds): the mean of their pooled figures and the SD between them
    twice = run_module("tools.paper_table", f"seeds={out / 'table1.json'},{out / 'table1.json'}")
    assert twice.returncode == 0, twice.stderr
    assert twice.stdout.splitlines()[-1].split(" | ")[2].removesuffix(" |") == expected.split("<br>folds")[0] + \
        "<br>2 seeds ±0.00 / 0.00"
    from tools.paper_table import cell
    summary = json.loads((out / "table1.json").read_text())["summary"]["tempreg"]
    other = json.loads(json.dumps(summary))
    other["pooled"]["ed"]["afd"] += 1.0
    other["pooled"]["es"]["afd"] += 0.5
    ed, es = summary["pooled"]["ed"]["afd"], summary["pooled"]["es"]["afd"]
    assert cell([summary, other]).startswith(f"**{ed + 0.5:.2f} / {es + 0.25:.2f}**")
    assert cell([summary, other]).endswith(f"2 seeds ±{np.std([0, 1.0]):.2f} / {np.std([0, 0.5]):.2f}")
    missing = run_module("tools.paper_table", f"x={out / 'nope.json'}")
    assert missing.returncode == 1 and "no such table1.json" in missing.stderr
    assert "Traceback" not in missing.stderr
