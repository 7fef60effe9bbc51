"""tools.train on a synthetic disc cohort: the loss falls, held-out RMSE beats a constant, the run
folder (read back by the one run reader), resume, recipe and contract checks, CLI errors."""
import dataclasses
import json
import shutil

import caffe
import h5py
import numpy as np
import pytest
from caffe.proto import caffe_pb2
from google.protobuf import text_format

from data_prep.errors import InputError
from fixtures_h5 import recipe_contract, write_prepared
from models.config import get_config
from tempregnet import training
from tempregnet.contract import read_contract
from tempregnet.net_input import net_input
from tempregnet.recipes import load_recipe, parse_overrides
from tempregnet.runs import final_model_path, read_model_folder, snapshot_iteration
from tempregnet.training_log import parse_log
from tools import train as train_tool

pytestmark = pytest.mark.slow   # 20-45 s here: trains the small net for 150 iterations

ITERS = 150
N_SEQ, N_TEST = 48, 12

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cfg = get_config("small")
    data = write_prepared(tmp_path_factory.mktemp("cohort"), N_SEQ, cfg.stored_size, seed=5,
                          n_test=N_TEST, contract=recipe_contract("demo"))
    run_dir = tmp_path_factory.mktemp("runs") / "demo_tempreg"
    final = training.train("demo", data, 0, "tempreg", ITERS, out=run_dir, seed=1)
    return data, run_dir, final

def predict(run_dir, model, frames):
    """Deploy net of the run on M x T x S x S stored frames, centre crop: M x T predictions."""
    cfg = get_config("small")
    caffe.set_mode_cpu()
    net = caffe.Net(str(run_dir / "demo_tempreg_deploy.prototxt"), str(model), caffe.TEST)
    t, m = cfg.n_steps, len(frames)
    batch = np.stack([net_input(seq, cfg.crop) for seq in frames], axis=1)   # T x M x 3 x C x C
    cont = np.ones((t, m), np.float32)
    cont[0] = 0
    net.blobs["frames"].reshape(t * m, 3, cfg.crop, cfg.crop)
    net.blobs["cont"].reshape(t, m)
    net.blobs["frames"].data[...] = batch.reshape(t * m, 3, cfg.crop, cfg.crop)
    net.blobs["cont"].data[...] = cont
    return net.forward()["volume_pred"].T.copy()

def test_training_lowers_the_loss(trained):
    _, run_dir, _ = trained
    losses = [v for _, v in parse_log(run_dir / "train.log")["train"]["loss"]]
    assert np.mean(losses[-3:]) < 0.3 * losses[0], losses

def test_beats_a_constant_predictor_on_held_out_sequences(trained):
    data, run_dir, final = trained
    with h5py.File(data / "sequences.h5", "r") as f:
        frames, labels = f["frames"][:], f["label"][:]
    train_rows, test_rows = slice(0, N_SEQ - N_TEST), slice(N_SEQ - N_TEST, N_SEQ)
    pred = predict(run_dir, final, frames[test_rows])
    rmse_net = np.sqrt(np.mean((pred - labels[test_rows]) ** 2))
    constant = labels[train_rows].mean()           # the best constant the training set suggests
    rmse_const = np.sqrt(np.mean((constant - labels[test_rows]) ** 2))
    assert rmse_net < 0.6 * rmse_const, (rmse_net, rmse_const)

def test_run_directory_is_complete(trained, tmp_path):
    data, run_dir, final = trained
    assert (run_dir / "final_model.txt").read_text().strip() == f"snapshots/{final.name}"
    assert final_model_path(run_dir) == final
    moved = tmp_path / "moved"                      # a run folder still evaluates after a move
    shutil.copytree(run_dir, moved)
    assert final_model_path(moved) == moved / "snapshots" / final.name
    assert final.is_file() and final.name == f"demo_tempreg_iter_{ITERS}.caffemodel"
    settings = json.loads((run_dir / "settings.json").read_text())
    assert settings["variant"] == "tempreg" and settings["iters"] == ITERS and settings["beta"] == 1.0
    assert settings["imagenet_init"] is False and settings["n_test"] == N_TEST
    assert settings["recipe"] == load_recipe("demo").to_dict() and settings["seed"] == 1
    # the systole prior's fraction: the median ((ES - ED) mod T) / T of the training list's rows
    import h5py
    rows = [int(line.split()[1]) for line in (data / "fold0_train.txt").read_text().split("\n") if line]
    with h5py.File(data / "sequences.h5") as f:
        ed, es, n = (f[k][()][rows].astype(float) for k in ("ed", "es", "n_frames"))
    assert settings["systole_fraction"] == pytest.approx(np.median(((es - ed) % n) / n))
    assert 0 < settings["systole_fraction"] < 1
    solver = text_format.Parse((run_dir / "demo_tempreg_solver.prototxt").read_text(), caffe_pb2.SolverParameter())
    expected_mode = caffe_pb2.SolverParameter.GPU if settings["solver_mode"] == "GPU" else caffe_pb2.SolverParameter.CPU
    assert solver.solver_mode == expected_mode
    assert solver.train_net == str(run_dir / "demo_tempreg_train.prototxt")
    train_net = (run_dir / "demo_tempreg_train.prototxt").read_text()
    assert str(data / "fold0_train.txt").replace("/", "\\/") in train_net or str(data / "fold0_train.txt") in train_net
    assert (run_dir / "training_curves.png").stat().st_size > 1000

