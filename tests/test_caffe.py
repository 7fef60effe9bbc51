"""The Caffe we build: pycaffe, Python layers in pycaffe and in `caffe train`, the LSTM contract."""
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

caffe = pytest.importorskip("caffe", reason="pycaffe is not built: run `make caffe`")
from caffe import layers as L  # noqa: E402
from caffe.proto import caffe_pb2  # noqa: E402

CAFFE_BIN = Path(sys.prefix) / "bin" / "caffe"

# A loss layer that the test can predict exactly: 0.5 * sum(x^2) / num.
HALF_SQUARE_LAYER = textwrap.dedent('''
    import json

    import caffe
    import numpy as np

    class HalfSquareLoss(caffe.Layer):
        def setup(self, bottom, top):
            self.scale = float(json.loads(self.param_str)["scale"])

        def reshape(self, bottom, top):
            top[0].reshape(1)

        def forward(self, bottom, top):
            top[0].data[0] = self.scale * 0.5 * np.sum(bottom[0].data ** 2) / bottom[0].num

        def backward(self, top, propagate_down, bottom):
            if propagate_down[0]:
                bottom[0].diff[...] = top[0].diff[0] * self.scale * bottom[0].data / bottom[0].num
''')


@pytest.fixture()
def layer_module(tmp_path, monkeypatch):
    (tmp_path / "halfsquare_layer.py").write_text(HALF_SQUARE_LAYER)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    return tmp_path


def half_square_net(value: float, scale: float) -> caffe_pb2.NetParameter:
    n = caffe.NetSpec()
    n.x = L.DummyData(shape=dict(dim=[2, 3]), data_filler=dict(type="constant", value=value))
    n.w = L.InnerProduct(n.x, num_output=3, bias_term=False,
                         weight_filler=dict(type="constant", value=0.0))  # gives the net a param
    n.total = L.Eltwise(n.x, n.w)
    n.loss = L.Python(n.total, module="halfsquare_layer", layer="HalfSquareLoss",
                      param_str='{"scale": %r}' % scale, loss_weight=1)
    return n.to_proto()


def test_pycaffe_imports_with_python_and_lstm_layers():
    types = caffe.layer_type_list()
    assert "Python" in types and "LSTM" in types


