"""Test fixtures: a trivial deploy net with the contract's blob names, and a tiny prepared set.

The net outputs, per step, the mean of its input crop (global average pool, then a fixed 1/3
channel sum), so a frame whose brightness follows a curve yields that curve, up to an offset:
what the fit decoder inverts exactly. It has no LSTM; `cont` is an input it ignores.
"""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from models.config import N_STEPS
from tempregnet import runs
from tempregnet.contract import SequenceContract
from tempregnet.labels import step_positions, volume_label

CROP = 16
STORED = 24
CONTRACT = SequenceContract(steps=N_STEPS, stored_size=STORED, label="cycle", roi=1.0)

def write_trivial_net(folder, crop=CROP, batch=2):
    """deploy.prototxt + weights.caffemodel of the mean-brightness net; returns both paths."""
    import caffe
    from caffe import layers as L, params as P
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n = caffe.NetSpec()
    n.frames = L.Input(shape=dict(dim=[N_STEPS * batch, 3, crop, crop]))    # (20 N) x 3 x C x C
    n.cont = L.Input(shape=dict(dim=[N_STEPS, batch]))                      # 20 x N
    n.pooled = L.Pooling(n.frames, pool=P.Pooling.AVE, global_pooling=True)  # (20 N) x 3 x 1 x 1
    n.brightness = L.InnerProduct(n.pooled, num_output=1,
                                  weight_filler=dict(type="constant", value=1.0 / 3),
                                  bias_filler=dict(type="constant", value=0.0))
    n.volume_pred = L.Reshape(n.brightness, shape=dict(dim=[N_STEPS, -1, 1]))  # 20 x N x 1
    deploy = folder / "deploy.prototxt"
    deploy.write_text(str(n.to_proto()))
    net = caffe.Net(str(deploy), caffe.TEST)
    weights = folder / "weights.caffemodel"
    net.save(str(weights))
    return deploy, weights

def brightness_frames(n_frames, ed, es, size=STORED, convention="cycle"):
    """20 x S x S uint8 whose per-step brightness is the Eq. 4 label of (ed, es)."""
    label = volume_label(step_positions(n_frames, N_STEPS), n_frames, ed, es, convention)
    values = np.rint(30 + 200 * label).astype(np.uint8)
    return np.broadcast_to(values[:, None, None], (N_STEPS, size, size)).copy(), label

def write_prepared(folder, cases, folds):
    """sequences.h5 + fold<k>_test.txt lists (README, HDF5 layout).

    cases: (n_frames, ed_shown, es_shown, ed_stored, es_stored) per row; the frames follow the
    'shown' placement, the stored ground truth may differ so the error is known by hand.
    folds: list of row-index lists, one per fold.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    frames, labels = [], []
    for n_frames, ed_shown, es_shown, ed, es in cases:
        f, _ = brightness_frames(n_frames, ed_shown, es_shown)
        frames.append(f)
        labels.append(volume_label(step_positions(n_frames, N_STEPS), n_frames, ed, es))
    with h5py.File(folder / "sequences.h5", "w") as h5:
        h5["frames"] = np.stack(frames)
        h5["label"] = np.stack(labels).astype(np.float32)
        h5["ed"] = np.array([c[3] for c in cases], np.int32)
        h5["es"] = np.array([c[4] for c in cases], np.int32)
        h5["n_frames"] = np.array([c[0] for c in cases], np.int32)
        h5["seq_id"] = np.array([f"s{i:03d}" for i in range(len(cases))], dtype="S")
        h5["group"] = np.array([f"p{i // 2:03d}" for i in range(len(cases))], dtype="S")
        h5.attrs["provenance"] = json.dumps({"source": "test fixture",
                                             "contract": CONTRACT.to_dict()})
    for k, rows in enumerate(folds):
        (folder / f"fold{k}_test.txt").write_text("".join(f"sequences.h5 {r}\n" for r in rows))
    return folder

def write_run_dir(folder, crop=CROP, contract=CONTRACT, recipe=None, variant="tempreg", fold="0"):
    """A finished run folder around the trivial net, written by the writer tools.train uses
    (tempregnet.runs: settings.json, contract.json, final_model.txt) with tools.train's file
    names (<stem>_deploy.prototxt, snapshots/); recipe: a Recipe whose settings it records."""
    folder = Path(folder)
    deploy, weights = write_trivial_net(folder, crop)
    deploy.rename(folder / "fixture_deploy.prototxt")
    (folder / runs.SNAPSHOTS).mkdir()
    final = weights.rename(folder / runs.SNAPSHOTS / "fixture_iter_1.caffemodel")
    recipe_fields = recipe.to_dict() if recipe else {"name": "fixture", "config": "fixture"}
    settings = {"recipe": recipe_fields, "variant": variant, "fold": str(fold), "iters": 1,
                "imagenet_init": False, "solver_mode": "CPU"}
    runs.write_run_record(folder, settings, contract)
    runs.write_final_model(folder, final)
    return folder
