"""Find the left ventricle in a cine: where the image changes over the cycle, a bright round pool.

Method (docs/scale-and-crop.md): on a WORK_MM grid, the first temporal harmonic |H1| of the
frames is large where blood and myocardium swap over the cycle (both ventricles' walls); the
temporal mean shows the LV blood pool as a bright disc inside a dark myocardial ring. Over disc
radii RADII_MM the score is the smallest (disc mean - ring sector mean) over SECTORS sectors
(> 0), x sqrt(mean |H1| over the disc and its wall), x where the heart beats (|H1| smoothed by
HEART_SIGMA_MM) x a prior towards the image centre (the heart is planned near the isocentre).
A patient's slices vote (find_stack). The best disc gives the centre; the crop is a square of
fixed side in mm around it. No labels and no training.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np
import scipy.fft

from data_prep.scale import to_mm_grid

WORK_MM = 3.0                                   # analysis grid (mm per pixel)
RADII_MM = (9.0, 12.0, 15.0, 19.0, 24.0, 30.0, 36.0)  # LV blood-pool radii tried (mm)
RING_MM = (3.0, 11.0)                           # myocardial ring: from r + 3 to r + 11 mm
SIZE_POWER = 0.0                                # score x r^p (p = 1 favoured discs around LV + RV)
SECTORS = 8                                     # ring sectors the pool must outshine each
WALL_MM = 6.0                                   # |H1| is averaged over the disc and this much wall
HEART_SIGMA_MM = 20.0                          # |H1| smoothed this much: where the heart beats
STACK_SIGMA_MM = 15.0                          # a slice's LV lies this near the stack's (sigma)
CENTRE_SIGMA_MM = 60.0                         # prior: the heart is planned near the isocentre
PERCENTILES = (1.0, 99.0)


@dataclass(frozen=True)
class HeartCrop:
    """An LV-centred square: centre (row, col) in input pixels and in mm, radius found, side."""
    centre_px: tuple[float, float]
    centre_mm: tuple[float, float]             # from the top-left pixel centre, mm
    radius_mm: float                           # blood-pool radius of the best disc
    side_mm: float                             # crop side
    score: float

    def as_dict(self) -> dict:
        """Non-identifying numbers for outputs (positions in the image, no patient data)."""
        return {"centre_mm": [round(v, 1) for v in self.centre_mm],
                "centre_px": [round(v, 1) for v in self.centre_px],
                "radius_mm": self.radius_mm, "side_mm": self.side_mm}


def _disc(radius_px: float) -> np.ndarray:
    n = int(np.ceil(radius_px))
    yy, xx = np.mgrid[-n:n + 1, -n:n + 1]
    k = (yy * yy + xx * xx <= radius_px * radius_px).astype(np.float32)
    return k / k.sum()


def _sectors(inner_px: float, outer_px: float, n: int) -> list[np.ndarray]:
    """The ring split into n equal angular sectors, each a mean kernel."""
    m = int(np.ceil(outer_px))
    yy, xx = np.mgrid[-m:m + 1, -m:m + 1]
    d2 = yy * yy + xx * xx
    ring = (d2 > inner_px * inner_px) & (d2 <= outer_px * outer_px)
    sector = np.floor((np.arctan2(yy, xx) + np.pi) / (2 * np.pi) * n).astype(int) % n
    out = []
    for k in range(n):
        kernel = (ring & (sector == k)).astype(np.float32)
        out.append(kernel / kernel.sum())
    return out


def _filter(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """cv2.filter2D with reflected borders (the reference _filter_bank is checked against)."""
    return cv2.filter2D(image, cv2.CV_32F, kernel, borderType=cv2.BORDER_REFLECT)


def _bank_kernels() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The mean image's kernels (per radius: the disc, then SECTORS ring sectors) and the |H1|
    image's (per radius: the disc with its wall), in RADII_MM order."""
    on_mean, on_h1 = [], []
    for r_mm in RADII_MM:
        r = r_mm / WORK_MM
        on_mean.append(_disc(r))
        on_mean += _sectors(r + RING_MM[0] / WORK_MM, r + RING_MM[1] / WORK_MM, SECTORS)
        on_h1.append(_disc(r + WALL_MM / WORK_MM))
    return on_mean, on_h1