def test_the_run_reader_reads_the_folder_tools_train_wrote(trained, tmp_path):
    """tempregnet.runs / inference.load_model on a real run folder: the contract is the data's,
    the net the run's deploy net with its final weights, and its predictions the direct ones."""
    from data_prep.hdf5 import load_rows
    from tempregnet.inference import load_model, predict_rows
    data, run_dir, final = trained
    model = read_model_folder(run_dir)
    assert model.contract == read_contract(data) == recipe_contract("demo")
    assert model.deploy == run_dir / "demo_tempreg_deploy.prototxt" and model.weights == final
    assert model.description()["recipe"] == "demo" and model.description()["decoder"] == "fit"
    loaded = load_model(run_dir)
    assert loaded.crop == get_config("small").crop and loaded.contract.label == "cycle"
    rows = load_rows(data / "fold0_test.txt")
    records = predict_rows(loaded, rows, batch=3)
    np.testing.assert_allclose([r["curve"] for r in records], predict(run_dir, final, rows["frames"]),
                               rtol=1e-5, atol=1e-6)
    # a shipped model folder: deploy.prototxt + one caffemodel + contract.json, nothing else
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    shutil.copy(model.deploy, shipped / "deploy.prototxt")
    shutil.copy(final, shipped / "model.caffemodel")
    shutil.copy(run_dir / "contract.json", shipped / "contract.json")
    again = predict_rows(load_model(shipped), rows, batch=3)
    assert [r["curve"] for r in again] == [r["curve"] for r in records]
    (shipped / "contract.json").unlink()
    with pytest.raises(InputError, match="no contract.json"):
        read_model_folder(shipped)

def test_resume_continues_from_the_newest_solverstate(trained):
    _, run_dir, _ = trained
    final = training.train(None, None, None, out=run_dir, resume=True, iters=ITERS + 10)
    assert final.name == f"demo_tempreg_iter_{ITERS + 10}.caffemodel"
    assert final_model_path(run_dir) == final
    log = (run_dir / "train.log").read_text()
    assert f"Resuming from {run_dir / 'snapshots' / f'demo_tempreg_iter_{ITERS}.solverstate'}" in log

def test_reuse_keeps_a_finished_run_of_the_same_settings_only(trained, capsys):
    data, run_dir, _ = trained
    iters = json.loads((run_dir / "settings.json").read_text())["iters"]
    before = (run_dir / "final_model.txt").read_text()
    args = ["--recipe", "demo", "--data", str(data), "--fold", "0", "--out", str(run_dir), "--reuse"]
    assert train_tool.main(args + ["--iters", str(iters)]) == 0
    assert "reusing it" in capsys.readouterr().out
    assert (run_dir / "final_model.txt").read_text() == before
    assert train_tool.main(args + ["--iters", str(iters + 1)]) == 1
    assert "finished run with other iters" in capsys.readouterr().err

def test_a_run_stays_the_same_run_when_only_the_decoding_changes(trained):
    """The recipe's decoding (tempregnet.decoding) and description are not training."""
    _, run_dir, _ = trained
    s = json.loads((run_dir / "settings.json").read_text())
    demo, fold, iters = load_recipe("demo"), s["fold"], s["iters"]
    other = dataclasses.replace(demo, decoder="extrema", views="tta", stack_weights="fit",
                                es_prior=2.0, description="another text")
    assert training.settings_differ(run_dir, demo, "tempreg", fold, iters, False) == []
    assert training.settings_differ(run_dir, other, "tempreg", fold, iters, False) == []
    assert training.settings_differ(run_dir, dataclasses.replace(demo, seed=7), "tempreg", fold,
                                    iters, False) == ["recipe"]
    assert training.settings_differ(run_dir, other, "cnn_reg", fold, iters + 1, False) == \
        ["iters", "variant"]


