"""tools/evaluate_afd.py end to end: a tiny prepared set, a trivial deploy net, a predictions file."""
import csv
import json

import pytest

from cli import run_module
from trivial_net import write_prepared, write_run_dir, write_trivial_net

pytest.importorskip("caffe")

# (T, ED shown in the frames, ES shown, ED stored as truth, ES stored): the net follows the
# frames, so |pred - true| is the shown/stored offset, known by hand.
CASES = [
    (20, 0, 7, 0, 7),       # exact
    (33, 30, 10, 30, 10),   # ED after ES, exact
    (15, 4, 9, 5, 9),       # ED off by 1
    (28, 2, 12, 2, 15),     # ES off by 3
    (12, 11, 5, 11, 5),     # exact
    (35, 0, 14, 2, 14),     # ED off by 2
]
FOLDS = [[0, 1, 2], [3, 4, 5]]


def run_cli(*args):
    return run_module("tools.evaluate_afd", *args)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return write_prepared(tmp_path_factory.mktemp("prepared"), CASES, FOLDS)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_model_and_deploy_over_two_folds(prepared, tmp_path):
    deploy, weights = write_trivial_net(tmp_path / "net")
    out = tmp_path / "eval"
    res = run_cli("--model", weights, "--deploy", deploy, "--data", prepared,
                  "--list", "fold0_test.txt", "--list", "fold1_test.txt", "--out", out,
                  "--batch", 2)
    assert res.returncode == 0, res.stderr
    summary = json.loads((out / "afd.json").read_text())["summary"]
    assert summary["folds"]["fold0"]["ed"]["afd"] == pytest.approx(1 / 3)
    assert summary["folds"]["fold0"]["es"]["afd"] == pytest.approx(0)
    assert summary["folds"]["fold1"]["ed"]["afd"] == pytest.approx(2 / 3)
    assert summary["folds"]["fold1"]["es"]["afd"] == pytest.approx(1.0)
    assert summary["pooled"]["ed"]["afd"] == pytest.approx(3 / 6)
    assert summary["pooled"]["es"]["afd"] == pytest.approx(3 / 6)
    # population STD of ES differences 0,0,0,3,0,0: mean .5, var (6 * .25 + 6.25) / 6
    assert summary["pooled"]["es"]["std"] == pytest.approx(((5 * 0.25 + 6.25) / 6) ** 0.5)
    rows = read_csv(out / "afd_per_sequence.csv")
    assert [r["seq_id"] for r in rows] == [f"s{i:03d}" for i in range(6)]
    for row, case in zip(rows, CASES):
        assert int(row["n_frames"]) == case[0]
        assert int(row["ed_true_0based"]) == case[3] and int(row["es_true_0based"]) == case[4]
        assert int(row["ed_pred_0based"]) == case[1] and int(row["es_pred_0based"]) == case[2]
    md = (out / "afd.md").read_text()
    assert "| pooled | 6 | 0.50 |" in md


def test_stack_decoding_flag(prepared, tmp_path):
    """--stack groups slices by patient and frame count; every case here has its own frame
    count, so each is a stack of one and the numbers are the per-sequence ones."""
    deploy, weights = write_trivial_net(tmp_path / "net")
    out = tmp_path / "eval_stack"
    res = run_cli("--model", weights, "--deploy", deploy, "--data", prepared,
                  "--list", "fold0_test.txt", "--list", "fold1_test.txt", "--out", out, "--stack")
    assert res.returncode == 0, res.stderr
    result = json.loads((out / "afd.json").read_text())
    assert result["meta"]["decoding"] == "per cine stack (not the paper's)"
    assert result["summary"]["pooled"]["ed"]["afd"] == pytest.approx(3 / 6)
    assert result["summary"]["pooled"]["es"]["afd"] == pytest.approx(3 / 6)