@functools.lru_cache(maxsize=8)
def _bank_spectra(shape: tuple[int, int], which: int) -> tuple[np.ndarray, int, tuple]:
    """(conjugate spectra of kernel bank `which` (0: mean, 1: |H1|) on a grid of `shape` padded
    by the largest kernel's reach, that reach, the FFT size)."""
    kernels = _bank_kernels()[which]
    pad = max(k.shape[0] // 2 for k in kernels)
    size = tuple(scipy.fft.next_fast_len(n + 2 * pad, real=True) for n in shape)
    out = np.empty((len(kernels), size[0], size[1] // 2 + 1), np.complex64)
    for i, k in enumerate(kernels):
        a = k.shape[0] // 2
        wrapped = np.zeros(size, np.float32)       # kernel centre at index 0 (circular)
        wrapped[np.ix_((np.arange(k.shape[0]) - a) % size[0], (np.arange(k.shape[1]) - a) % size[1])] = k
        out[i] = np.conj(scipy.fft.rfft2(wrapped))
    return out, pad, size


def _filter_bank(image: np.ndarray, which: int) -> np.ndarray:
    """Every kernel of bank `which` applied as _filter does (correlation, reflected borders), at
    once through FFTs: K x H x W."""
    spectra, pad, size = _bank_spectra(image.shape, which)
    padded = np.pad(image.astype(np.float32), pad, mode="symmetric")   # = cv2.BORDER_REFLECT
    f = scipy.fft.rfft2(padded, s=size)
    out = scipy.fft.irfft2(spectra * f[None], s=size, axes=(1, 2))
    h, w = image.shape
    return out[:, pad:pad + h, pad:pad + w]


def maps(frames: np.ndarray, spacing) -> dict:
    """The analysis maps on the WORK_MM grid: mean image, |H1| and the per-pixel best score."""
    x = to_mm_grid(frames, spacing, WORK_MM)
    lo, hi = np.percentile(x[:, ::2, ::2], PERCENTILES)
    x = np.clip((x - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)
    t, h, w = x.shape
    angle = 2.0 * np.pi * np.arange(t) / t          # mean and first harmonic in one product
    basis = np.stack([np.full(t, 1.0 / t), np.cos(angle) * (2.0 / t), np.sin(angle) * (2.0 / t)])
    mean, re, im = (basis.astype(np.float32) @ x.reshape(t, -1)).reshape(3, h, w)
    h1 = np.hypot(re, im)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    sigma = CENTRE_SIGMA_MM / WORK_MM
    prior = np.exp(-(((yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2) / (2 * sigma * sigma)))
    heart = cv2.GaussianBlur(h1, (0, 0), HEART_SIGMA_MM / WORK_MM, borderType=cv2.BORDER_CONSTANT)
    prior = prior * heart / max(float(heart.max()), 1e-12)
    best = np.zeros_like(mean)
    best_r = np.zeros_like(mean)
    on_mean = _filter_bank(mean, 0).reshape(len(RADII_MM), 1 + SECTORS, *mean.shape)
    on_h1 = _filter_bank(h1, 1)
    for i, r_mm in enumerate(RADII_MM):
        disc, sectors = on_mean[i, 0], on_mean[i, 1:]
        # brighter than its ring in every direction: the LV pool inside its myocardium (the RV
        # pool borders bright fat or the atrium on one side)
        contrast = disc - sectors.max(axis=0)
        motion = np.sqrt(np.clip(on_h1[i], 0.0, None))
        score = np.clip(contrast, 0.0, None) * motion * prior * r_mm ** SIZE_POWER
        better = score > best
        best[better], best_r[better] = score[better], r_mm
    return {"mean": mean, "h1": h1, "score": best, "radius": best_r}


def _crop(m: dict, r: int, c: int, shape, spacing, side_mm: float) -> HeartCrop:
    """The crop for WORK_MM grid pixel (r, c) of maps m, in input pixels of a frame of `shape`."""
    sy = shape[0] / m["score"].shape[0]        # both grids start at the same top-left corner
    sx = shape[1] / m["score"].shape[1]
    centre_px = ((r + 0.5) * sy - 0.5, (c + 0.5) * sx - 0.5)
    return HeartCrop(centre_px=(float(centre_px[0]), float(centre_px[1])),
                     centre_mm=(float(centre_px[0] * spacing[0]), float(centre_px[1] * spacing[1])),
                     radius_mm=float(m["radius"][r, c]), side_mm=float(side_mm),
                     score=float(m["score"][r, c]))


def find_heart(frames: np.ndarray, spacing, side_mm: float) -> HeartCrop:
    """The LV-centred crop of one cine (T x H x W, any units) with (row, col) spacing in mm."""
    m = maps(frames, spacing)
    r, c = np.unravel_index(int(np.argmax(m["score"])), m["score"].shape)
    return _crop(m, r, c, frames.shape[1:], spacing, side_mm)


def find_stack(stack, side_mm: float) -> list[HeartCrop]:
    """Crops for the slices of one patient's cine stack: [(frames, spacing)] in, one crop each.

    The LV is one organ through the stack: slices with the same grid (frame shape and spacing)
    vote with their score maps, each scaled to a maximum of 1; each slice then takes its best
    disc within STACK_SIGMA_MM (Gaussian weight) of the stack's consensus centre. A slice on a
    grid of its own is found alone.
    """
    found = [maps(frames, spacing) for frames, spacing in stack]
    keys = [(frames.shape[1:], tuple(spacing)) for frames, spacing in stack]
    crops = []
    for i, (frames, spacing) in enumerate(stack):
        m = found[i]
        votes = sum(found[j]["score"] / max(float(found[j]["score"].max()), 1e-12)
                    for j in range(len(stack)) if keys[j] == keys[i])
        r0, c0 = np.unravel_index(int(np.argmax(votes)), votes.shape)
        h, w = votes.shape
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        sigma = STACK_SIGMA_MM / WORK_MM
        near = np.exp(-((yy - r0) ** 2 + (xx - c0) ** 2) / (2 * sigma * sigma))
        r, c = np.unravel_index(int(np.argmax(m["score"] * near)), votes.shape)
        crops.append(_crop(m, r, c, frames.shape[1:], spacing, side_mm))
    return crops
