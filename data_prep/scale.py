"""Physical scale: the pixel size a sequence's header states, and frames resampled to a fixed mm grid.

Rows and columns may have different spacings (DICOM PixelSpacing is [row, column] spacing, i.e.
the distance between rows, then between columns). What counts as "no pixel size" (the readers
decide, and say why in SPACING_NOTE_KEY): a DICOM image with neither PixelSpacing nor
ImagerPixelSpacing (nor a per-frame PixelMeasuresSequence), or one whose value is not two numbers;
a NIfTI header whose spatial units are unknown and whose pixdim[1:4] is exactly 1, 1, 1 (the
placeholder converters write when they know none; 21 of the ACDC copy's 50 patients). Anything
else stated is a pixel size: NIfTI 1 x 1 x 1 in mm, unknown units with other values (read as mm),
and values outside PLAUSIBLE_MM are one InputError (a broken header, not a missing one). Where the
header has none, the caller's --input-mm-per-px is used ("override"), else the stack's pixel size
is estimated from its images (data_prep.pixel_size, in data_prep.physical.stack_crops).
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


SPACING_SOURCES = ("header", "override", "estimated")   # where a sequence's pixel size came from


def resolve_spacing(seq, override_mm: float | None, where):
    """((row, column) mm per pixel, 'header' | 'override'), or (None, why the header has none)
    where it has none and no override is given; InputError for an implausible header value."""
    spacing = header_spacing(seq)
    if spacing is not None:
        lo, hi = PLAUSIBLE_MM
        if not all(np.isfinite(spacing)) or not all(lo <= s <= hi for s in spacing):
            raise InputError(where, f"implausible pixel spacing {spacing} mm in the header")
        return spacing, "header"
    if override_mm is not None:
        return (float(override_mm), float(override_mm)), "override"
    return None, (seq.meta or {}).get(SPACING_NOTE_KEY) or "no pixel spacing in the header"


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