def test_run_dir_and_refusal_to_overwrite(prepared, tmp_path):
    run = write_run_dir(tmp_path / "run")
    out = tmp_path / "eval"
    args = ["--run", run, "--list", prepared / "fold0_test.txt", "--out", out]
    assert run_cli(*args).returncode == 0
    before = (out / "afd.json").read_text()
    again = run_cli(*args)
    assert again.returncode != 0
    assert "exists" in again.stderr and "--force" in again.stderr
    assert "Traceback" not in again.stderr and len(again.stderr.strip().splitlines()) == 1
    assert (out / "afd.json").read_text() == before
    assert run_cli(*args, "--force").returncode == 0
    # a systole prior needs the fraction tools.train records; a run without it is one line
    prior = run_cli(*args, "--force", "--es-prior", "4")
    assert prior.returncode == 2 and "systole fraction" in prior.stderr
    assert "Traceback" not in prior.stderr and len(prior.stderr.strip().splitlines()) == 1


def test_the_runs_recipe_decoding_is_the_default_and_flags_override_it(prepared, tmp_path):
    """A run records its recipe's decoding (tempregnet.decoding): evaluate_afd uses it unless a
    flag gives a part; the records equal those of the same decoding given by flags."""
    import dataclasses
    from tempregnet.recipes import load_recipe
    demo = load_recipe("demo")
    plain = write_run_dir(tmp_path / "plain")
    recorded = write_run_dir(tmp_path / "recorded",
                             recipe=dataclasses.replace(demo, decoder="extrema", es_prior=2.0))
    common = ["--list", prepared / "fold0_test.txt", "--list", prepared / "fold1_test.txt"]

    def evaluate(run, name, *flags):
        res = run_cli("--run", run, *common, *flags, "--out", tmp_path / name)
        return res, (tmp_path / name)

    # the recorded prior needs the systole fraction this run does not record: refused, so used
    res, _ = evaluate(recorded, "a")
    assert res.returncode == 2 and "systole fraction" in res.stderr
    res, by_recipe = evaluate(recorded, "b", "--es-prior", "0")
    assert res.returncode == 0, res.stderr
    res, by_flags = evaluate(plain, "c", "--decoder", "extrema")
    assert res.returncode == 0, res.stderr
    meta = json.loads((by_recipe / "afd.json").read_text())["meta"]
    assert (meta["decoder"], meta["views"], meta["es_prior"]) == ("extrema", "one", 0.0)
    preds = [[(r["seq_id"], r["ed_pred_0based"], r["es_pred_0based"])
              for r in read_csv(folder / "afd_per_sequence.csv")] for folder in (by_recipe, by_flags)]
    assert preds[0] == preds[1] and len(preds[0]) == len(CASES)
    res, fit = evaluate(recorded, "d", "--es-prior", "0", "--decoder", "fit")
    assert json.loads((fit / "afd.json").read_text())["meta"]["decoder"] == "fit"


def test_predictions_file_by_hand(tmp_path):
    preds = tmp_path / "preds.csv"
    preds.write_text("seq_id,fold,n_frames,ed_true,es_true,ed_pred,es_pred\n"
                     "a,f0,20,0,8,1,8\n"
                     "b,f0,20,0,8,0,10\n"
                     "c,f1,25,3,12,3,12\n"
                     "d,f1,25,0,12,24,13\n")
    out = tmp_path / "eval"
    res = run_cli("--predictions", preds, "--out", out)
    assert res.returncode == 0, res.stderr
    s = json.loads((out / "afd.json").read_text())["summary"]
    assert s["pooled"]["ed"]["afd"] == pytest.approx((1 + 0 + 0 + 24) / 4)
    assert s["pooled"]["ed"]["cyclic_afd_not_paper"] == pytest.approx((1 + 0 + 0 + 1) / 4)
    assert s["pooled"]["es"]["afd"] == pytest.approx((0 + 2 + 0 + 1) / 4)
    assert s["folds"]["f1"]["es"]["afd"] == pytest.approx(0.5)


