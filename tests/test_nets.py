"""Generated nets: prototxt per recipe in sync, stock-Caffe parsing, the layers each recipe uses,
blob shapes, forward/backward, LSTM cont resets, variants."""
import json
from pathlib import Path

import caffe
import numpy as np
import pytest
from caffe import layers as L
from caffe.proto import caffe_pb2
from google.protobuf import text_format

from fixtures_h5 import recipe_contract, write_prepared
from models import generate
from models.config import DEFAULT_BETA, VARIANTS, get_config, get_variant
from models.tempregnet import pool5_side
from tempregnet.recipes import REPORTED, load_recipe, recipe_names

ROOT = Path(__file__).resolve().parent.parent
PROTOTXT = ROOT / "prototxt"
LEARNABLE = ("Convolution", "InnerProduct", "LSTM")

def read_net(path) -> caffe_pb2.NetParameter:
    return text_format.Parse(Path(path).read_text(), caffe_pb2.NetParameter())

def with_source(net: caffe_pb2.NetParameter, source: Path, tmp_path: Path, name: str,
                batch_size: int | None = None) -> str:
    """Write a copy of a committed train/test net whose data layer reads source (and batch_size)."""
    for layer in net.layer:
        if layer.type == "Python" and layer.python_param.layer == "SequenceData":
            params = json.loads(layer.python_param.param_str)
            params["source"] = str(source)
            if batch_size:
                params["batch_size"] = batch_size
            layer.python_param.param_str = json.dumps(params)
    path = tmp_path / name
    path.write_text(text_format.MessageToString(net))
    return str(path)

def recipe_nets():
    """(recipe, variant, path stem) of every generated net."""
    return [(load_recipe(r), v, PROTOTXT / r / v) for r in recipe_names() for v in load_recipe(r).variants]

@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    return write_prepared(tmp_path_factory.mktemp("small"), n_seq=6, size=get_config("small").stored_size,
                          seed=2, contract=recipe_contract("demo"))

def test_prototxt_in_sync_with_models(tmp_path):
    generate.main(["--out", str(tmp_path)])
    generated = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.prototxt"))
    committed = sorted(str(p.relative_to(PROTOTXT)) for p in PROTOTXT.rglob("*.prototxt"))
    assert generated == committed, "run `make prototxt`"
    for name in generated:
        assert (tmp_path / name).read_bytes() == (PROTOTXT / name).read_bytes(), f"{name} drifted; run `make prototxt`"
    assert len(generated) == 4 * sum(len(load_recipe(r).variants) for r in recipe_names())
    assert set(REPORTED) <= set(recipe_names())       # every reported result has its recipe

def test_every_file_parses_with_stock_caffe():
    caffe.set_mode_cpu()
    for recipe, variant, stem in recipe_nets():
        for phase in ("train", "test"):
            assert len(read_net(f"{stem}_{phase}.prototxt").layer) > 20
        solver = text_format.Parse(Path(f"{stem}_solver.prototxt").read_text(), caffe_pb2.SolverParameter())
        assert solver.solver_mode == caffe_pb2.SolverParameter.GPU
        assert solver.lr_policy == "step" and solver.momentum == pytest.approx(0.9)
        assert (ROOT / solver.train_net).is_file() and (ROOT / solver.test_net[0]).is_file()
        assert solver.max_iter == recipe.iterations and solver.random_seed == recipe.seed
        if recipe.config != "zf":   # the zf deploy nets are instantiated in the shape tests below
            caffe.Net(f"{stem}_deploy.prototxt", caffe.TEST)

def tops(path) -> set:
    """Every blob a net's layers produce."""
    return {top for layer in read_net(path).layer for top in layer.top}

def data_param(net) -> dict:
    return json.loads(next(l for l in net.layer if l.name == "data").python_param.param_str)

