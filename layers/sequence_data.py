"""Caffe Python data layer: whole prepared sequences from an HDF5 list, as time-major blobs."""
from __future__ import annotations

import json

import caffe
import cv2
import numpy as np

from data_prep.errors import InputError
from data_prep.hdf5 import load_rows
from tempregnet.contract import read_list_contract
from tempregnet.labels import CONVENTIONS, cyclic_resample, volume_label
from tempregnet.net_input import ZF_MEAN, crop_offset, net_input, sequence_starts, time_major

# param_str keys (JSON object) and their defaults; None = required.
DEFAULTS = {
    "source": None,       # list file: one "<h5 path relative to the list> <row>" per line
    "batch_size": None,   # N, sequences per batch
    "crop": None,         # network input side C (<= stored frame side S)
    # What the net expects of the data, checked against the listed files' sequence contract:
    "n_steps": None,      # T, the steps the net is unrolled over
    "stored_size": None,  # S, the stored frame side the crop is taken from
    "label": None,        # Eq. 4 convention of the labels ("cycle" or "paper")
    "mean": list(ZF_MEAN),  # per-channel mean subtracted after replicating grey to 3 channels
    "train": False,       # True: shuffle every epoch and random crop per sequence; else centre, list order
    "seed": 0,            # seed of the shuffling, cropping and rolling
    # Training only: start each sequence at a random step, frames and label rolled together. Valid
    # for "cycle" labels only (a prepared sequence is one period; docs/deviations.md): it shows
    # the net every phase at the sequence start, which sequences that start mid-cycle need.
    "roll": False,
    # Training only: flip each sequence left-right and/or up-down at random (the same for all its
    # frames), as Caffe's own `mirror` transform does left-right. Valid for any label.
    "flip": False,
    # Training only: stretch or shrink each sequence's systole by a random factor exp(U[-w, w])
    # and its diastole to fill the rest of the cycle (frames blended linearly between steps,
    # Eq. 4 relabelled at the new ES). ES then falls at a different step every time, so the
    # net cannot learn its timing from the step index alone and must read it from the images.
    # 0 = off. The label convention is read from the prepared files.
    "warp": 0.0,
    # Training only: rotate each sequence about the frame centre by U[-r, r] degrees and zoom it
    # by exp(U[-z, z]) (the same for all its frames, before the crop; borders reflected), so the
    # net sees more hearts than the training patients have. 0 = off.
    "rotate": 0.0,
    "zoom": 0.0,
    # Training only: raise each sequence's grey values (0-255, as stored) to a random power
    # exp(U[-g, g]) (the same for all its frames), for scanners and windows other than the
    # training patients'. 0 = off.
    "gamma": 0.0,
}


def parse_param_str(param_str: str) -> dict:
    """Validated settings from the layer's param_str JSON (unknown keys and missing required ones rejected)."""
    try:
        given = json.loads(param_str or "{}")
    except json.JSONDecodeError as err:
        raise ValueError(f"SequenceData: param_str is not JSON ({err}): {param_str!r}") from None
    if not isinstance(given, dict):
        raise ValueError(f"SequenceData: param_str must be a JSON object, got {param_str!r}")
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"SequenceData: unknown param_str keys {unknown}; known: {sorted(DEFAULTS)}")
    params = {**DEFAULTS, **given}
    missing = sorted(k for k, v in params.items() if v is None)
    if missing:
        raise ValueError(f"SequenceData: param_str lacks required keys {missing}")
    for key in ("batch_size", "crop", "n_steps", "stored_size"):
        if not isinstance(params[key], int) or params[key] < 1:
            raise ValueError(f"SequenceData: {key} must be a positive integer, got {params[key]!r}")
    if params["label"] not in CONVENTIONS:
        raise ValueError(f"SequenceData: label must be one of {CONVENTIONS}, got {params['label']!r}")
    if params["roll"] and params["label"] != "cycle":
        raise ValueError("SequenceData: roll needs 'cycle' labels (a rolled 'paper' label is not "
                         "Eq. 4 of the rolled sequence)")
    for key in ("roll", "flip"):
        if not isinstance(params[key], bool):
            raise ValueError(f"SequenceData: {key} must be true or false, got {params[key]!r}")
        if params[key] and not params["train"]:
            raise ValueError(f"SequenceData: {key} is a training augmentation; it needs train: true")
    for key, top in (("warp", 1), ("rotate", 180), ("zoom", 1), ("gamma", 1)):
        if isinstance(params[key], bool) or not isinstance(params[key], (int, float)) \
                or not 0 <= params[key] <= top:
            raise ValueError(f"SequenceData: {key} must be a number in [0, {top}], got {params[key]!r}")
        if params[key] and not params["train"]:
            raise ValueError(f"SequenceData: {key} is a training augmentation; it needs train: true")
    if len(params["mean"]) != 3:
        raise ValueError(f"SequenceData: mean must have 3 values (B, G, R), got {params['mean']!r}")
    return params


