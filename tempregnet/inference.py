"""Run a deploy net over prepared rows or CineSequences and decode ED/ES in original frames.

Time per sequence = wall time of (stored frames -> net input, forward, decode) for a batch,
divided by the sequences in it; for CineSequences it also includes resampling and resizing.
With the default batch of 1 it is the latency for one sequence, as the paper's 1.4 s.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep.errors import InputError
from data_prep.physical import crop_record
from data_prep.preprocess import sequence_to_steps
from data_prep.rwave import RWAVE_KEY
from data_prep.scale import physical_steps
from tempregnet.contract import SequenceContract
from tempregnet.decoding import STACK_WEIGHTS
from tempregnet.labels import SystolePrior, decode_detail, template_fit
from tempregnet.net_input import net_input, sequence_starts, time_major

FRAMES_BLOB, CONT_BLOB, OUTPUT_BLOB = "frames", "cont", "volume_pred"   # docs/data.md, Blobs


def quiet_caffe() -> None:
    """Keep Caffe's net dump off the console (glog reads this when libcaffe first loads);
    command-line entry points call it before they import caffe."""
    os.environ.setdefault("GLOG_minloglevel", "2")


@dataclass
class LoadedNet:
    """A deploy net and what is needed to feed it and read it."""
    net: object
    crop: int                   # net input side C, from the deploy net's frames blob
    contract: SequenceContract  # what the frames it was trained on are (steps, size, label, ROI)
    description: dict           # non-identifying provenance: recipe, variant, weights file name


def deploy_steps(deploy) -> int:
    """The step count T a deploy prototxt is unrolled over: dim 0 of its `cont` input."""
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format
    if not Path(deploy).is_file():
        raise InputError(deploy, "deploy prototxt not found")
    net = text_format.Parse(Path(deploy).read_text(), caffe_pb2.NetParameter())
    for layer in net.layer:
        if layer.type == "Input" and CONT_BLOB in layer.top:
            return int(layer.input_param.shape[list(layer.top).index(CONT_BLOB)].dim[0])
    raise InputError(deploy, f"deploy net has no '{CONT_BLOB}' input (T x N)")


def load_net(deploy, weights, contract: SequenceContract, gpu: int | None = None,
             description: dict | None = None) -> LoadedNet:
    """A caffe.Net in TEST phase from a deploy prototxt and a caffemodel, for frames of contract."""
    import caffe
    for path, what in ((deploy, "deploy prototxt"), (weights, "caffemodel")):
        if not Path(path).is_file():
            raise InputError(path, f"{what} not found")
    if gpu is None:
        caffe.set_mode_cpu()
    else:
        caffe.set_device(gpu)
        caffe.set_mode_gpu()
    net = caffe.Net(str(deploy), caffe.TEST, weights=str(weights))
    if FRAMES_BLOB not in net.blobs or OUTPUT_BLOB not in net.blobs:
        raise InputError(deploy, f"deploy net lacks the '{FRAMES_BLOB}' input or "
                                 f"'{OUTPUT_BLOB}' output blob")
    if CONT_BLOB in net.blobs and net.blobs[CONT_BLOB].shape[0] != contract.steps:
        raise InputError(deploy, f"the net is unrolled over {net.blobs[CONT_BLOB].shape[0]} steps, "
                                 f"the data has {contract.steps}")
    crop = int(net.blobs[FRAMES_BLOB].shape[-1])
    if crop > contract.stored_size:
        raise InputError(deploy, f"net input {crop} px is larger than the {contract.stored_size} px frames")
    desc = {"deploy": Path(deploy).name, "weights": Path(weights).name, "crop": crop,
            "label_convention": contract.label, "mode": "cpu" if gpu is None else f"gpu{gpu}"}
    desc.update(description or {})
    return LoadedNet(net, crop, contract, desc)


def load_model(folder, gpu: int | None = None, expected_sha1: str | None = None) -> LoadedNet:
    """The net of a run folder (tools.train) or a model folder, with its final weights and contract
    (a zoo folder's sha1 checked; expected_sha1: the weights must have this sha1)."""
    from tempregnet.runs import read_model_folder
    model = read_model_folder(folder, expected_sha1)
    return load_net(model.deploy, model.weights, model.contract, gpu=gpu,
                    description=model.description())


def augmentation_views(loaded: LoadedNet) -> list[tuple[bool, bool, int]]:
    """(flip left-right, flip up-down, roll in steps) of test-time augmentation: the symmetries
    the model was trained with (its recipe's train_flip, train_roll; rolls only for "cycle"
    labels), at 4 evenly spaced starts. Just the identity for a model without a recipe."""
    d = loaded.description
    flips = [(False, False), (True, False), (False, True), (True, True)] \
        if d.get("train_flip") else [(False, False)]
    t = loaded.contract.steps
    rolls = [k * t // 4 for k in range(4)] \
        if d.get("train_roll") and loaded.contract.label == "cycle" else [0]
    return [(lr, ud, k) for lr, ud in flips for k in rolls]


def forward_steps(loaded: LoadedNet, frames: np.ndarray, augment: bool = False) -> np.ndarray:
    """N x T x S x S uint8 stored frames -> N x T predicted curve (one forward pass). augment:
    the mean curve over augmentation_views (each view's curve rolled back), not the paper's."""
    frames = np.asarray(frames)
    if augment:
        views = augmentation_views(loaded)
        total = 0.0
        for lr, ud, k in views:
            view = frames[..., ::-1] if lr else frames
            view = view[..., ::-1, :] if ud else view
            view = np.roll(view, -k, axis=1)
            total = total + np.roll(forward_steps(loaded, np.ascontiguousarray(view)), k, axis=1)
        return total / len(views)
    t = loaded.contract.steps
    if frames.ndim != 4 or frames.shape[1] != t:
        raise ValueError(f"expected N x {t} x S x S frames, got shape {frames.shape}")
    n = frames.shape[0]
    blob = time_major(np.stack([net_input(f, loaded.crop) for f in frames]))   # (T*N) x 3 x C x C
    net = loaded.net
    net.blobs[FRAMES_BLOB].reshape(*blob.shape)
    net.blobs[FRAMES_BLOB].data[...] = blob
    if CONT_BLOB in net.blobs:                                           # CNN + Reg has no LSTM
        net.blobs[CONT_BLOB].reshape(t, n)
        net.blobs[CONT_BLOB].data[...] = sequence_starts(t, n)
    net.reshape()
    out = net.forward()[OUTPUT_BLOB]
    if out.size != t * n:
        raise ValueError(f"'{OUTPUT_BLOB}' has shape {out.shape}, expected {t} x {n} (x 1)")
    return np.array(out.reshape(t, n).T, dtype=np.float64)              # T x N -> N x T


def check_rows(loaded: LoadedNet, contract: SequenceContract, where) -> None:
    """An error unless prepared data of contract has the steps, frame size and physical geometry
    (mm_per_px, crop) the net was trained on."""
    loaded.contract.check(contract, where, ("steps", "stored_size", "mm_per_px", "crop"),
                          what="model was trained on")


def predict_rows(loaded: LoadedNet, rows: dict, batch: int = 1, method: str = "fit",
                 progress=None, augment: bool = False,
                 prior: SystolePrior | None = None) -> list[dict]:
    """Per-sequence records (true and predicted ED/ES, 0-based original frames) for prepared rows
    (prior: labels.SystolePrior for the fit decoders, None for none)."""
    frames = rows["frames"]
    t, size = loaded.contract.steps, loaded.contract.stored_size
    if frames.shape[1:] != (t, size, size):
        raise ValueError(f"prepared frames are {frames.shape[1:]}, the model was trained on "
                         f"{t} x {size} x {size}")
    records = []
    for start in range(0, len(frames), batch):
        stop = min(start + batch, len(frames))
        tic = time.perf_counter()
        curves = forward_steps(loaded, frames[start:stop], augment)
        decoded = [decode_detail(c, int(rows["n_frames"][i]), loaded.contract.label, method,
                                 prior=prior)
                   for c, i in zip(curves, range(start, stop))]
        per_seq = (time.perf_counter() - tic) / (stop - start)
        for i, curve, d in zip(range(start, stop), curves, decoded):
            records.append(_row_record(rows, i, d, per_seq, curve))
        if progress is not None:
            progress.update(stop - start)
    return records


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _row_record(rows, i, decoded, time_s, curve) -> dict:
    rec = {"seq_id": _text(rows["seq_id"][i]), "n_frames": int(rows["n_frames"][i]),
           "ed_true": int(rows["ed"][i]), "es_true": int(rows["es"][i]),
           "ed_pred": decoded.ed, "es_pred": decoded.es, "confidence": decoded.confidence,
           "time_s": float(time_s),
           "curve": [float(v) for v in curve]}
    if "group" in rows:
        rec["group"] = _text(rows["group"][i])
    if "label" in rows:
        rec["label"] = [float(v) for v in rows["label"][i]]
    return rec


def predict_sequence(loaded: LoadedNet, seq, method: str = "fit", crop=None,
                     augment: bool = False, prior: SystolePrior | None = None) -> dict:
    """ED/ES (0-based original frames) of one CineSequence, with its step curve and time.

    A physical contract (mm_per_px) needs `crop`, the sequence's (spacing, HeartCrop, spacing
    source) from tempregnet.detection.loaded_sequences; the result then holds its crop record.
    The R wave's position (fit_rwave, fit_trigger) comes from seq.meta.
    """
    tic = time.perf_counter()
    if loaded.contract.physical:
        if crop is None:
            raise ValueError("a model trained on fixed-mm frames needs the sequence's crop")
        steps = physical_steps(seq.frames, crop[0], crop[1].centre_px, loaded.contract,
                               where=seq.seq_id)
    else:
        steps = sequence_to_steps(seq.frames, loaded.contract, where=seq.seq_id)  # T x S x S
    t_pre = time.perf_counter()
    curve = forward_steps(loaded, steps[None], augment)[0]
    t_fwd = time.perf_counter()
    decoded = decode_detail(curve, seq.n_frames, loaded.contract.label, method,
                            rwave=float((seq.meta or {}).get(RWAVE_KEY) or 0.0), prior=prior)
    t_end = time.perf_counter()
    result = {"ed": decoded.ed, "es": decoded.es, "confidence": decoded.confidence,
              "decoded": decoded, "time_s": t_end - tic, "curve": curve, "steps": steps,
              "stage_s": {"preprocess": t_pre - tic, "forward": t_fwd - t_pre,
                          "decode": t_end - t_fwd}}
    if loaded.contract.physical:
        result["crop"] = crop_record(seq.seq_id, crop[0], crop[2], crop[1])
    return result


def stack_key(rec: dict):
    """Sequences that share one ED/ES: the slices of one patient's cine stack (same group and T)."""
    return rec.get("group"), rec["n_frames"]


def standardised(curves) -> np.ndarray:
    """Each curve (last axis) shifted to zero mean and scaled to unit variance; a flat one stays 0."""
    c = np.asarray(curves, dtype=np.float64)
    spread = c.std(axis=-1, keepdims=True)
    return (c - c.mean(axis=-1, keepdims=True)) / np.where(spread > 0, spread, 1.0)


def fit_share(z: np.ndarray, n_frames: int, convention: str) -> float:
    """How much of a standardised curve its best Eq. 4 placement explains (R^2, 0..1)."""
    total = float(np.sum((z - z.mean()) ** 2))
    if total <= 0.0:
        return 0.0
    fit = template_fit(z, n_frames, convention)
    return float(max(0.0, 1.0 - fit.rss[fit.best] / total))


def decode_stacks(records: list[dict], convention: str, method: str = "fit",
                  detail: bool = False, weights: str = "equal",
                  prior: SystolePrior | None = None) -> list[dict]:
    """Stack-level decoding (not the paper's): ED/ES are phases of the whole cine stack, so the
    predicted curves of its slices, each standardised (zero mean, unit variance), are averaged
    and decoded once; every slice gets that pair and its confidence (of the mean curve:
    labels.decode_detail). weights "equal": the plain mean; "fit": each slice weighted by the
    share of its curve its own Eq. 4 fit explains (fit_share), so slices whose curves do not look
    like a cycle (apex, base, out of plane) count less. detail: also the labels.Decoded, the mean
    curve (stack_curve) and the standardised curves (stack_curves), for plots. Records without a
    group stay on their own. A record's "rwave" (the R wave's position in frames, data_prep.rwave;
    0 where absent) places ED for the decoders that use it: the median over the stack. Returns new
    records (the inputs are not changed); each keeps its own curve."""
    if weights not in STACK_WEIGHTS:
        raise ValueError(f"unknown stack weighting {weights!r}; expected one of {STACK_WEIGHTS}")
    members: dict = {}
    for i, rec in enumerate(records):
        key = stack_key(rec) if rec.get("group") is not None else ("", i)
        members.setdefault(key, []).append(i)
    out = [dict(r) for r in records]
    for key, idx in members.items():
        n_frames = int(records[idx[0]]["n_frames"])
        z = standardised([records[i]["curve"] for i in idx])
        tic = time.perf_counter()
        w = np.ones(len(idx))
        if weights == "fit":
            w = np.array([fit_share(c, n_frames, convention) for c in z])
            w = w if w.sum() > 0 else np.ones(len(idx))
        mean = (w[:, None] * z).sum(axis=0) / w.sum()
        rwave = float(np.median([records[i].get("rwave", 0.0) for i in idx]))
        decoded = decode_detail(mean, n_frames, convention, method, rwave=rwave, prior=prior)
        share = (time.perf_counter() - tic) / len(idx)
        for i in idx:
            out[i].update(ed_pred=decoded.ed, es_pred=decoded.es,
                          confidence=decoded.confidence, time_s=records[i]["time_s"] + share,
                          stack_size=len(idx))
            if detail:
                out[i].update(decoded=decoded, stack_curve=mean, stack_curves=z)
    return out
