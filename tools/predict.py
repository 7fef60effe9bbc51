"""Run a deploy net over prepared rows or CineSequences and decode ED/ES in original frames.

Time per sequence = wall time of (stored frames -> net input, forward, decode) for a batch,
divided by the sequences in it; for CineSequences it also includes resampling and resizing.
With the default batch of 1 it is the latency for one sequence, as the paper's 1.4 s.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep.errors import InputError
from data_prep.labels import CONVENTIONS, decode_steps
from data_prep.hdf5 import load_rows  # noqa: F401  (re-exported: the tools load rows from here)
from data_prep.net_input import net_input
from data_prep.preprocess import sequence_to_steps
from data_prep.rwave import RWAVE_KEY
from data_prep.scale import SCALE_KEYS, physical_steps
from models.config import N_STEPS

# Keep Caffe's net dump off the console; takes effect if this module is imported before caffe.
os.environ.setdefault("GLOG_minloglevel", "2")

FRAMES_BLOB, CONT_BLOB, OUTPUT_BLOB = "frames", "cont", "volume_pred"   # README, Blobs


@dataclass
class LoadedNet:
    """A deploy net and what is needed to feed it and read it."""
    net: object
    crop: int
    stored_size: int | None
    convention: str
    roi: float                  # central field-of-view fraction the training frames kept
    description: dict           # non-identifying provenance: config, variant, weights file name
    scale: dict = dataclasses.field(default_factory=dict)  # physical geometry (data_prep.scale)

    @property
    def physical(self) -> bool:
        """True when the training frames were a fixed-mm square (prepare --field-mm)."""
        return self.scale.get("field_mm") is not None


def load_net(deploy, weights, crop: int | None = None, convention: str = "cycle",
             stored_size: int | None = None, roi: float = 1.0, gpu: int | None = None,
             description: dict | None = None, scale: dict | None = None) -> LoadedNet:
    """A caffe.Net in TEST phase from a deploy prototxt and a caffemodel."""
    import caffe
    for path, what in ((deploy, "deploy prototxt"), (weights, "caffemodel")):
        if not Path(path).is_file():
            raise InputError(path, f"{what} not found")
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown label convention {convention!r}; expected one of {CONVENTIONS}")
    if gpu is None:
        caffe.set_mode_cpu()
    else:
        caffe.set_device(gpu)
        caffe.set_mode_gpu()
    net = caffe.Net(str(deploy), caffe.TEST, weights=str(weights))
    if FRAMES_BLOB not in net.blobs or OUTPUT_BLOB not in net.blobs:
        raise InputError(deploy, f"deploy net lacks the '{FRAMES_BLOB}' input or "
                                 f"'{OUTPUT_BLOB}' output blob")
    if crop is None:
        crop = int(net.blobs[FRAMES_BLOB].shape[-1])
    desc = {"deploy": Path(deploy).name, "weights": Path(weights).name, "crop": crop,
            "label_convention": convention, "mode": "cpu" if gpu is None else f"gpu{gpu}"}
    desc.update(description or {})
    scale = dict(scale or {})
    if scale.get("field_mm") is not None:
        desc.update(field_mm=scale["field_mm"], mm_per_px=scale["mm_per_px"], crop_method=scale["crop"])
    return LoadedNet(net, crop, stored_size, convention, roi, desc, scale)


def read_settings(run_dir) -> dict:
    """settings.json of a training run directory."""
    path = Path(run_dir) / "settings.json"
    if not path.is_file():
        raise InputError(run_dir, "not a training run directory (no settings.json)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(path, f"unreadable JSON ({err.msg})") from None


def final_model_path(run_dir) -> Path:
    """The caffemodel named by a run's final_model.txt (relative paths are to the run dir)."""
    run_dir = Path(run_dir)
    pointer = run_dir / "final_model.txt"
    if not pointer.is_file():
        raise InputError(run_dir, "training run has no final_model.txt (not finished?)")
    model = Path(pointer.read_text().strip())
    return model if model.is_absolute() else run_dir / model


def _setting(settings: dict, *names, default=None):
    for name in names:
        if settings.get(name) is not None:
            return settings[name]
    return default