def test_each_recipe_net_holds_the_layers_of_its_settings():
    """The prototxt a reader opens is the net that ran: the recipe's options are layers in it."""
    acdc = {l.name: l for l in read_net(PROTOTXT / "acdc" / "tempreg_train.prototxt").layer}
    acdc_tops = tops(PROTOTXT / "acdc" / "tempreg_train.prototxt")
    for name in ("frames_change", "frames_motion", "frames_temporal"):   # contrast, motion inputs
        assert name in acdc_tops
    assert acdc["fc6"].inner_product_param.num_output == 256 and "lstm1_last" not in acdc_tops
    assert acdc["fc_frame"].inner_product_param.num_output == 128
    assert acdc["lstm1"].recurrent_param.num_output == 128 and list(acdc["lstm1"].bottom) == ["fc_frame_steps", "cont"]
    param = data_param(read_net(PROTOTXT / "acdc" / "tempreg_train.prototxt"))
    assert (param["warp"], param["rotate"], param["zoom"], param["gamma"]) == (0.4, 15.0, 0.15, 0.3)
    assert param["label"] == "paper" and "roll" not in param and param["flip"] is True
    assert (param["stored_size"], param["crop"], param["n_steps"]) == (96, 88, 20)
    cross = tops(PROTOTXT / "cross_sunnybrook" / "tempreg_train.prototxt")
    assert "frames_motion" in cross and "lstm1_last" in cross              # the cycle read twice
    param = data_param(read_net(PROTOTXT / "cross_sunnybrook" / "tempreg_train.prototxt"))
    assert param["roll"] is True and param["label"] == "cycle" and param["source"].endswith("/all.txt")
    demo = tops(PROTOTXT / "demo" / "tempreg_train.prototxt")
    assert "frames_temporal" not in demo and "norm1" not in demo and "lstm1_last" in demo
    zf = {l.name for l in read_net(PROTOTXT / "paper_zf" / "tempreg_train.prototxt").layer}
    assert "frames_temporal" not in zf and "norm1" in zf and "drop6" in zf
    assert "lstm1_last" not in tops(PROTOTXT / "paper_zf" / "tempreg_train.prototxt")
    assert data_param(read_net(PROTOTXT / "paper_zf" / "tempreg_train.prototxt"))["label"] == "paper"

def test_zf_input_gives_6x6_pool5():
    assert pool5_side(192) == 6, "the ImageNet ZF fc6 needs 6 x 6 x 256 = 9216 inputs"
    assert pool5_side(224) == 7, "224 px would not load the ImageNet fc6 unchanged"
    assert get_config("zf").crop <= get_config("zf").stored_size

def test_variants_differ_only_as_table1_says():
    layers = {}
    for name in VARIANTS:
        net = read_net(PROTOTXT / "paper_zf" / f"{name}_train.prototxt")
        layers[name] = {layer.name: layer for layer in net.layer}
    assert "lstm1" not in layers["cnn_reg"] and "temporal_loss" not in layers["cnn_reg"]
    assert "lstm1" in layers["tempreg_notsc"] and "temporal_loss" not in layers["tempreg_notsc"]
    assert layers["tempreg"]["temporal_loss"].loss_weight == [DEFAULT_BETA]
    assert list(layers["tempreg"]["volume_pred"].bottom) == ["lstm1"]
    assert list(layers["cnn_reg"]["volume_pred"].bottom) == ["fc_frame_steps"]
    for name in ("tempreg_notsc", "tempreg"):
        assert [n for n in layers[name] if n != "temporal_loss"] == [n for n in layers["tempreg"] if n != "temporal_loss"]