def load_sequences(list_file, n_steps: int, stored_size: int):
    """All listed rows in list order: frames M x T x S x S uint8, labels M x T float32, and
    ED/ES as step positions M x 2 (original frame k of n lies at step k * T / n)."""
    rows = load_rows(list_file)
    frames, labels = rows["frames"], rows["label"].astype(np.float32)
    phases = np.stack([rows["ed"], rows["es"]], axis=1) * (n_steps / rows["n_frames"][:, None])
    if frames.shape[1:] != (n_steps, stored_size, stored_size):
        raise InputError(list_file, f"frames have shape {frames.shape[1:]}, expected "
                                    f"{n_steps} x {stored_size} x {stored_size}")
    if labels.shape[1:] != (n_steps,) or not np.all(np.isfinite(labels)):
        raise InputError(list_file, f"labels must be finite, {n_steps} per sequence; got shape {labels.shape[1:]}")
    return frames, labels, phases


def warp_systole(frames: np.ndarray, ed: float, es: float, scale: float, convention: str):
    """One cycle on the step grid with its systole scaled by `scale`: (frames, Eq. 4 label).

    ED stays at its step position; ES moves to ED + scale x systole (kept at least one step from
    ED either way round the cycle, and before the last step for "paper" labels, which are not
    cyclic). Output step k shows the input at the source time that the piecewise-linear map
    (systole and diastole each stretched uniformly) sends it to, blended linearly between the
    two nearest stored steps. scale = 1 returns the input frames and the stored label.
    """
    t = len(frames)
    systole = (es - ed) % t
    top = t - 1.0 - ed if convention == "paper" else t - 1.0
    new_systole = float(np.clip(systole * scale, 1.0, max(top, 1.0)))
    phase = (np.arange(t) - ed) % t                              # output time since ED
    source = np.where(phase <= new_systole, phase * systole / new_systole,
                      systole + (phase - new_systole) * (t - systole) / (t - new_systole))
    blended = cyclic_resample(frames, (ed + source) % t)
    label = volume_label(np.arange(t), t, ed, (ed + new_systole) % t, convention)
    return np.rint(blended).astype(frames.dtype), label.astype(np.float32)


def rotate_zoom(frames: np.ndarray, degrees: float, scale: float) -> np.ndarray:
    """Frames T x S x S, each rotated by `degrees` (counter-clockwise) about the frame centre and
    zoomed by `scale` (bilinear, borders reflected); same dtype."""
    side = frames.shape[-1]
    centre = (side - 1) / 2.0
    matrix = cv2.getRotationMatrix2D((centre, centre), degrees, scale)
    out = [cv2.warpAffine(np.ascontiguousarray(f), matrix, (side, side), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT_101) for f in frames]
    return np.stack(out).astype(frames.dtype)


def gamma_curve(frames: np.ndarray, gamma: float) -> np.ndarray:
    """uint8 frames with each grey value g replaced by 255 (g / 255) ** gamma, rounded."""
    table = np.rint(255.0 * (np.arange(256) / 255.0) ** gamma).astype(np.uint8)
    return table[frames]


