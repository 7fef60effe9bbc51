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

from tempregnet.labels import step_positions, volume_label
from models.config import N_STEPS

CROP = 16
STORED = 24

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
                                             "parameters": {"size": STORED, "label": "cycle"}})
    for k, rows in enumerate(folds):
        (folder / f"fold{k}_test.txt").write_text("".join(f"sequences.h5 {r}\n" for r in rows))
    return folder

def write_run_dir(folder, crop=CROP, stored=STORED, data=None):
    """A finished run dir laid out as tools.train leaves it (<stem>_deploy.prototxt, absolute
    final_model.txt, settings.json), around the trivial net; crop/size given in the settings."""
    folder = Path(folder)
    deploy, weights = write_trivial_net(folder, crop)
    deploy.rename(folder / "fixture_deploy.prototxt")
    (folder / "final_model.txt").write_text(f"{weights.resolve()}\n")
    settings = {"config": "fixture", "variant": "tempreg", "crop": crop, "stored_size": stored,
                "iters": 1, "imagenet_init": False, "solver_mode": "CPU", "fold": "0"}
    if data is not None:
        settings["data"] = str(Path(data).resolve())
    (folder / "settings.json").write_text(json.dumps(settings))
    return folder