def test_json_predictions_with_one_based_columns(tmp_path):
    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps({"sequences": [
        {"seq_id": "a", "n_frames": 20, "ed_true_1based": 1, "es_true_1based": 8,
         "ed_pred_1based": 2, "es_pred_1based": 8}]}))
    out = tmp_path / "eval"
    assert run_cli("--predictions", preds, "--out", out).returncode == 0
    row = read_csv(out / "afd_per_sequence.csv")[0]
    assert (row["ed_true_0based"], row["ed_pred_0based"], row["es_true_0based"]) == ("0", "1", "7")


@pytest.mark.parametrize("content, problem", [
    ("seq_id,n_frames,ed_true,es_true,ed_pred\na,20,0,8,1\n", "es_pred"),
    ("seq_id,n_frames,ed_true,es_true,ed_pred,es_pred\na,20,0,8,1,20\n", "outside"),
    ("seq_id,n_frames,ed_true,es_true,ed_pred,es_pred\na,20,0,8,x,3\n", "not a frame"),
    ("seq_id,n_frames,ed_true,es_true,ed_pred,es_pred\n", "no predictions"),
])
def test_bad_predictions_give_one_line(tmp_path, content, problem):
    preds = tmp_path / "preds.csv"
    preds.write_text(content)
    res = run_cli("--predictions", preds, "--out", tmp_path / "eval")
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and problem in lines[0] and "preds.csv" in lines[0]
    assert not (tmp_path / "eval" / "afd.json").exists()


def test_missing_list_is_one_line(tmp_path):
    run = write_run_dir(tmp_path / "run")
    res = run_cli("--run", run, "--list", tmp_path / "nope_test.txt", "--out", tmp_path / "o")
    assert res.returncode != 0
    assert "nope_test.txt" in res.stderr and "Traceback" not in res.stderr


def test_confidence_tables_from_nets_and_from_their_predictions(prepared, tmp_path):
    """A net's per-sequence CSV carries each detection's confidence;
    confidence.md / .json follow, and the same CSV given back as --predictions gives the same
    table."""
    from tempregnet import calibration
    run = write_run_dir(tmp_path / "run", crop=16)
    out = tmp_path / "eval"
    res = run_cli("--run", run, "--data", prepared, "--list", "fold0_test.txt", "--list",
                  "fold1_test.txt", "--out", out)
    assert res.returncode == 0, res.stderr
    rows = read_csv(out / "afd_per_sequence.csv")
    assert all(0 <= float(r["confidence"]) <= 1 for r in rows)
    cal = json.loads((out / "confidence.json").read_text())
    records = [{"n_frames": int(r["n_frames"]), "ed_true": int(r["ed_true_0based"]),
                "es_true": int(r["es_true_0based"]), "ed_pred": int(r["ed_pred_0based"]),
                "es_pred": int(r["es_pred_0based"]), "confidence": float(r["confidence"])}
               for r in rows]
    want = calibration.calibration(records)
    assert cal["shares"]["error"]["n_errors"] == want["shares"]["error"]["n_errors"] == 2   # CASES
    assert [b["n_errors"] for b in cal["deciles"]] == [b["n_errors"] for b in want["deciles"]]
    assert (out / "confidence.png").stat().st_size > 0
    again = tmp_path / "again"
    assert run_cli("--predictions", out / "afd_per_sequence.csv", "--out", again).returncode == 0
    assert (again / "confidence.md").read_text().split("\n\n")[1] == \
        (out / "confidence.md").read_text().split("\n\n")[1]
    # a predictions file without confidences gives no confidence table
    plain = tmp_path / "plain.csv"
    with open(plain, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["seq_id", "n_frames", "ed_true", "es_true", "ed_pred",
                                          "es_pred"])
        w.writeheader()
        w.writerows({k: r[k] for k in ("n_frames", "ed_true", "es_true", "ed_pred", "es_pred")}
                    | {"seq_id": i} for i, r in enumerate(records))
    assert run_cli("--predictions", plain, "--out", tmp_path / "plain").returncode == 0
    assert not (tmp_path / "plain" / "confidence.md").exists()