def deploy_path(run_dir) -> Path:
    """The run's deploy prototxt: deploy.prototxt, else the one *_deploy.prototxt tools.train writes."""
    run_dir = Path(run_dir)
    if (run_dir / "deploy.prototxt").is_file():
        return run_dir / "deploy.prototxt"
    found = sorted(run_dir.glob("*_deploy.prototxt"))
    if len(found) != 1:
        raise InputError(run_dir, f"expected one deploy prototxt in the run dir, found {len(found)}")
    return found[0]


def _prepared_parameters(settings: dict) -> dict:
    """Preprocessing parameters of the data a run was trained on: recorded in its settings by
    tools/train.py, else read from the dataset's provenance, else none (defaults apply)."""
    if "data_parameters" in settings:
        return settings["data_parameters"]
    from data_prep.hdf5 import load_provenance
    try:
        return load_provenance(settings["data"]).get("parameters", {}) if settings.get("data") else {}
    except InputError:                      # dataset moved or gone: fall back to the defaults
        return {}


def load_run(run_dir, gpu: int | None = None) -> LoadedNet:
    """The deploy net of a training run dir with its final weights, crop and label convention.

    Crop and stored size come from settings.json (or its net config); the label convention from
    settings.json, else from the provenance of the dataset it was trained on, else "cycle".
    """
    from models.config import CONFIGS
    run_dir = Path(run_dir)
    settings = read_settings(run_dir)
    config_name = settings.get("config")
    cfg = CONFIGS.get(config_name)
    prepared = _prepared_parameters(settings)
    stored = _setting(settings, "stored_size") or prepared.get("size") or (cfg and cfg.stored_size)
    crop = _setting(settings, "crop") or (cfg and cfg.crop)
    convention = (_setting(settings, "label", "label_convention", "convention")
                  or prepared.get("label") or "cycle")
    desc = {"run": run_dir.name, "config": config_name, "variant": settings.get("variant"),
            "iterations": settings.get("iters"), "imagenet_init": settings.get("imagenet_init"),
            "solver_mode": settings.get("solver_mode"), "fold": settings.get("fold")}
    return load_net(deploy_path(run_dir), final_model_path(run_dir), crop=crop,
                    convention=convention, stored_size=stored, roi=prepared.get("roi", 1.0), gpu=gpu,
                    description={k: v for k, v in desc.items() if v is not None},
                    scale={k: prepared.get(k) for k in SCALE_KEYS})


