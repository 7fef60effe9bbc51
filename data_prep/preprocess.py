"""One cine sequence -> its stored row as the sequence contract says: 0-255 squash, square crop, cyclic
time steps, resize, Eq. 4 label."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from data_prep.errors import InputError
from data_prep.sequence import CineSequence
from tempregnet.contract import SequenceContract
from tempregnet.labels import cyclic_resample, step_positions, volume_label


@dataclass
class PreparedRow:
    """What one HDF5 row holds (docs/data.md, HDF5 layout)."""
    frames: np.ndarray        # n_steps x S x S uint8
    label: np.ndarray         # n_steps float32 (NaN when the sequence has no ED/ES)
    ed: int                   # original 0-based frame, -1 when unlabelled
    es: int
    n_frames: int
    seq_id: str
    group: str
    group_order: str = ""     # memory only: orders the fold assignment (not an HDF5 key)


def check_frames(frames: np.ndarray, where) -> None:
    """InputError for what no preprocessing can fix: wrong shape, NaN/inf, a constant frame."""
    if frames.ndim != 3 or min(frames.shape) < 1:
        raise InputError(where, f"expected T x H x W frames, got shape {frames.shape}")
    if frames.shape[0] < 2:
        raise InputError(where, f"a cine needs at least 2 frames, got {frames.shape[0]}")
    flat = frames.reshape(frames.shape[0], -1)
    top, bottom = flat.max(axis=1), flat.min(axis=1)     # NaN and +-inf show in these
    if not (np.isfinite(top).all() and np.isfinite(bottom).all()):
        t = int(np.argwhere(~np.isfinite(flat).all(axis=1))[0, 0])
        raise InputError(where, f"NaN or infinite pixel values (first in frame {t})")
    constant = np.flatnonzero(top == bottom)
    if constant.size:
        raise InputError(where, f"constant image: frame {int(constant[0])} has a single value"
                                + (f" ({constant.size} such frames)" if constant.size > 1 else ""))


def squash_range(frames: np.ndarray, percentiles, stride: int) -> tuple[float, float]:
    """The per-sequence intensity range: the given percentiles (robust: a few bright pixels of fat
    or flow do not set it) of the original frames' pixels, every stride-th row and column."""
    sample = frames[:, ::stride, ::stride]
    lo, hi = np.percentile(sample, percentiles)
    if hi <= lo:                    # mostly one value (e.g. a large black background): use the range
        lo, hi = float(frames.min()), float(frames.max())
    return float(lo), float(hi)


def squash(frames: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map [lo, hi] linearly onto [0, 255], round, clip outside, as uint8."""
    return np.clip(np.rint((frames - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def centre_square(frames: np.ndarray, roi: float = 1.0) -> np.ndarray:
    """Centre crop T x H x W to T x m x m, m = roi x min(H, W) (keeps the aspect ratio; the heart is central).

    roi < 1 keeps the central part of the field of view, for small nets whose input would
    otherwise show the heart a few pixels wide; 1 (the default) is the paper's whole frame.
    """
    if not 0 < roi <= 1:
        raise ValueError(f"roi must be in (0, 1], got {roi}")
    h, w = frames.shape[1:]
    side = max(1, int(round(min(h, w) * roi)))
    y0, x0 = (h - side) // 2, (w - side) // 2
    return frames[:, y0:y0 + side, x0:x0 + side]


def resample_cycle(frames: np.ndarray, n_steps: int) -> np.ndarray:
    """n_steps frames at step_positions(T, n_steps): cyclic linear interpolation (last frame -> first)."""
    return cyclic_resample(frames, step_positions(frames.shape[0], n_steps), np.float32)


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """Each square frame to size x size: area averaging to shrink, bilinear to enlarge."""
    if frames.shape[1] == size:
        return frames
    method = cv2.INTER_AREA if frames.shape[1] > size else cv2.INTER_LINEAR
    return np.stack([cv2.resize(f, (size, size), interpolation=method) for f in frames])


def sequence_to_steps(frames: np.ndarray, contract: SequenceContract, where="sequence") -> np.ndarray:
    """T x H x W scanner frames -> steps x S x S uint8, the stored form of a "centre square"
    contract (physical contracts: data_prep.scale.physical_steps, which needs the crop)."""
    if contract.physical:
        raise ValueError("a physical contract (mm_per_px) needs the pixel spacing and crop: "
                         "data_prep.physical.stack_steps")
    frames = np.asarray(frames, dtype=np.float32)
    check_frames(frames, where)
    lo, hi = squash_range(frames, contract.squash_percentiles, contract.percentile_stride)
    x = centre_square(frames, contract.roi)    # range from the original frames; then the
    x = resample_cycle(x, contract.steps)      # crop, time resampling, resize and the squash's
    x = resize_frames(x, contract.stored_size)  # affine map are linear, so this order (cheapest)
    return squash(x, lo, hi)                   # equals any other; only the final clip is not


def step_label(n_frames: int, ed, es, n_steps: int, convention: str) -> np.ndarray:
    """Eq. 4 at the step positions, float32; NaN for an unlabelled sequence."""
    if ed is None or es is None:
        return np.full(n_steps, np.nan, np.float32)
    return volume_label(step_positions(n_frames, n_steps), n_frames, ed, es, convention).astype(np.float32)


def prepare_sequence(seq: CineSequence, contract: SequenceContract, where="sequence") -> PreparedRow:
    """A CineSequence -> its HDF5 row; InputError for bad frames or labels."""
    return row_from_steps(seq, sequence_to_steps(seq.frames, contract, where), contract, where)


def row_from_steps(seq: CineSequence, frames: np.ndarray, contract: SequenceContract,
                   where) -> PreparedRow:
    """The HDF5 row of a sequence whose stored frames are made: Eq. 4 label and ids added."""
    try:
        label = step_label(seq.n_frames, seq.ed, seq.es, contract.steps, contract.label)
    except ValueError as exc:           # volume_label's own checks (range, ED == ES)
        raise InputError(where, f"bad ED/ES labels: {exc}") from None
    return PreparedRow(frames, label, -1 if seq.ed is None else int(seq.ed),
                       -1 if seq.es is None else int(seq.es), seq.n_frames, seq.seq_id, seq.group,
                       seq.group_order)