def test_every_learnable_layer_has_fillers_and_the_paper_learning_rates():
    for path in PROTOTXT.rglob("*_train.prototxt"):
        for layer in read_net(path).layer:
            if layer.type in LEARNABLE:
                sub = layer.recurrent_param if layer.type == "LSTM" else (
                    layer.convolution_param if layer.type == "Convolution" else layer.inner_product_param)
                has_bias = getattr(sub, "bias_term", True)     # frames_mean (contrast input) has none
                assert sub.HasField("weight_filler") and (sub.HasField("bias_filler") or not has_bias), \
                    f"{path}:{layer.name}"
            if layer.name == "lstm1":
                for filler in (layer.recurrent_param.weight_filler, layer.recurrent_param.bias_filler):
                    assert (filler.type, filler.min, filler.max) == ("uniform", pytest.approx(-0.01), pytest.approx(0.01))
            if layer.name == "volume_pred":
                assert layer.param[0].lr_mult == 10 and layer.inner_product_param.axis == 2
            if layer.name in ("conv1", "fc6"):
                assert layer.param[0].lr_mult == 1

def test_deploy_trunk_is_the_test_trunk():
    for _, _, stem in recipe_nets():
        test_layers = {layer.name: layer for layer in read_net(f"{stem}_test.prototxt").layer}
        for layer in read_net(f"{stem}_deploy.prototxt").layer:
            if layer.type in ("Input", "Reshape") and layer.name not in test_layers:
                continue
            ref = test_layers[layer.name]
            assert (layer.type, list(layer.bottom), layer.param) == (ref.type, list(ref.bottom), ref.param), layer.name
            assert layer.inner_product_param == ref.inner_product_param
            assert layer.convolution_param == ref.convolution_param
            assert layer.recurrent_param == ref.recurrent_param

@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_small_train_nets_run_forward_backward_with_contract_shapes(tmp_path, small_data, variant):
    cfg, n = get_config("small"), 3
    path = with_source(read_net(PROTOTXT / "demo" / f"{variant}_train.prototxt"), small_data / "all.txt",
                       tmp_path, "train.prototxt", batch_size=n)
    caffe.set_mode_cpu()
    net = caffe.Net(path, caffe.TRAIN)
    out = net.forward()
    net.backward()
    t = cfg.n_steps
    assert net.blobs["frames"].data.shape == (t * n, 3, cfg.crop, cfg.crop)
    assert net.blobs["fc_frame_steps"].data.shape == (t, n, cfg.feature_dim)
    assert net.blobs["volume_pred"].data.shape == (t, n, 1)
    if get_variant(variant).use_lstm:
        assert net.blobs["lstm1"].data.shape == (cfg.lstm_cycles * t, n, cfg.lstm_hidden)
    assert all(np.isfinite(v).all() for v in out.values())
    assert np.abs(net.params["conv1"][0].diff).sum() > 0, "gradient should reach the first layer"
    assert np.abs(net.params["volume_pred"][0].diff).sum() > 0

def test_zf_shapes_and_forward_backward_n1(tmp_path_factory):
    """The faithful ZF net on one sequence: 20 x 1 x 1024 into the LSTM, 20 x 1 x 1 out, fc6 9216 inputs."""
    cfg = get_config("zf")
    data = write_prepared(tmp_path_factory.mktemp("zf"), n_seq=1, size=cfg.stored_size, seed=4,
                          contract=recipe_contract("paper_zf"))
    path = with_source(read_net(PROTOTXT / "paper_zf" / "tempreg_train.prototxt"), data / "all.txt",
                       tmp_path_factory.mktemp("zfnet"), "train.prototxt", batch_size=1)
    caffe.set_mode_cpu()
    net = caffe.Net(path, caffe.TRAIN)
    net.forward()
    net.backward()
    t = cfg.n_steps
    assert net.blobs["pool5"].data.shape == (t, 256, 6, 6)
    assert net.params["fc6"][0].data.shape == (4096, 9216)
    assert net.blobs["fc_frame_steps"].data.shape == (t, 1, 1024)
    assert net.blobs["lstm1"].data.shape == (t, 1, cfg.lstm_hidden)
    assert net.blobs["volume_pred"].data.shape == (t, 1, 1)
    assert np.isfinite(net.blobs["l2_loss"].data).all() and np.abs(net.params["conv1"][0].diff).sum() > 0

