"""TemporalStructuredLoss (Eq. 2): forward vs a loop reference, backward vs central differences, loss_weight, shapes, caffe train."""
import os
import subprocess
import sys
from pathlib import Path

import caffe
import h5py
import numpy as np
import pytest

from layers.temporal_loss import parse_param_str, temporal_loss_and_grad
from tempregnet.training_log import parse_log

CAFFE_BIN = Path(sys.prefix) / "bin" / "caffe"

def eq2_reference(pred, label):
    """Eq. 2 written out term by term for each sequence, then the mean over sequences."""
    n_steps, n_seq = label.shape
    per_sequence = []
    for n in range(n_seq):
        l_inc = l_dec = 0.0
        for k in range(1, n_steps):
            if label[k, n] > label[k - 1, n]:
                l_inc += max(0.0, pred[k - 1, n] - pred[k, n])
            if label[k, n] < label[k - 1, n]:
                l_dec += max(0.0, pred[k, n] - pred[k - 1, n])
        per_sequence.append(0.5 * (l_inc / n_steps + l_dec / n_steps))
    return float(np.mean(per_sequence))

def loss_net(tmp_path, shape, label_shape, loss_weight=1.0, param_str="{}"):
    """A tiny net: Input pred and label -> TemporalStructuredLoss, with force_backward."""
    text = f"""force_backward: true
layer {{ name: "pred" type: "Input" top: "pred" input_param {{ shape {{ {' '.join(f'dim: {d}' for d in shape)} }} }} }}
layer {{ name: "label" type: "Input" top: "label" input_param {{ shape {{ {' '.join(f'dim: {d}' for d in label_shape)} }} }} }}
layer {{ name: "loss" type: "Python" bottom: "pred" bottom: "label" top: "loss" loss_weight: {loss_weight}
  python_param {{ module: "layers.temporal_loss" layer: "TemporalStructuredLoss" param_str: '{param_str}' }} }}
"""
    path = tmp_path / "loss_net.prototxt"
    path.write_text(text)
    caffe.set_mode_cpu()
    return caffe.Net(str(path), caffe.TRAIN)

def well_separated(rng, shape, gap=1e-2):
    """Random predictions whose consecutive steps differ by more than gap (no hinge kinks nearby)."""
    while True:
        x = rng.normal(size=shape)
        if np.min(np.abs(np.diff(x, axis=0))) > gap:
            return x

@pytest.mark.parametrize("seed", range(5))
def test_forward_matches_loop_reference(seed):
    rng = np.random.default_rng(seed)
    n_steps, n_seq = 20, int(rng.integers(1, 6))
    pred, label = rng.normal(size=(n_steps, n_seq)), rng.normal(size=(n_steps, n_seq))
    label[3] = label[2]                          # a flat step: neither indicator fires
    loss, _ = temporal_loss_and_grad(pred, label)
    assert loss == pytest.approx(eq2_reference(pred, label), rel=1e-12)

def test_hand_computed_case():
    # T = 4, one sequence: label up, up, down; pred 0, 1, 0.5, 2.
    # pair 1 up & pred up: 0; pair 2 up & pred down by 0.5: L_inc 0.5; pair 3 down & pred up by 1.5: L_dec 1.5
    loss, _ = temporal_loss_and_grad(np.array([[0.0], [1.0], [0.5], [2.0]]), np.array([[0.0], [1.0], [2.0], [1.0]]))
    assert loss == pytest.approx(0.5 * (0.5 / 4 + 1.5 / 4))

def test_layer_forward_in_caffe_matches_reference(tmp_path):
    rng = np.random.default_rng(7)
    net = loss_net(tmp_path, (20, 3, 1), (20, 3))
    pred, label = rng.normal(size=(20, 3, 1)), rng.normal(size=(20, 3))
    net.blobs["pred"].data[...] = pred
    net.blobs["label"].data[...] = label
    out = net.forward()
    expected = eq2_reference(pred[..., 0].astype(np.float32), label.astype(np.float32))
    assert float(out["loss"].flat[0]) == pytest.approx(expected, rel=1e-5)

