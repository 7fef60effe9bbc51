"""Find the left ventricle in a cine: where the image changes over the cycle, a bright round pool.

Method (docs/scale-and-crop.md): on a WORK_MM grid, the first temporal harmonic |H1| of the
frames is large where blood and myocardium swap over the cycle (both ventricles' walls); the
temporal mean shows the LV blood pool as a bright disc inside a dark myocardial ring. Over disc
radii RADII_MM the score is the smallest (disc mean - ring sector mean) over SECTORS sectors
(> 0), x sqrt(mean |H1| over the disc and its wall), x where the heart beats (|H1| smoothed by
HEART_SIGMA_MM) x a prior towards the image centre (the heart is planned near the isocentre).
A patient's slices vote (find_stack). The best disc gives the centre; the crop is a square of
fixed side in mm around it. No labels and no training. The search: the score on every STRIDE-th
grid pixel, then each pixel near the best peaks (`search`; the same pixel as scoring every one).
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
STRIDE = 2                                      # the score is searched on every STRIDE-th grid
CANDIDATES = 4                                  # pixel, then at each pixel within REACH_PX of
REACH_PX = 4                                    # its CANDIDATES best peaks (narrow peaks fall
                                                # between the coarse pixels)


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


def _fft_size(shape: tuple[int, int], which: int) -> tuple[int, int]:
    """The FFT size for bank `which` on a grid of `shape` padded by _reach: per axis the smallest
    fast real FFT length that is even (the strided bank halves it) and at least the padded size
    rounded up to 16 (so grids of nearby sizes share the cached kernel spectra)."""
    size = []
    for n in shape:
        n = scipy.fft.next_fast_len(-(-(n + 2 * _reach(which)) // 16) * 16, real=True)
        while n % 2:
            n = scipy.fft.next_fast_len(n + 1, real=True)
        size.append(n)
    return tuple(size)


@functools.lru_cache(maxsize=8)
def _bank_spectra(size: tuple[int, int], which: int) -> np.ndarray:
    """The conjugate spectra of kernel bank `which` (0: mean, 1: |H1|) for FFTs of `size`."""
    kernels = _bank_kernels()[which]
    wrapped = np.zeros((len(kernels),) + size, np.float32)   # kernel centres at index 0 (circular)
    for i, k in enumerate(kernels):
        a = k.shape[0] // 2
        wrapped[i][np.ix_((np.arange(k.shape[0]) - a) % size[0], (np.arange(k.shape[1]) - a) % size[1])] = k
    return np.conj(scipy.fft.rfft2(wrapped, axes=(1, 2)))


@functools.lru_cache(maxsize=2)
def _reach(which: int) -> int:
    """The largest kernel's reach in bank `which`, rounded up to even (pixels)."""
    reach = max(k.shape[0] // 2 for k in _bank_kernels()[which])
    return reach + reach % 2


def _filter_bank(image: np.ndarray, which: int, stride: int = 1) -> np.ndarray:
    """Every kernel of bank `which` applied as _filter does (correlation, reflected borders), at
    once through FFTs: K x H x W; with stride 2, only at even rows and columns (K x ceil(H/2) x
    ceil(W/2)), from the spectrum folded to half size (a quarter of the inverse transforms)."""
    pad, size = _reach(which), _fft_size(image.shape, which)
    f = scipy.fft.rfft2(_padded(image, which), s=size)
    h, w = image.shape
    if stride == 1:
        out = scipy.fft.irfft2(_bank_spectra(size, which) * f[None], s=size, axes=(1, 2))
        return out[:, pad:pad + h, pad:pad + w]
    if stride != 2:
        raise ValueError("stride must be 1 or 2")
    kernels, image_parts = _folded_spectra(size, which), _quarters(f, size)
    folded = kernels[0] * image_parts[0]
    for q in range(1, 4):
        folded += kernels[q] * image_parts[q]
    n, m = size
    out = scipy.fft.irfft2(folded, s=(n // 2, m // 2), axes=(1, 2))
    return out[:, pad // 2:pad // 2 + (h + 1) // 2, pad // 2:pad // 2 + (w + 1) // 2]


def _quarters(spectrum: np.ndarray, size) -> np.ndarray:
    """The four parts of a real-FFT spectrum (N x M/2+1 of an N x M image y) whose sum / 4 is
    the spectrum of y[::2, ::2] (N/2 x M/4+1): Y[k + a N/2, l + b M/2] for a, b in {0, 1}; the
    columns beyond the half spectrum are conjugates of mirrored ones (y is real)."""
    n, m = size
    half = (m // 2) // 2 + 1
    rows, cols = (-np.arange(n)) % n, m // 2 - np.arange(half)
    near, far = spectrum[..., :half], np.conj(spectrum[..., rows[:, None], cols[None, :]])
    return np.stack([near[..., :n // 2, :], near[..., n // 2:, :],
                     far[..., :n // 2, :], far[..., n // 2:, :]])


@functools.lru_cache(maxsize=8)
def _folded_spectra(size: tuple[int, int], which: int) -> np.ndarray:
    """_quarters of each kernel spectrum of bank `which`, / 4: 4 x K x N/2 x M/4+1. A product
    of spectra is folded as the sum over the quarters of the products of the quarters."""
    return np.ascontiguousarray(_quarters(_bank_spectra(size, which), size) * np.float32(0.25))


def _padded(image: np.ndarray, which: int) -> np.ndarray:
    """The image padded by bank `which`'s reach, reflected as cv2.BORDER_REFLECT does."""
    return np.pad(image.astype(np.float32), _reach(which), mode="symmetric")


@functools.lru_cache(maxsize=2)
def _bank_matrix(which: int) -> np.ndarray:
    """The kernels of bank `which` centred in squares of side 2 * _reach + 1: K x S x S."""
    kernels, pad = _bank_kernels()[which], _reach(which)
    out = np.zeros((len(kernels), 2 * pad + 1, 2 * pad + 1), np.float32)
    for i, k in enumerate(kernels):
        a = k.shape[0] // 2
        out[i, pad - a:pad + a + 1, pad - a:pad + a + 1] = k
    return out


def _filter_at(padded: np.ndarray, which: int, r0: int, c0: int, rows: int, cols: int) -> np.ndarray:
    """_filter_bank(image, which)[:, r0:r0 + rows, c0:c0 + cols], computed directly (a few
    pixels) from padded = _padded(image, which): K x rows x cols."""
    kernels = _bank_matrix(which)
    side = 2 * _reach(which) + 1
    window = padded[r0:r0 + rows + side - 1, c0:c0 + cols + side - 1]
    patches = np.lib.stride_tricks.sliding_window_view(window, (side, side))
    return np.tensordot(kernels, patches, axes=([1, 2], [2, 3]))


def _best_disc(on_mean: np.ndarray, on_h1: np.ndarray, prior: np.ndarray):
    """(best score, its radius in mm; 0 where no disc scores > 0) per pixel, from the banks'
    responses there."""
    on_mean = on_mean.reshape(len(RADII_MM), 1 + SECTORS, *on_mean.shape[1:])
    # brighter than its ring in every direction: the LV pool inside its myocardium (the RV pool
    # borders bright fat or the atrium on one side)
    contrast = on_mean[:, 0] - on_mean[:, 1:].max(axis=1)
    motion = np.sqrt(np.clip(on_h1, 0.0, None))
    size = np.asarray(RADII_MM, np.float32) ** SIZE_POWER
    score = np.clip(contrast, 0.0, None) * motion * prior * size[:, None, None]
    first = np.argmax(score, axis=0)                # the smallest radius of the best score
    best = np.take_along_axis(score, first[None], axis=0)[0]
    return best, np.where(best > 0, np.asarray(RADII_MM, np.float32)[first], np.float32(0.0))


def maps(frames: np.ndarray, spacing) -> dict:
    """The analysis maps on the WORK_MM grid: mean image, |H1|, the prior, and the best score
    and its radius on every STRIDE-th pixel (`score`, `radius`; `search` finds the pixel)."""
    frames = np.asarray(frames, np.float32)
    t = frames.shape[0]
    step = [max(1, int(round(2 * WORK_MM / s))) for s in spacing]    # samples 2 grid pixels apart
    lo, hi = np.percentile(frames[:, ::step[0], ::step[1]], PERCENTILES)
    x = np.clip(frames, np.float32(lo), np.float32(hi))
    angle = 2.0 * np.pi * np.arange(t) / t          # mean and first harmonic in one product,
    basis = np.stack([np.full(t, 1.0 / t), np.cos(angle) * (2.0 / t), np.sin(angle) * (2.0 / t)])
    # then the three maps (not the T frames) to the grid, and normalised: (x - lo) / (hi - lo)
    mean, re, im = to_mm_grid((basis.astype(np.float32) @ x.reshape(t, -1)).reshape(3, *x.shape[1:]),
                              spacing, WORK_MM)
    scale = np.float32(1.0 / max(hi - lo, 1e-6))
    mean, h1 = (mean - np.float32(lo)) * scale, np.hypot(re, im) * scale
    h, w = mean.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    sigma = CENTRE_SIGMA_MM / WORK_MM
    prior = np.exp(-(((yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2) / (2 * sigma * sigma)))
    heart = cv2.GaussianBlur(h1, (0, 0), HEART_SIGMA_MM / WORK_MM, borderType=cv2.BORDER_CONSTANT)
    prior = prior * heart / max(float(heart.max()), 1e-12)
    best, best_r = _best_disc(_filter_bank(mean, 0, STRIDE), _filter_bank(h1, 1, STRIDE),
                              prior[::STRIDE, ::STRIDE])
    return {"mean": mean, "h1": h1, "prior": prior, "score": best, "radius": best_r,
            "padded": (_padded(mean, 0), _padded(h1, 1))}


def search(m: dict, weight=None) -> tuple[int, int, float, float]:
    """(row, col, score, radius) of the grid pixel of maps m with the best score x
    weight(rows, cols) (None: 1): the CANDIDATES best peaks on every STRIDE-th pixel, then each
    pixel near them."""
    h, w = m["score"].shape
    rows, cols = (STRIDE * np.mgrid[0:h, 0:w]).astype(np.float32)
    coarse = m["score"] * (1.0 if weight is None else weight(rows, cols))
    peaks = np.flatnonzero(coarse >= cv2.dilate(coarse, np.ones((3, 3), np.uint8)))
    best = peaks[np.argsort(-coarse.ravel()[peaks], kind="stable")[:CANDIDATES]]   # ties: first
    found = [refine(m, *np.unravel_index(int(k), (h, w)), weight) for k in best]
    return max(found, key=lambda f: f[4])[:4]


def refine(m: dict, r: int, c: int, weight=None) -> tuple[int, int, float, float, float]:
    """(row, col, score, radius, score x weight) of the best grid pixel within REACH_PX of
    the coarse pixel (r, c) of maps m, by score x weight(rows, cols) (None: 1)."""
    r0, c0, score, radius = _window(m, r, c)
    rows, cols = np.mgrid[r0:r0 + score.shape[0], c0:c0 + score.shape[1]].astype(np.float32)
    weighted = score * (1.0 if weight is None else weight(rows, cols))
    i, j = np.unravel_index(int(np.argmax(weighted)), score.shape)
    return r0 + int(i), c0 + int(j), float(score[i, j]), float(radius[i, j]), float(weighted[i, j])


def _window(m: dict, r: int, c: int) -> tuple[int, int, np.ndarray, np.ndarray]:
    """(first row, first col, score, radius) of the grid pixels within REACH_PX of the
    coarse pixel (r, c) of maps m, from direct kernel sums."""
    h, w = m["mean"].shape
    r0, c0 = max(STRIDE * r - REACH_PX, 0), max(STRIDE * c - REACH_PX, 0)
    r1, c1 = min(STRIDE * r + REACH_PX + 1, h), min(STRIDE * c + REACH_PX + 1, w)
    score, radius = _best_disc(_filter_at(m["padded"][0], 0, r0, c0, r1 - r0, c1 - c0),
                               _filter_at(m["padded"][1], 1, r0, c0, r1 - r0, c1 - c0),
                               m["prior"][r0:r1, c0:c1])
    return r0, c0, score, radius


def _crop(m: dict, found: tuple, shape, spacing, side_mm: float) -> HeartCrop:
    """The crop for the WORK_MM grid pixel `found` (search's row, col, score, radius) of maps
    m, in input pixels of a frame of `shape`."""
    r, c, score, radius = found
    sy = shape[0] / m["mean"].shape[0]         # both grids start at the same top-left corner
    sx = shape[1] / m["mean"].shape[1]
    centre_px = ((r + 0.5) * sy - 0.5, (c + 0.5) * sx - 0.5)
    return HeartCrop(centre_px=(float(centre_px[0]), float(centre_px[1])),
                     centre_mm=(float(centre_px[0] * spacing[0]), float(centre_px[1] * spacing[1])),
                     radius_mm=radius, side_mm=float(side_mm), score=score)


def find_heart(frames: np.ndarray, spacing, side_mm: float) -> HeartCrop:
    """The LV-centred crop of one cine (T x H x W, any units) with (row, col) spacing in mm."""
    m = maps(frames, spacing)
    return _crop(m, search(m), frames.shape[1:], spacing, side_mm)


def find_stack(stack, side_mm: float) -> list[HeartCrop]:
    """Crops for the slices of one patient's cine stack: [(frames, spacing)] in, one crop each.

    The LV is one organ through the stack: slices with the same grid (frame shape and spacing)
    vote with their score maps, each scaled to its maximum on every STRIDE-th pixel (the vote's
    peak is then refined to the grid pixel); each slice then takes its best disc within
    STACK_SIGMA_MM (Gaussian weight) of the stack's consensus centre (`search`). A slice on a
    grid of its own is found alone.
    """
    found = [maps(frames, spacing) for frames, spacing in stack]
    keys = [(frames.shape[1:], tuple(spacing)) for frames, spacing in stack]
    sigma = STACK_SIGMA_MM / WORK_MM
    consensus = {}
    for key in set(keys):
        members = [(m, max(float(m["score"].max()), 1e-12)) for m, k in zip(found, keys) if k == key]
        votes = sum(m["score"] / top for m, top in members)
        r, c = np.unravel_index(int(np.argmax(votes)), votes.shape)
        windows = [(_window(m, r, c), top) for m, top in members]     # then on the grid near it
        fine = sum(score / top for (_, _, score, _), top in windows)
        i, j = np.unravel_index(int(np.argmax(fine)), fine.shape)
        consensus[key] = (windows[0][0][0] + i, windows[0][0][1] + j)
    crops = []
    for (frames, spacing), m, key in zip(stack, found, keys):
        r0, c0 = consensus[key]

        def near(rows, cols):
            return np.exp(-((rows - r0) ** 2 + (cols - c0) ** 2) / (2 * sigma * sigma))

        crops.append(_crop(m, search(m, near), frames.shape[1:], spacing, side_mm))
    return crops