def deploy_net(variant="tempreg", recipe="demo"):
    caffe.set_mode_cpu()
    return caffe.Net(str(PROTOTXT / recipe / f"{variant}_deploy.prototxt"), caffe.TEST)

def run_deploy(net, frames, cont):
    """Forward a deploy net on (T*N) x 3 x C x C frames and T x N cont; returns T x N predictions."""
    net.blobs["frames"].reshape(*frames.shape)
    net.blobs["cont"].reshape(*cont.shape)
    net.blobs["frames"].data[...] = frames
    net.blobs["cont"].data[...] = cont
    return net.forward()["volume_pred"].copy()

def test_deploy_any_batch_and_lstm_cont_resets():
    cfg = get_config("small")
    t, c = cfg.n_steps, cfg.crop
    rng = np.random.default_rng(0)
    seq_a, seq_b = (rng.normal(0, 50, (t, 3, c, c)).astype(np.float32) for _ in range(2))
    fresh_cont = np.ones((t, 1), np.float32)
    fresh_cont[0] = 0
    caffe.set_random_seed(0)        # the trunk's filler draws, whatever tests ran before this one
    net = deploy_net()
    # LSTM weights at U[-0.01, 0.01] barely carry state: set larger ones (seeded here, not by
    # Caffe's global RNG, so the test does not depend on the tests before it) so a leak would show.
    for blob in net.params["lstm1"]:
        blob.data[...] = rng.uniform(-0.5, 0.5, blob.data.shape)
    alone_b = run_deploy(net, seq_b, fresh_cont)
    assert alone_b.shape == (t, 1)

    # Two sequences side by side (row t*N + n) give the same outputs as each alone.
    both = np.stack([seq_a, seq_b], axis=1).reshape(t * 2, 3, c, c)
    pair = run_deploy(net, both, np.repeat(fresh_cont, 2, axis=1))
    assert pair.shape == (t, 2)
    np.testing.assert_allclose(pair[:, 1], alone_b[:, 0], rtol=1e-4, atol=1e-6)

    # cont = 0 at step 0 discards the state left by the previous forward pass...
    run_deploy(net, seq_a, fresh_cont)
    np.testing.assert_allclose(run_deploy(net, seq_b, fresh_cont), alone_b, rtol=1e-4, atol=1e-6)
    first_step = net.blobs["lstm1"].data[0].copy()
    # ...and without the reset the state of sequence A leaks into B's first LSTM step (so the
    # check above can fail; with lstm_cycles = 2 the first reading then washes it out).
    run_deploy(net, seq_a, fresh_cont)
    run_deploy(net, seq_b, np.ones((t, 1), np.float32))
    assert np.abs(net.blobs["lstm1"].data[0] - first_step).max() > 1e-4


def test_lstm_reads_the_cycle_twice_and_reports_the_second_reading(tmp_path):
    """small (lstm_cycles = 2) equals a plain LSTM over the features repeated, last T outputs."""
    cfg = get_config("small")
    assert cfg.lstm_cycles == 2 and get_config("zf").lstm_cycles == 1   # the paper's net: one pass
    t, c, n = cfg.n_steps, cfg.crop, 2
    rng = np.random.default_rng(1)
    net = deploy_net()
    for blob in net.params["lstm1"]:
        blob.data[...] = rng.uniform(-0.5, 0.5, blob.data.shape)      # make the state matter
    cont = np.ones((t, n), np.float32)
    cont[0] = 0
    pred = run_deploy(net, rng.normal(0, 50, (t * n, 3, c, c)).astype(np.float32), cont)
    feats = net.blobs["fc_frame_steps"].data.copy()                        # T x N x q

    ref = caffe.NetSpec()                         # an independent plain LSTM over 2T steps
    ref.x = L.Input(shape=dict(dim=[2 * t, n, cfg.feature_dim]))
    ref.cont = L.Input(shape=dict(dim=[2 * t, n]))
    ref.h = L.LSTM(ref.x, ref.cont, recurrent_param=dict(num_output=cfg.lstm_hidden), name="lstm")
    path = tmp_path / "ref.prototxt"
    path.write_text(str(ref.to_proto()))
    plain = caffe.Net(str(path), caffe.TEST)
    for a, b in zip(net.params["lstm1"], plain.params["lstm"]):
        b.data[...] = a.data
    plain.blobs["x"].data[...] = np.concatenate([feats, feats])
    plain.blobs["cont"].data[...] = np.concatenate([cont, np.ones_like(cont)])
    plain.forward()
    h = plain.blobs["h"].data[t:]                                          # second reading
    w, bias = (p.data for p in net.params["volume_pred"])
    np.testing.assert_allclose(pred, h @ w[0] + bias[0], rtol=1e-4, atol=1e-5)
    first = plain.blobs["h"].data[:t] @ w[0] + bias[0]                     # control: it differs
    assert np.abs(first - pred).max() > 1e-3