def forward_steps(loaded: LoadedNet, frames: np.ndarray) -> np.ndarray:
    """N x 20 x S x S uint8 stored frames -> N x 20 predicted curve (one forward pass)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[1] != N_STEPS:
        raise ValueError(f"expected N x {N_STEPS} x S x S frames, got shape {frames.shape}")
    n = frames.shape[0]
    blob = np.stack([net_input(f, loaded.crop) for f in frames])       # N x 20 x 3 x C x C
    blob = blob.transpose(1, 0, 2, 3, 4).reshape((N_STEPS * n,) + blob.shape[2:])  # row t*N + n
    net = loaded.net
    net.blobs[FRAMES_BLOB].reshape(*blob.shape)
    net.blobs[FRAMES_BLOB].data[...] = blob
    if CONT_BLOB in net.blobs:                                           # CNN + Reg has no LSTM
        cont = np.ones((N_STEPS, n), np.float32)
        cont[0] = 0                                                      # a new sequence per column
        net.blobs[CONT_BLOB].reshape(N_STEPS, n)
        net.blobs[CONT_BLOB].data[...] = cont
    net.reshape()
    out = net.forward()[OUTPUT_BLOB]
    if out.size != N_STEPS * n:
        raise ValueError(f"'{OUTPUT_BLOB}' has shape {out.shape}, expected {N_STEPS} x {n} (x 1)")
    return np.array(out.reshape(N_STEPS, n).T, dtype=np.float64)         # 20 x N -> N x 20


def predict_rows(loaded: LoadedNet, rows: dict, batch: int = 1, method: str = "fit",
                 progress=None) -> list[dict]:
    """Per-sequence records (true and predicted ED/ES, 0-based original frames) for prepared rows."""
    frames = rows["frames"]
    if loaded.stored_size is not None and frames.shape[-1] != loaded.stored_size:
        raise ValueError(f"prepared frames are {frames.shape[-1]} px, the run was trained on "
                         f"{loaded.stored_size} px")
    records = []
    for start in range(0, len(frames), batch):
        stop = min(start + batch, len(frames))
        tic = time.perf_counter()
        curves = forward_steps(loaded, frames[start:stop])
        decoded = [decode_steps(c, int(rows["n_frames"][i]), loaded.convention, method)
                   for c, i in zip(curves, range(start, stop))]
        per_seq = (time.perf_counter() - tic) / (stop - start)
        for i, curve, (ed, es) in zip(range(start, stop), curves, decoded):
            records.append(_row_record(rows, i, ed, es, per_seq, curve))
        if progress is not None:
            progress.update(stop - start)
    return records


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _row_record(rows, i, ed, es, time_s, curve) -> dict:
    rec = {"seq_id": _text(rows["seq_id"][i]), "n_frames": int(rows["n_frames"][i]),
           "ed_true": int(rows["ed"][i]), "es_true": int(rows["es"][i]),
           "ed_pred": int(ed), "es_pred": int(es), "time_s": float(time_s),
           "curve": [float(v) for v in curve]}
    if "group" in rows:
        rec["group"] = _text(rows["group"][i])
    if "label" in rows:
        rec["label"] = [float(v) for v in rows["label"][i]]
    return rec


def predict_sequence(loaded: LoadedNet, seq, method: str = "fit", crop=None) -> dict:
    """ED/ES (0-based original frames) of one CineSequence, with its step curve and time.

    Physical models (loaded.physical) need `crop`, the sequence's (spacing, HeartCrop) from
    data_prep.physical.stack_crops; the others keep the central --roi square, as trained.
    """
    size = loaded.stored_size or loaded.crop
    tic = time.perf_counter()
    if loaded.physical:
        if crop is None:
            raise ValueError("a model trained on fixed-mm frames needs the sequence's crop")
        spacing, heart = crop[0], crop[1]
        steps = physical_steps(seq.frames, spacing, heart.centre_px, loaded.scale["field_mm"],
                               size, N_STEPS, where=seq.seq_id)
    else:
        steps = sequence_to_steps(seq.frames, size, where=seq.seq_id, roi=loaded.roi)  # 20 x S x S
    curve = forward_steps(loaded, steps[None])[0]
    ed, es = decode_steps(curve, seq.n_frames, loaded.convention, method,
                          rwave=float((seq.meta or {}).get(RWAVE_KEY) or 0.0))
    return {"ed": int(ed), "es": int(es), "time_s": time.perf_counter() - tic,
            "curve": curve, "steps": steps}


def stack_key(rec: dict):
    """Sequences that share one ED/ES: the slices of one patient's cine stack (same group and T)."""
    return rec.get("group"), rec["n_frames"]


def decode_stacks(records: list[dict], convention: str = "cycle", method: str = "fit") -> list[dict]:
    """Stack-level decoding (not the paper's): ED/ES are phases of the whole cine stack, so the
    predicted curves of its slices, each standardised (zero mean, unit variance), are averaged
    and decoded once; every slice gets that pair. Records without a group stay on their own.
    Returns new records (the inputs are not changed); each keeps its own curve."""
    members: dict = {}
    for i, rec in enumerate(records):
        key = stack_key(rec) if rec.get("group") is not None else ("", i)
        members.setdefault(key, []).append(i)
    out = [dict(r) for r in records]
    for key, idx in members.items():
        curves = np.array([records[i]["curve"] for i in idx], dtype=np.float64)
        spread = curves.std(axis=1, keepdims=True)
        z = (curves - curves.mean(axis=1, keepdims=True)) / np.where(spread > 0, spread, 1.0)
        tic = time.perf_counter()
        ed, es = decode_steps(z.mean(axis=0), int(records[idx[0]]["n_frames"]), convention, method)
        share = (time.perf_counter() - tic) / len(idx)
        for i in idx:
            out[i].update(ed_pred=int(ed), es_pred=int(es), time_s=records[i]["time_s"] + share,
                          stack_size=len(idx))
    return out
