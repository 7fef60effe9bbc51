"""tools.train on a synthetic disc cohort: the loss falls, held-out RMSE beats a constant, run dir, resume, CLI errors."""
import json
import shutil

import caffe
import h5py
import numpy as np
import pytest
from caffe.proto import caffe_pb2
from google.protobuf import text_format

from data_prep.errors import InputError
from tempregnet.net_input import net_input
from fixtures_h5 import write_prepared
from models.config import get_config
from tools import train as train_tool
from tempregnet.training_log import parse_log
from tempregnet.runs import final_model_path

pytestmark = pytest.mark.slow   # 20-45 s here: trains the small net for 150 iterations

ITERS = 150
N_SEQ, N_TEST = 48, 12

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cfg = get_config("small")
    data = write_prepared(tmp_path_factory.mktemp("cohort"), N_SEQ, cfg.stored_size, seed=5, n_test=N_TEST)
    run_dir = tmp_path_factory.mktemp("runs") / "small_tempreg"
    final = train_tool.train(data, 0, "tempreg", "small", ITERS, out=run_dir, seed=1)
    return data, run_dir, final

def predict(run_dir, model, frames):
    """Deploy net of the run on M x T x S x S stored frames, centre crop: M x T predictions."""
    cfg = get_config("small")
    caffe.set_mode_cpu()
    net = caffe.Net(str(run_dir / "small_tempreg_deploy.prototxt"), str(model), caffe.TEST)
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
    assert final.is_file() and final.name == f"small_tempreg_iter_{ITERS}.caffemodel"
    settings = json.loads((run_dir / "settings.json").read_text())
    assert settings["variant"] == "tempreg" and settings["iters"] == ITERS and settings["beta"] == 1.0
    assert settings["imagenet_init"] is False and settings["n_test"] == N_TEST
    solver = text_format.Parse((run_dir / "small_tempreg_solver.prototxt").read_text(), caffe_pb2.SolverParameter())
    expected_mode = caffe_pb2.SolverParameter.GPU if settings["solver_mode"] == "GPU" else caffe_pb2.SolverParameter.CPU
    assert solver.solver_mode == expected_mode
    assert solver.train_net == str(run_dir / "small_tempreg_train.prototxt")
    train_net = (run_dir / "small_tempreg_train.prototxt").read_text()
    assert str(data / "fold0_train.txt").replace("/", "\\/") in train_net or str(data / "fold0_train.txt") in train_net
    assert (run_dir / "training_curves.png").stat().st_size > 1000

def test_resume_continues_from_the_newest_solverstate(trained):
    _, run_dir, _ = trained
    final = train_tool.train(None, 0, out=run_dir, resume=True, iters=ITERS + 10)
    assert final.name == f"small_tempreg_iter_{ITERS + 10}.caffemodel"
    assert final_model_path(run_dir) == final
    log = (run_dir / "train.log").read_text()
    assert f"Resuming from {run_dir / 'snapshots' / f'small_tempreg_iter_{ITERS}.solverstate'}" in log

