"""Physical scale: the pixel size a sequence's header states, and frames resampled to a fixed mm grid.

Rows and columns may have different spacings (DICOM PixelSpacing is [row, column] spacing, i.e.
the distance between rows, then between columns). A header that states no spacing, or only the
NIfTI placeholder 1 x 1 x 1 with unknown units (what a converter writes when it knows none; about
40% of the ACDC copy), has none: the caller's --input-mm-per-px is used, else one InputError.
"""
from __future__ import annotations

import cv2
import numpy as np

from data_prep.errors import InputError

SPACING_KEY = "pixel_spacing_mm"        # CineSequence.meta: (row, column) spacing in mm, or None
SPACING_NOTE_KEY = "pixel_spacing_note"  # why a reader gave none (e.g. the 1 x 1 x 1 placeholder)
PLAUSIBLE_MM = (0.1, 10.0)              # a cine MRI pixel outside this is a broken header


def header_spacing(seq) -> tuple[float, float] | None:
    """(row, column) mm per pixel a reader found in the header, or None."""
    value = (seq.meta or {}).get(SPACING_KEY)
    return None if value is None else (float(value[0]), float(value[1]))


def resolve_spacing(seq, fallback_mm: float | None, where) -> tuple[tuple[float, float], str]:
    """((row, column) mm per pixel, 'header' | 'fallback'); InputError where neither exists."""
    spacing = header_spacing(seq)
    if spacing is not None:
        lo, hi = PLAUSIBLE_MM
        if not all(np.isfinite(spacing)) or not all(lo <= s <= hi for s in spacing):
            raise InputError(where, f"implausible pixel spacing {spacing} mm in the header")
        return spacing, "header"
    if fallback_mm is None:
        note = (seq.meta or {}).get(SPACING_NOTE_KEY) or "no pixel spacing in the header"
        raise InputError(where, f"{note}; pass --input-mm-per-px <its pixel size in mm> to say it")
    return (float(fallback_mm), float(fallback_mm)), "fallback"


def crop_box(centre_px, side_mm: float, spacing) -> tuple[int, int, int, int]:
    """(row0, col0, rows, cols) of the input pixels covering a side_mm square around centre_px."""
    rows = max(1, int(round(side_mm / spacing[0])))
    cols = max(1, int(round(side_mm / spacing[1])))
    r0 = int(round(centre_px[0] - rows / 2.0))
    c0 = int(round(centre_px[1] - cols / 2.0))
    return r0, c0, rows, cols


def crop_padded(frames: np.ndarray, box, fill: float) -> np.ndarray:
    """T x rows x cols window of T x H x W frames; parts outside the image are `fill`."""
    r0, c0, rows, cols = box
    t, h, w = frames.shape
    out = np.full((t, rows, cols), fill, dtype=frames.dtype)
    ir0, ic0 = max(r0, 0), max(c0, 0)
    ir1, ic1 = min(r0 + rows, h), min(c0 + cols, w)
    if ir1 > ir0 and ic1 > ic0:
        out[:, ir0 - r0:ir1 - r0, ic0 - c0:ic1 - c0] = frames[:, ir0:ir1, ic0:ic1]
    return out


def resize_to(frames: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Each frame to rows x cols: area averaging to shrink, bilinear to enlarge."""
    if frames.shape[1:] == (rows, cols):
        return frames
    shrink = rows * cols < frames.shape[1] * frames.shape[2]
    method = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return np.stack([cv2.resize(f, (cols, rows), interpolation=method) for f in frames])


def to_mm_grid(frames: np.ndarray, spacing, mm_per_px: float) -> np.ndarray:
    """Whole frames resampled to square pixels of mm_per_px (rounded to whole pixels)."""
    rows = max(1, int(round(frames.shape[1] * spacing[0] / mm_per_px)))
    cols = max(1, int(round(frames.shape[2] * spacing[1] / mm_per_px)))
    return resize_to(np.asarray(frames, np.float32), rows, cols)


# --- the physical path of the stored frames (contract.mm_per_px given) ---------------------------

RESAMPLE = ("a mm_per_px x stored_size mm square around the crop centre (whole input pixels, "
            "outside the image = the window's 1st percentile), cv2 INTER_AREA / INTER_LINEAR to "
            "stored_size; squash percentiles from the in-image part of the window")


def physical_steps(frames: np.ndarray, spacing, centre_px, contract, where="sequence") -> np.ndarray:
    """T x H x W scanner frames -> steps x S x S uint8: the contract's mm square around centre_px."""
    from data_prep.preprocess import check_frames, resample_cycle, squash, squash_range
    frames = np.asarray(frames, dtype=np.float32)
    check_frames(frames, where)
    field_mm, size = contract.field_mm, contract.stored_size
    box = crop_box(centre_px, field_mm, spacing)
    r0, c0, rows, cols = box
    inside = frames[:, max(r0, 0):max(r0 + rows, 0), max(c0, 0):max(c0 + cols, 0)]
    if inside.size == 0:
        raise InputError(where, f"crop centre {centre_px} puts the {field_mm:g} mm window "
                                f"outside the image")
    lo, hi = squash_range(inside, contract.squash_percentiles, contract.percentile_stride)
    hi = hi if hi > lo else lo + 1.0          # a window of one value: keep it, all black
    x = crop_padded(frames, box, lo)
    x = resample_cycle(x, contract.steps)
    x = resize_to(x, size, size)
    return squash(x, lo, hi)