@pytest.mark.parametrize("loss_weight", [1.0, 2.5])
def test_backward_matches_central_differences_and_loss_weight(tmp_path, loss_weight):
    rng = np.random.default_rng(3)
    shape = (20, 2)
    net = loss_net(tmp_path, shape, shape, loss_weight=loss_weight)
    pred, label = well_separated(rng, shape), rng.normal(size=shape)
    net.blobs["pred"].data[...] = pred
    net.blobs["label"].data[...] = label
    net.forward()
    net.backward()
    analytic = net.blobs["pred"].diff.copy()
    assert np.all(net.blobs["label"].diff == 0), "label must receive no gradient"

    eps = 1e-3
    numeric = np.zeros(shape)
    for idx in np.ndindex(*shape):
        values = []
        for sign in (+1, -1):
            p = pred.copy()
            p[idx] += sign * eps
            values.append(eq2_reference(p, label))   # float64 objective, independent of the layer
        numeric[idx] = loss_weight * (values[0] - values[1]) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-4, atol=1e-6)
    assert np.abs(analytic).max() > 0, "random inputs should give some non-zero gradient"

def test_loss_weight_scales_gradient_linearly(tmp_path):
    rng = np.random.default_rng(11)
    pred, label = well_separated(rng, (20, 4)), rng.normal(size=(20, 4))
    grads = []
    for weight in (1.0, 3.0):
        net = loss_net(tmp_path, (20, 4), (20, 4), loss_weight=weight)
        net.blobs["pred"].data[...] = pred
        net.blobs["label"].data[...] = label
        net.forward()
        net.backward()
        grads.append(net.blobs["pred"].diff.copy())
    np.testing.assert_allclose(grads[1], 3.0 * grads[0], rtol=1e-6)

@pytest.mark.parametrize("pred_shape,label_shape,message", [
    ((20, 3, 2), (20, 3), "does not match"),
    ((20, 4), (20, 3), "does not match"),
    ((20, 3), (60,), "must be T x N"),
])
def test_bad_shapes_rejected(tmp_path, pred_shape, label_shape, message):
    with pytest.raises(Exception, match=message):
        loss_net(tmp_path, pred_shape, label_shape)

def test_param_str_validation():
    assert parse_param_str("") == {}
    assert parse_param_str("{}") == {}
    with pytest.raises(ValueError, match="unknown param_str keys"):
        parse_param_str('{"beta": 1}')
    with pytest.raises(ValueError, match="JSON object"):
        parse_param_str("[1, 2]")

def test_runs_inside_caffe_train_and_lowers_the_loss(tmp_path):
    """The layer in `caffe train`: a linear per-step regressor trained by the temporal loss alone."""
    rng = np.random.default_rng(0)
    n_steps, n_seq, dim = 20, 3, 4
    x = rng.normal(size=(n_steps, n_seq, dim)).astype(np.float32)
    label = rng.normal(size=(n_steps, n_seq)).astype(np.float32)
    with h5py.File(tmp_path / "toy.h5", "w") as f:
        f["x"], f["label"] = x, label
    (tmp_path / "toy.txt").write_text(f"{tmp_path / 'toy.h5'}\n")
    (tmp_path / "net.prototxt").write_text(f"""
layer {{ name: "data" type: "HDF5Data" top: "x" top: "label" hdf5_data_param {{ source: "{tmp_path / 'toy.txt'}" batch_size: {n_steps} }} }}
layer {{ name: "pred" type: "InnerProduct" bottom: "x" top: "pred"
  inner_product_param {{ num_output: 1 axis: 2 weight_filler {{ type: "gaussian" std: 1 }} }} }}
layer {{ name: "temporal_loss" type: "Python" bottom: "pred" bottom: "label" top: "temporal_loss" loss_weight: 2
  python_param {{ module: "layers.temporal_loss" layer: "TemporalStructuredLoss" }} }}
""")
    (tmp_path / "solver.prototxt").write_text(f"""net: "{tmp_path / 'net.prototxt'}"
base_lr: 0.5 lr_policy: "fixed" momentum: 0.0 max_iter: 40 display: 1 snapshot_after_train: false
solver_mode: CPU random_seed: 1
""")
    log = tmp_path / "train.log"
    with open(log, "w") as out:
        proc = subprocess.run([str(CAFFE_BIN), "train", f"-solver={tmp_path / 'solver.prototxt'}"],
                              stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "GLOG_minloglevel": "0"})
    assert proc.returncode == 0, log.read_text()[-2000:]
    losses = parse_log(log)["train"]["temporal_loss"]
    assert len(losses) == 40
    assert losses[-1][1] < 0.5 * losses[0][1], losses