def test_existing_run_dir_is_refused_without_force(trained, capsys):
    data, run_dir, _ = trained
    code = train_tool.main(["--data", str(data), "--fold", "0", "--iters", "5", "--out", str(run_dir)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "run directory exists" in err and len(err.splitlines()) == 1

@pytest.mark.parametrize("args,message", [
    (["--fold", "0", "--iters", "5", "--data", "/nonexistent/prepared"], "prepared data folder not found"),
    (["--fold", "0", "--iters", "5", "--config", "zf", "--data", "."], "needs --weights"),
    (["--fold", "9", "--iters", "5"], "split list for fold 9 not found"),
])
def test_bad_arguments_exit_1_with_one_line(trained, tmp_path, capsys, args, message):
    data = trained[0]
    if "--data" not in args:
        args = args + ["--data", str(data)]
    code = train_tool.main(args + ["--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and message in err and len(err.splitlines()) == 1, err

def test_net_overrides_are_typed_and_checked():
    parse = train_tool.parse_net_overrides
    assert parse(["lstm_cycles=1", "train_roll=false", "base_lr=0.01", "solver_type=SGD"]) == dict(
        lstm_cycles=1, train_roll=False, base_lr=0.01, solver_type="SGD")
    for bad, message in (("no_such_field=1", "KEY one of"), ("crop=32", "KEY one of"),
                         ("lstm_cycles", "KEY one of"), ("lstm_cycles=two", "not a valid int"),
                         ("train_roll=maybe", "not a valid bool")):
        with pytest.raises(ValueError, match=message):
            parse([bad])

def test_overrides_reach_the_run_and_roll_needs_cycle_labels(tmp_path):
    cfg = get_config("small")
    data = write_prepared(tmp_path / "cohort", 8, cfg.stored_size, seed=2, n_test=4)
    s = train_tool.resolve_settings(data, 0, "tempreg", "small", 5, None, None, None, None, None, 0,
                                    {"lstm_cycles": 1, "train_roll": False})
    assert s["net_overrides"] == {"lstm_cycles": 1, "train_roll": False}
    (tmp_path / "run").mkdir()
    train_tool.write_run_files(tmp_path / "run", s, gpu=False)
    net = text_format.Merge((tmp_path / "run" / "small_tempreg_train.prototxt").read_text(),
                            caffe_pb2.NetParameter())
    types = [layer.type for layer in net.layer]
    assert "Concat" not in types and types.count("LSTM") == 1          # one pass, no second reading
    data_layer = next(layer for layer in net.layer if layer.name == "data")
    assert "roll" not in json.loads(data_layer.python_param.param_str)
    with h5py.File(data / "sequences.h5", "a") as f:                    # pretend 'paper' labels
        prov = json.loads(f.attrs["provenance"])
        prov.setdefault("parameters", {})["label"] = "paper"
        f.attrs["provenance"] = json.dumps(prov)
    with pytest.raises(ValueError, match="train_roll needs data prepared with --label cycle"):
        train_tool.resolve_settings(data, 0, "tempreg", "small", 5, None, None, None, None, None, 0)

def test_frames_must_be_the_size_the_config_crops_from(tmp_path, capsys):
    data = write_prepared(tmp_path / "cohort", 8, 96, seed=2, n_test=4)
    with h5py.File(data / "sequences.h5", "a") as f:                    # as data_prep.prepare records it
        f.attrs["provenance"] = json.dumps({"parameters": {"size": 96, "label": "cycle"}})
    s = train_tool.resolve_settings(data, 0, "tempreg", "small96", 5, None, None, None, None, None, 0)
    assert s["data_parameters"]["size"] == 96
    with pytest.raises(InputError, match="prepared at 96 px; config 'small' expects 72 px"):
        train_tool.resolve_settings(data, 0, "tempreg", "small", 5, None, None, None, None, None, 0)
    from tools import learning_curve                                    # refused before training
    assert learning_curve.main(["--data", str(data), "--iters", "5", "--every", "5",
                                "--out", str(tmp_path / "curve")]) == 1
    assert "prepared at 96 px; config 'small' expects 72 px" in capsys.readouterr().err
    assert not (tmp_path / "curve" / "train.prototxt").exists()

def test_learning_curve_reports_held_out_afd(trained, tmp_path):
    from tools import learning_curve
    data = trained[0]
    out = tmp_path / "curve"
    assert learning_curve.main(["--data", str(data), "--iters", "20", "--every", "10",
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
    from tools import predict
    loaded = predict.load_net(out / "deploy.prototxt", out / "final.caffemodel", convention="cycle")
    rows = predict.load_rows(data / "fold0_test.txt")
    again = predict.predict_rows(loaded, rows)
    np.testing.assert_allclose([r["curve"] for r in again], [r["curve"] for r in records], rtol=1e-4, atol=1e-5)

def test_learning_curve_bad_arguments(trained, capsys):
    from tools import learning_curve
    assert learning_curve.main(["--data", str(trained[0]), "--iters", "5", "--every", "10"]) == 1
    assert capsys.readouterr().err.strip() == "learning_curve: need 1 <= --every <= --iters"
    assert learning_curve.main(["--data", str(trained[0]), "--fold", "all", "--iters", "5",
                                "--every", "5"]) == 1
    assert "no held-out sequences" in capsys.readouterr().err