def test_lrn_can_be_left_out_and_augmentations_reach_the_training_data_layer():
    from models.tempregnet import net_proto
    cfg, variant = get_config("small"), get_variant("tempreg")
    with_lrn = net_proto(cfg.replace(lrn=True), variant, "train", "x.txt", label="cycle")
    without = net_proto(cfg.replace(lrn=False, train_roll=True, train_flip=True), variant, "train", "x.txt",
                        label="cycle")
    assert [l.name for l in with_lrn.layer if l.type == "LRN"] == ["norm1", "norm2"]
    assert not [l for l in without.layer if l.type == "LRN"]
    pools = {l.name: list(l.bottom) for l in without.layer if l.type == "Pooling"}
    assert pools["pool1"] == ["conv1"] and pools["pool2"] == ["conv2"]
    param = json.loads(next(l for l in without.layer if l.name == "data").python_param.param_str)
    assert param["roll"] is True and param["flip"] is True and "warp" not in param
    augment = dict(train_warp=0.3, train_rotate=10.0, train_zoom=0.1, train_gamma=0.2)
    warped = net_proto(cfg.replace(**augment), variant, "train", "x.txt", label="cycle")
    param = json.loads(next(l for l in warped.layer if l.name == "data").python_param.param_str)
    assert [param[k] for k in ("warp", "rotate", "zoom", "gamma")] == [0.3, 10.0, 0.1, 0.2]
    test_net = net_proto(cfg.replace(train_roll=True, train_flip=True, **augment), variant, "test", "x.txt",
                         label="cycle")
    param = json.loads(next(l for l in test_net.layer if l.name == "data").python_param.param_str)
    assert not {"roll", "flip", "warp", "rotate", "zoom", "gamma"} & set(param)   # never at test time


def contrast_net(tmp_path, phase="deploy", source=None):
    from models.tempregnet import net_proto
    cfg = get_config("small").replace(input_contrast=True)
    path = tmp_path / f"contrast_{phase}.prototxt"
    path.write_text(text_format.MessageToString(net_proto(cfg, get_variant("tempreg"), phase, source,
                                                          label="cycle")))
    caffe.set_mode_cpu()
    return cfg, caffe.Net(str(path), caffe.TRAIN if phase == "train" else caffe.TEST)

def test_input_contrast_feeds_conv1_each_frame_minus_its_sequence_mean(tmp_path):
    cfg, net = contrast_net(tmp_path)
    t, c, n = cfg.n_steps, cfg.crop, 3
    rng = np.random.default_rng(4)
    frames = rng.normal(0, 50, (t, n, 3, c, c)).astype(np.float32)     # row t*N + n
    cont = np.ones((t, n), np.float32)
    cont[0] = 0
    run_deploy(net, frames.reshape(t * n, 3, c, c), cont)
    got = net.blobs[net.bottom_names["conv1"][0]].data.reshape(t, n, 3, c, c)
    want_first = frames[:, :, 0] - frames[:, :, 0].mean(axis=0)            # per sequence, over T
    np.testing.assert_allclose(got[:, :, 0], want_first, atol=1e-3)
    np.testing.assert_array_equal(got[:, :, 1:], frames[:, :, 1:])