def test_python_loss_layer_in_pycaffe(layer_module, tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(str(half_square_net(value=0.5, scale=2.0)))
    net = caffe.Net(str(path), caffe.TRAIN)
    out = net.forward()
    # 2 * 0.5 * (6 * 0.25) / 2 rows
    assert out["loss"] == pytest.approx(0.75)
    net.backward()
    assert np.allclose(net.blobs["total"].diff, 2.0 * 0.5 / 2)


def test_python_loss_layer_in_caffe_binary(layer_module, tmp_path):
    net = tmp_path / "net.prototxt"
    net.write_text(str(half_square_net(value=1.5, scale=4.0)))
    solver = caffe_pb2.SolverParameter(net=str(net), base_lr=0.0, lr_policy="fixed", max_iter=1,
                                       display=1, snapshot_after_train=False,
                                       solver_mode=caffe_pb2.SolverParameter.CPU)
    solver_path = tmp_path / "solver.prototxt"
    solver_path.write_text(str(solver))
    env = dict(os.environ, GLOG_minloglevel="0", GLOG_logtostderr="1")   # the loss is an INFO line
    run = subprocess.run([str(CAFFE_BIN), "train", "-solver", str(solver_path)],
                         capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    losses = [float(v) for v in re.findall(r"Iteration 0.*loss = ([0-9.eE+-]+)", run.stderr)]
    assert losses and losses[0] == pytest.approx(4.0 * 0.5 * 6 * 1.5 ** 2 / 2)


# --- Caffe's LSTM contract ---------------------------------------------------------------

HIDDEN, INPUT, N = 5, 4, 2


def lstm_net(path: Path, steps: int, expose_hidden: bool = False) -> caffe.Net:
    n = caffe.NetSpec()
    n.x = L.Input(shape=dict(dim=[steps, N, INPUT]))
    n.cont = L.Input(shape=dict(dim=[steps, N]))
    inputs = [n.x, n.cont]
    if expose_hidden:
        n.h0 = L.Input(shape=dict(dim=[1, N, HIDDEN]))
        n.c0 = L.Input(shape=dict(dim=[1, N, HIDDEN]))
        inputs += [n.h0, n.c0]
    rp = dict(num_output=HIDDEN, expose_hidden=expose_hidden,
              weight_filler=dict(type="uniform", min=-0.5, max=0.5),
              bias_filler=dict(type="uniform", min=-0.5, max=0.5))
    outs = L.LSTM(*inputs, recurrent_param=rp, ntop=3 if expose_hidden else 1, name="lstm")
    if expose_hidden:
        n.h, n.hT, n.cT = outs
    else:
        n.h = outs
    path.write_text(str(n.to_proto()))
    return caffe.Net(str(path), caffe.TEST)


def copy_params(src: caffe.Net, dst: caffe.Net) -> None:
    for a, b in zip(src.params["lstm"], dst.params["lstm"]):
        b.data[...] = a.data


def run(net, x, cont, **extra):
    net.blobs["x"].data[...] = x
    net.blobs["cont"].data[...] = cont
    for k, v in extra.items():
        net.blobs[k].data[...] = v
    net.forward()
    return {k: net.blobs[k].data.copy() for k in net.outputs}


@pytest.fixture()
def seq():
    rng = np.random.default_rng(0)
    return rng.standard_normal((6, N, INPUT)).astype(np.float32)


def test_lstm_all_steps_equal_one_at_a_time(tmp_path, seq):
    full = lstm_net(tmp_path / "full.prototxt", steps=6)
    step = lstm_net(tmp_path / "step.prototxt", steps=1, expose_hidden=True)
    copy_params(full, step)
    cont = np.ones((6, N), np.float32)
    cont[0] = 0
    h_all = run(full, seq, cont)["h"]
    h = np.zeros((1, N, HIDDEN), np.float32)
    c = np.zeros_like(h)
    for t in range(6):
        out = run(step, seq[t:t + 1], cont[t:t + 1], h0=h, c0=c)
        assert np.allclose(out["h"][0], h_all[t], atol=1e-6)
        h, c = out["hT"], out["cT"]


def test_lstm_cont_zero_resets_state(tmp_path, seq):
    net = lstm_net(tmp_path / "net.prototxt", steps=6)
    cont = np.ones((6, N), np.float32)
    cont[0] = 0
    cont[3] = 0                       # a new sequence starts at step 3
    h = run(net, seq, cont)["h"]
    short = lstm_net(tmp_path / "short.prototxt", steps=3)
    copy_params(net, short)
    fresh = run(short, seq[3:], np.r_[np.zeros((1, N)), np.ones((2, N))].astype(np.float32))["h"]
    assert np.allclose(h[3:], fresh, atol=1e-6)
    carried = run(net, seq, np.ones((6, N), np.float32))["h"]   # control: no reset at step 3
    assert not np.allclose(carried[3:], fresh, atol=1e-3)


def test_lstm_state_carries_over_between_forwards_without_cont_zero(tmp_path, seq):
    long = lstm_net(tmp_path / "long.prototxt", steps=6)
    half = lstm_net(tmp_path / "half.prototxt", steps=3)
    copy_params(long, half)
    cont = np.ones((6, N), np.float32)
    cont[0] = 0
    h_long = run(long, seq, cont)["h"]
    run(half, seq[:3], cont[:3])
    h_second = run(half, seq[3:], cont[3:])["h"]          # cont = 1: continue the sequence
    assert np.allclose(h_second, h_long[3:], atol=1e-6)
    h_reset = run(half, seq[3:], cont[:3])["h"]           # cont[0] = 0: starts afresh
    assert not np.allclose(h_reset, h_long[3:], atol=1e-3)