def test_a_snapshot_cut_short_by_a_kill_is_not_resumed_from(trained, tmp_path):
    """A run killed while Caffe wrote its newest .solverstate resumes from the one before."""
    from tempregnet.runs import newest_solverstate
    _, run_dir, _ = trained
    run = tmp_path / "killed"
    shutil.copytree(run_dir, run)
    whole = newest_solverstate(run)
    n = int(whole.stem.rsplit("_", 1)[1])
    later = whole.with_name(whole.name.replace(f"_iter_{n}.", f"_iter_{n + 5}."))
    shutil.copy(whole.with_suffix(".caffemodel"), later.with_suffix(".caffemodel"))
    later.write_bytes(whole.read_bytes()[: len(whole.read_bytes()) // 2])
    assert newest_solverstate(run) == whole
    later.write_bytes(whole.read_bytes())                     # whole: it is the newest
    assert newest_solverstate(run) == later


def test_a_run_older_than_its_systole_fraction_gets_it_from_its_training_list(trained, tmp_path):
    _, run_dir, _ = trained
    old = tmp_path / "old_run"
    shutil.copytree(run_dir, old)
    s = json.loads((old / "settings.json").read_text())
    recorded = s.pop("systole_fraction")
    (old / "settings.json").write_text(json.dumps(s))
    assert 0 < recorded < 1
    assert read_model_folder(old).description()["systole_fraction"] == recorded
    (old / "settings.json").write_text(json.dumps({**s, "train_list": str(tmp_path / "gone.txt")}))
    assert "systole_fraction" not in read_model_folder(old).description()


def test_existing_run_dir_is_refused_without_force(trained, capsys):
    data, run_dir, _ = trained
    code = train_tool.main(["--recipe", "demo", "--data", str(data), "--fold", "0", "--iters", "5",
                            "--out", str(run_dir)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "run folder exists" in err and len(err.splitlines()) == 1

@pytest.mark.parametrize("args,message", [
    (["--fold", "0", "--iters", "5", "--data", "/nonexistent/prepared"], "prepared data folder not found"),
    (["--fold", "0", "--iters", "5", "--recipe", "paper_zf", "--data", "."], "needs --weights"),
    (["--fold", "9", "--iters", "5"], "split list for fold 9 not found"),
    (["--fold", "0", "--recipe", "no_such_recipe"], "no such recipe"),
    (["--fold", "0", "--recipe", "acdc"], "label 'cycle' (the recipe acdc's 'paper')"),
])
def test_bad_arguments_exit_1_with_one_line(trained, tmp_path, capsys, args, message):
    data = trained[0]
    if "--data" not in args:
        args = args + ["--data", str(data)]
    if "--recipe" not in args:
        args = args + ["--recipe", "demo"]
    code = train_tool.main(args + ["--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and message in err and len(err.splitlines()) == 1, err

def test_overrides_are_typed_and_checked():
    assert parse_overrides(["lstm_cycles=1", "train_roll=false", "base_lr=0.01", "solver_type=SGD"]) == dict(
        lstm_cycles=1, train_roll=False, base_lr=0.01, solver_type="SGD")
    for bad, message in (("no_such_field=1", "may set"), ("crop=32", "may set"),
                         ("lstm_cycles", "KEY=VALUE"), ("lstm_cycles=two", "not a valid int"),
                         ("train_roll=maybe", "not a valid bool")):
        with pytest.raises(InputError, match=message):
            parse_overrides([bad])

RECIPE = """description = "test"
config = "small"
variants = ["tempreg"]
iterations = 5
decoder = "fit"
imagenet_weights = false
seed = 0
folds = "cv"
[data]
source = "dicom"
seed = 0
label = "{label}"
roi = 1.0
[overrides]
lstm_cycles = 1
train_roll = {roll}
"""

def test_recipe_overrides_reach_the_run_and_roll_needs_cycle_labels(tmp_path):
    cfg = get_config("small")
    data = write_prepared(tmp_path / "cohort", 8, cfg.stored_size, seed=2, n_test=4)
    path = tmp_path / "one_pass.toml"
    path.write_text(RECIPE.format(label="cycle", roll="false"))
    recipe = load_recipe(path)
    assert recipe.name == "one_pass" and recipe.overrides == {"lstm_cycles": 1, "train_roll": False}
    s = training.resolve_settings(recipe, data, 0, "tempreg", 5, None, 0)
    assert s["recipe"]["overrides"] == {"lstm_cycles": 1, "train_roll": False}
    (tmp_path / "run").mkdir()
    training.write_run_files(tmp_path / "run", recipe, s, gpu=False)
    net = text_format.Merge((tmp_path / "run" / "one_pass_tempreg_train.prototxt").read_text(),
                            caffe_pb2.NetParameter())
    types = [layer.type for layer in net.layer]
    assert "Concat" not in types and types.count("LSTM") == 1          # one pass, no second reading
    data_layer = next(layer for layer in net.layer if layer.name == "data")
    assert "roll" not in json.loads(data_layer.python_param.param_str)
    path.write_text(RECIPE.format(label="paper", roll="true"))
    with pytest.raises(InputError, match="train_roll needs 'cycle' labels"):
        load_recipe(path)
    path.write_text(RECIPE.format(label="cycle", roll="true") + "no_such_key = 1\n")
    with pytest.raises(InputError, match="no_such_key"):
        load_recipe(path)

def test_frames_must_be_what_the_recipe_prepares(tmp_path, capsys):
    data = write_prepared(tmp_path / "cohort", 8, 96, seed=2, n_test=4,
                          contract=recipe_contract("cross_sunnybrook"))
    s = training.resolve_settings(load_recipe("cross_sunnybrook"), data, 0, "tempreg", 5, None, 0)
    assert s["n_test"] == 4
    with pytest.raises(InputError, match=r"stored_size 96 \(the recipe demo's 72\); roi 1.0 "
                                         r"\(the recipe demo's 0.5\)"):
        training.resolve_settings(load_recipe("demo"), data, 0, "tempreg", 5, None, 0)
    from tools import learning_curve                                    # refused before training
    assert learning_curve.main(["--recipe", "demo", "--data", str(data), "--iters", "5", "--every", "5",
                                "--out", str(tmp_path / "curve")]) == 1
    assert "stored_size 96 (the recipe demo's 72)" in capsys.readouterr().err
    assert not (tmp_path / "curve" / "train.prototxt").exists()

def test_learning_curve_reports_held_out_afd(trained, tmp_path):
    from tools import learning_curve
    data = trained[0]
    out = tmp_path / "curve"
    assert learning_curve.main(["--recipe", "demo", "--data", str(data), "--iters", "20", "--every", "10",
                                "--set", "lstm_cycles=1", "--out", str(out)]) == 0
    lines = json.loads((out / "learning_curve.json").read_text())["lines"]
    assert [line["iteration"] for line in lines] == [10, 20]
    for line in lines:
        assert np.isfinite(line["train_l2"]) and line["test_mse"] >= 0
        for phase in ("ed", "es"):                  # the cyclic difference never exceeds Eq. 5's
            assert 0 <= line[f"cyclic_{phase}"] <= line[f"afd_{phase}"] < 35
    net = text_format.Merge((out / "train.prototxt").read_text(), caffe_pb2.NetParameter())
    assert [layer.type for layer in net.layer].count("Concat") == 0    # the override took effect
    # the last evaluation's records: they give its aFD, and the saved weights give their curves
    records = json.loads((out / "learning_curve.json").read_text())["final_records"]
    assert np.mean([abs(r["es_pred"] - r["es_true"]) for r in records]) == pytest.approx(lines[-1]["afd_es"])
    from data_prep.hdf5 import load_rows
    from tempregnet.inference import load_net, predict_rows
    loaded = load_net(out / "deploy.prototxt", out / "final.caffemodel", read_contract(data))
    rows = load_rows(data / "fold0_test.txt")
    again = predict_rows(loaded, rows)
    np.testing.assert_allclose([r["curve"] for r in again], [r["curve"] for r in records], rtol=1e-4, atol=1e-5)

def test_learning_curve_bad_arguments(trained, capsys):
    from tools import learning_curve
    assert learning_curve.main(["--recipe", "demo", "--data", str(trained[0]), "--iters", "5",
                                "--every", "10"]) == 1
    assert capsys.readouterr().err.strip() == "learning_curve: need 1 <= --every <= --iters"
    assert learning_curve.main(["--recipe", "demo", "--data", str(trained[0]), "--fold", "all",
                                "--iters", "5", "--every", "5"]) == 1
    assert "no held-out sequences" in capsys.readouterr().err


def test_pruning_counts_the_snapshot_being_written_as_kept(tmp_path):
    """While Caffe trains, the folder holds the newest complete pair and the one being written
    (KEEP_SNAPSHOTS = 2), never a third: the snapshot line comes before its solverstate exists."""
    def pair(it):
        for suffix in (".caffemodel", ".solverstate"):
            (tmp_path / f"r_iter_{it}{suffix}").write_bytes(b"x")

    def on_disk():
        return sorted(snapshot_iteration(p) for p in tmp_path.glob("*.solverstate"))

    pair(100), pair(200)
    (tmp_path / "r_iter_300.caffemodel").write_bytes(b"x")      # Caffe writes the net first
    training.prune_snapshots(tmp_path, writing=300)
    assert on_disk() == [200] and (tmp_path / "r_iter_300.caffemodel").is_file()
    assert not (tmp_path / "r_iter_100.caffemodel").exists()
    pair(300)
    training.prune_snapshots(tmp_path, writing=300)              # a second look changes nothing
    assert on_disk() == [200, 300]
    training.prune_snapshots(tmp_path)                           # complete pairs only: keep 2
    assert on_disk() == [200, 300]
    training.prune_snapshots(tmp_path, keep=1)                   # a finished run: the final pair
    assert on_disk() == [300] and len(list(tmp_path.iterdir())) == 2