def test_input_contrast_mean_is_not_learned(tmp_path, small_data):
    cfg, net = contrast_net(tmp_path, "train", str(small_data / "all.txt"))
    assert net.bottom_names["conv1"] == ["frames_temporal"]
    before = net.params["frames_mean"][0].data.copy()
    np.testing.assert_allclose(before, 1.0 / cfg.n_steps)
    solver_path = tmp_path / "solver.prototxt"
    solver_path.write_text(f'train_net: "{tmp_path / "contrast_train.prototxt"}"\nbase_lr: 0.1\n'
                           'lr_policy: "fixed"\nweight_decay: 0.1\nmax_iter: 2\nsnapshot: 0\n'
                           'solver_mode: CPU\ntype: "Adam"\n')
    solver = caffe.get_solver(str(solver_path))
    conv1 = solver.net.params["conv1"][0].data.copy()
    solver.step(2)
    np.testing.assert_array_equal(solver.net.params["frames_mean"][0].data, before)
    assert np.abs(solver.net.params["conv1"][0].data - conv1).max() > 0     # control: others learn


def conv1_sees(tmp_path, cfg, n, seed):
    """Random frames (T x N x 3 x C x C) through cfg's deploy net, and what conv1 reads of them."""
    from models.tempregnet import net_proto
    path = tmp_path / "inputs_deploy.prototxt"
    path.write_text(text_format.MessageToString(net_proto(cfg, get_variant("tempreg"), "deploy")))
    caffe.set_mode_cpu()
    net = caffe.Net(str(path), caffe.TEST)
    t, c = cfg.n_steps, cfg.crop
    frames = np.random.default_rng(seed).normal(0, 50, (t, n, 3, c, c)).astype(np.float32)
    cont = np.ones((t, n), np.float32)
    cont[0] = 0
    run_deploy(net, frames.reshape(t * n, 3, c, c), cont)
    return frames, net.blobs[net.bottom_names["conv1"][0]].data.reshape(t, n, 3, c, c)


@pytest.mark.parametrize("contrast", [True, False])
def test_input_motion_feeds_conv1_the_next_minus_the_previous_frame(tmp_path, contrast):
    cfg = get_config("small").replace(input_contrast=contrast, input_motion=True)
    frames, got = conv1_sees(tmp_path, cfg, 3, 5)
    t = cfg.n_steps
    third = frames[:, :, 2]
    want = np.stack([third[(k + 1) % t] - third[(k - 1) % t] for k in range(t)])  # per sequence
    np.testing.assert_allclose(got[:, :, 2], want, atol=1e-3)
    first = frames[:, :, 0] - frames[:, :, 0].mean(axis=0) if contrast else frames[:, :, 0]
    np.testing.assert_allclose(got[:, :, 0], first, atol=1e-3)
    np.testing.assert_array_equal(got[:, :, 1], frames[:, :, 1])


@pytest.mark.parametrize("contrast", [True, False])
def test_input_scale_multiplies_what_conv1_sees(tmp_path, contrast):
    """input_scale (deviation 25) scales the frames conv1 reads, after any temporal channel;
    at 1 the net holds no such layer."""
    from models.tempregnet import net_proto
    frames, got = conv1_sees(tmp_path, get_config("small").replace(input_contrast=contrast,
                                                                   input_scale=0.25), 2, 6)
    want = frames.copy()
    if contrast:
        want[:, :, 0] -= frames[:, :, 0].mean(axis=0)
    np.testing.assert_allclose(got, 0.25 * want, atol=1e-3)
    plain = net_proto(get_config("small"), get_variant("tempreg"), "deploy")
    assert "frames_scaled" not in [layer.name for layer in plain.layer]