class SequenceData(caffe.Layer):
    """Tops: frames (T*N) x 3 x C x C (row t*N + n), cont T x N (0 at t = 0, else 1), label T x N.

    All listed sequences are loaded at setup. Training: a new random order each epoch, one random
    crop per sequence (the same for all its frames) and, with warp, roll, flip, rotate, zoom and
    gamma, a random systole length, start step, flips, rotation, zoom and grey-value curve;
    otherwise centre crops in list order, wrapping around.
    param_str keys: see DEFAULTS. The net's expectations (n_steps, stored_size, label) must equal
    the sequence contract of the listed files, so plain `caffe train` refuses data of another
    size, step count or convention, and rolled starts of labels that cannot be rolled.
    """

    def setup(self, bottom, top):
        if bottom or len(top) != 3:
            raise ValueError("SequenceData takes no bottoms and gives 3 tops (frames, cont, label)")
        self.params = parse_param_str(self.param_str)
        p = self.params
        contract = read_list_contract(p["source"])
        expected = contract.replace(steps=p["n_steps"], stored_size=p["stored_size"], label=p["label"])
        expected.check(contract, p["source"], ("steps", "stored_size", "label"), what="net expects")
        self.convention = contract.label
        self.frames, self.labels, self.phases = load_sequences(p["source"], p["n_steps"],
                                                               p["stored_size"])
        crop_offset(self.frames.shape[2], p["crop"])   # raises if crop > S
        self.rng = np.random.default_rng(self.params["seed"])
        self.order = np.arange(len(self.frames))
        self.cursor = len(self.order)   # start a fresh epoch on the first batch

    def reshape(self, bottom, top):
        t, n, c = self.params["n_steps"], self.params["batch_size"], self.params["crop"]
        top[0].reshape(t * n, 3, c, c)
        top[1].reshape(t, n)
        top[2].reshape(t, n)

    def next_indices(self) -> list[int]:
        """Sequence indices of the next batch (new epoch, shuffled when training, as needed)."""
        picked = []
        while len(picked) < self.params["batch_size"]:
            if self.cursor >= len(self.order):
                if self.params["train"]:
                    self.order = self.rng.permutation(len(self.frames))
                self.cursor = 0
            picked.append(int(self.order[self.cursor]))
            self.cursor += 1
        return picked

    def forward(self, bottom, top):
        t, n, c = self.params["n_steps"], self.params["batch_size"], self.params["crop"]
        inputs = np.empty((n, t, 3, c, c), np.float32)
        for slot, index in enumerate(self.next_indices()):
            rng = self.rng if self.params["train"] else None
            offset = crop_offset(self.frames.shape[2], c, rng)
            seq, label = self.frames[index], self.labels[index]
            if self.params["warp"]:
                scale = float(np.exp(self.rng.uniform(-self.params["warp"], self.params["warp"])))
                seq, label = warp_systole(seq, *self.phases[index], scale, self.convention)
            shift = int(self.rng.integers(t)) if self.params["roll"] else 0
            seq = np.roll(seq, -shift, axis=0)
            if self.params["flip"]:
                flip_x, flip_y = self.rng.integers(2, size=2)
                seq = seq[:, ::-1 if flip_y else 1, ::-1 if flip_x else 1]
            if self.params["rotate"] or self.params["zoom"]:
                degrees = self.rng.uniform(-self.params["rotate"], self.params["rotate"])
                scale = np.exp(self.rng.uniform(-self.params["zoom"], self.params["zoom"]))
                seq = rotate_zoom(seq, float(degrees), float(scale))
            if self.params["gamma"]:
                seq = gamma_curve(seq, float(np.exp(self.rng.uniform(-self.params["gamma"],
                                                                     self.params["gamma"]))))
            inputs[slot] = net_input(seq, c, self.params["mean"], offset)
            top[2].data[:, slot] = np.roll(label, -shift)
        top[0].data[...] = time_major(inputs)
        top[1].data[...] = sequence_starts(t, n)   # each batch column is a new sequence

    def backward(self, top, propagate_down, bottom):
        """No bottoms, nothing to propagate."""
