"""tools.decoding_study on what the tools write: validation curves of tools.learning_curve
--validation and test runs of tools.train, for two folds of a small synthetic cohort. Its figures
must be tools.evaluate_afd's for the same nets (per sequence, per stack, with test-time views),
and its choice the validation minimum."""
import json

import numpy as np
import pytest

from cli import run_module

pytest.importorskip("caffe")
pytestmark = pytest.mark.slow

FOLDS = (0,)
ITERS = "10"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from data_prep import prepare, synthetic
    root = tmp_path_factory.mktemp("decoding_study")
    assert synthetic.main([str(root / "cohort"), "--patients", "8", "--seed", "0", "--format", "dicom"]) == 0
    assert prepare.main(["--recipe", "demo", str(root / "cohort"), str(root / "prep"), "--workers", "1"]) == 0
    val, test = [], []
    for fold in FOLDS:
        val.append(root / f"val{fold}")
        res = run_module("tools.learning_curve", "--recipe", "demo", "--data", root / "prep", "--fold",
                         str(fold), "--validation", "--iters", ITERS, "--every", ITERS, "--out", val[-1])
        assert res.returncode == 0, res.stderr
        test.append(root / f"run{fold}")
        res = run_module("tools.train", "--recipe", "demo", "--data", root / "prep", "--fold", str(fold),
                         "--variant", "tempreg", "--iters", ITERS, "--out", test[-1])
        assert res.returncode == 0, res.stderr
    out = root / "study"
    res = run_module("tools.decoding_study", "--data", root / "prep", "--validation", *val,
                     "--test", *test, "--decoders", "fit", "rwave_ed", "--es-priors", "0", "4",
                     "--out", out)
    assert res.returncode == 0, res.stderr
    return root, test, out, json.loads((out / "decoding_study.json").read_text())


def evaluate(root, test, *flags):
    """tools.evaluate_afd's pooled ED / ES aFD for the test runs."""
    args = ["--data", root / "prep"]
    for fold, run in zip(FOLDS, test):
        args += ["--run", run, "--list", f"fold{fold}_test.txt"]
    out = root / ("eval" + "".join(map(str, flags)).replace("-", "_"))
    res = run_module("tools.evaluate_afd", *args, *flags, "--out", out)
    assert res.returncode == 0, res.stderr
    pooled = json.loads((out / "afd.json").read_text())["summary"]["pooled"]
    return pooled["ed"]["afd"], pooled["es"]["afd"]


def scores_of(result, split, **cand):
    cand = {"models": "first", "stack_weights": "equal", "es_prior": 0.0, **cand}
    return next(s for c, s in result[split] if c == cand)


def test_figures_are_evaluate_afds(study):
    """The same figures as tools.evaluate_afd's for the same nets and decoding: one view per
    sequence, test-time views per stack, and the systole prior (whose fraction evaluate_afd reads
    from the run's settings.json, the study from the fold's training list)."""
    root, test, _, result = study
    for cand, flags, level in ((dict(views="one"), (), "sequence"),
                               (dict(views="tta"), ("--tta", "--stack"), "stack"),
                               (dict(views="one", es_prior=4.0), ("--es-prior", "4"), "sequence")):
        s = scores_of(result, "test", decoder="fit", **cand)
        ed, es = evaluate(root, test, "--decoder", "fit", *flags)
        assert (s[level]["ed"]["afd"], s[level]["es"]["afd"]) == pytest.approx((ed, es))


def test_choice_is_the_validation_minimum_and_curves_are_reused(study):
    root, test, out, result = study
    best = min(s["stack"]["es"]["afd"] for _, s in result["validation"])
    chosen = scores_of(result, "validation", **result["chosen"])
    assert chosen["stack"]["es"]["afd"] == best
    # the markdown ends with the choice as recipe lines that TOML reads back
    import tomllib
    toml = (out / "decoding_study.md").read_text().split("```toml\n")[1].split("```")[0]
    assert tomllib.loads(toml) == {k: result["chosen"][k] for k in
                                   ("decoder", "views", "stack_weights", "es_prior")}
    assert {c["decoder"] for c, _ in result["test"]} == {"fit", "rwave_ed"}
    assert all(c["models"] == "first" for c, _ in result["test"])     # one model per fold given
    # rwave_ed reads ED at the R wave, frame 0 of every prepared row: its ED aFD is mean |ED|
    from data_prep.hdf5 import load_rows
    eds = np.concatenate([load_rows(root / "prep" / f"fold{f}_test.txt")["ed"] for f in FOLDS])
    assert len(eds) == result["n_test"]
    for cand, s in result["test"]:
        if cand["decoder"] == "rwave_ed":
            assert s["sequence"]["ed"]["afd"] == pytest.approx(np.abs(eds).mean())
    # a second study reads the kept curves: no net is needed (the runs are moved away)
    for run in test:
        run.rename(run.with_name(run.name + "-moved"))
    again = run_module("tools.decoding_study", "--data", root / "prep", "--validation",
                       *[root / f"val{f}" for f in FOLDS], "--test", *test, "--decoders", "fit",
                       "--es-priors", "0", "4", "--out", out)
    assert again.returncode == 1 and "--force" in again.stderr      # the tables are not replaced
    assert json.loads((out / "decoding_study.json").read_text()) == result
    again = run_module("tools.decoding_study", "--data", root / "prep", "--validation",
                       *[root / f"val{f}" for f in FOLDS], "--test", *test, "--decoders", "fit",
                       "--es-priors", "0", "4", "--out", out, "--force")
    assert again.returncode == 0, again.stderr
    second = json.loads((out / "decoding_study.json").read_text())
    assert second["test"] == [cs for cs in result["test"] if cs[0]["decoder"] == "fit"]
    # other nets with the same --out: refused, not mixed
    other = run_module("tools.decoding_study", "--data", root / "prep", "--validation",
                       *[root / f"val{f}" for f in FOLDS], "--test", root / "another_run", "--out", out,
                       "--force")
    assert other.returncode == 1 and "curves of other nets" in other.stderr
    assert "Traceback" not in other.stderr
