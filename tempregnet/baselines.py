"""Table 1's non-learned references: segmentation baselines (level set, graph cut) and a trivial rule.

Segmentation baselines segment the LV blood pool in every frame and take ED = the frame of
largest area, ES = the frame of smallest (paper, section 3; ties: earliest frame). The paper's
were initialised by a user; ours are fully automatic, initialised once per sequence:

1. LV seed. Candidate blood pools are the bright components (upper three-class Otsu
   threshold: air / tissue / blood and fat) of the minimum-over-time image, where each pool is
   at its smallest so the LV and RV stay apart. Each is scored by how much the image moves
   just outside it (temporal std: the pool's edge sweeps there), its solidity squared (the LV
   is round, the RV a crescent) and a Gaussian centre prior (short-axis views are centred on
   the heart). The seed is the innermost pixel of the best one; its area-equivalent radius
   times 1.6 (ES -> ED) gives r_max. One Otsu threshold over the r_max disc in all frames
   separates blood from myocardium for the whole sequence, so areas stay comparable.
2. Each frame is segmented in a square ROI of side ~5 r_max around the seed, both methods
   starting from the frame's bright component at the seed: morphological Chan-Vese (level set);
   cv2.grabCut with a trimap (definite foreground a small disc at the seed, probable foreground
   the bright component, probable background to 2 r_max, definite background beyond) and one
   colour model per sequence, learned on the frame with the largest initial component and then
   frozen (graph cut). The LV is the connected bright component holding the seed (or nearest
   to it), holes filled (papillary muscles).

Trivial reference: ED = frame 0, ES = round(f x T) with f the median systole fraction
((ES - ED) mod T) / T of the training sequences, or 0.4 when none are given.

Inputs are T x H x W frames of any dtype (the Table 1 command passes the stored 20-step uint8
frames; the detect command could pass original frames).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

DEFAULT_ES_FRACTION = 0.4       # trivial reference without training data: ES at 40 % of the cycle
SEGMENTATION_METHODS = ("level_set", "graph_cut")
LEVEL_SET_ITERATIONS = 40
GRABCUT_ITERATIONS = 3
ROI_HALF_SIDE_IN_RADII = 2.5
MIN_RADIUS = 3.0               # px; smaller pools are not segmentable
MIN_LV_AREA_FRACTION = 2e-4    # of the image: smaller bright specks are not the LV
ES_TO_ED_RADIUS = 1.6           # the core is the pool at ES; at ED its radius is up to ~1.6x
SEED_RADIUS = 1.5              # definite-foreground disc of the graph cut


def _normalise(frames) -> np.ndarray:
    f = np.asarray(frames, dtype=np.float32)
    if f.ndim != 3 or f.shape[0] < 2:
        raise ValueError(f"expected T x H x W frames with T >= 2, got shape {f.shape}")
    if not np.all(np.isfinite(f)):
        raise ValueError("frames contain NaN or infinite values")
    lo, hi = np.percentile(f, (0.5, 99.5))
    return np.clip((f - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(f)


def _otsu(values) -> float:
    from skimage.filters import threshold_otsu
    return float(threshold_otsu(values)) if np.ptp(values) > 0 else float(values.max())


def _bright_threshold(image) -> float:
    """Upper three-class Otsu threshold: air / soft tissue / bright (blood, fat)."""
    from skimage.filters import threshold_multiotsu
    try:
        return float(threshold_multiotsu(image, classes=3)[-1])
    except ValueError:                      # too few grey levels for three classes
        return _otsu(image.ravel())


def _component_at(mask, y, x):
    """The connected component of mask containing (y, x), else the one nearest to it."""
    labels, n = ndi.label(mask)
    if n == 0:
        return np.zeros_like(mask, bool)
    lab = labels[y, x]
    if lab == 0:
        dist = ndi.distance_transform_edt(labels == 0, return_indices=True)[1]
        lab = labels[dist[0][y, x], dist[1][y, x]]
    return ndi.binary_fill_holes(labels == lab)


def _disc(shape, y, x, r):
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - y) ** 2 + (xx - x) ** 2 <= r * r


def _blood_candidates(f, prior):
    """(score, component mask) of always-bright regions, most LV-like first.

    LV-likeness = mean temporal std just outside the core (the pool's edge moves) x solidity^2 (round, where the RV is a
    crescent and partial components are ragged) x centre prior at the centroid.
    """
    from skimage.measure import regionprops
    # Minimum over time: each pool at its smallest, so the LV and RV, which touch the
    # septum's old place at some phase, stay apart; the aorta and fat do not move.
    core = ndi.gaussian_filter(f.min(axis=0), 1.0)
    labels, _ = ndi.label(core > _bright_threshold(core))
    std = f.std(axis=0)
    min_area = MIN_LV_AREA_FRACTION * labels.size
    out = []
    for region in regionprops(labels):
        if region.area < min_area:
            continue
        cy, cx = (int(round(c)) for c in region.centroid)
        mask = labels == region.label
        # the core never changes; its pool's moving edge lies just outside it
        reach = max(2, int(round(0.5 * np.sqrt(region.area / np.pi))))
        edge = ndi.binary_dilation(mask, iterations=reach) & ~mask
        out.append((float(std[edge].mean() * region.solidity ** 2 * prior[cy, cx]), mask))
    return sorted(out, key=lambda item: -item[0])


def find_lv(frames) -> dict:
    """Automatic LV initialisation: seed (y, x), largest radius r_max, blood threshold."""
    f = _normalise(frames)
    _, h, w = f.shape
    side = min(h, w)
    yy, xx = np.mgrid[:h, :w]
    prior = np.exp(-(((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / (2 * (side / 4.0) ** 2)))
    candidates = _blood_candidates(f, prior)
    if candidates:
        pool = candidates[0][1]
        depth = ndi.distance_transform_edt(pool)
        sy, sx = np.unravel_index(np.argmax(depth), depth.shape)    # the pool's innermost pixel
        r_max = np.sqrt(pool.sum() / np.pi) * ES_TO_ED_RADIUS
    else:                                   # no bright region: the most moving central point
        blur = ndi.gaussian_filter(f.std(axis=0), side / 16.0)
        sy, sx = np.unravel_index(np.argmax(blur * prior), blur.shape)
        r_max = side / 16.0
    r_max = float(np.clip(r_max, MIN_RADIUS, side / 4.0))
    # Blood vs myocardium/background: Otsu over the disc the pool sweeps, all frames at once,
    # so one threshold serves the whole sequence and areas stay comparable between frames.
    threshold = _otsu(f[:, _disc((h, w), sy, sx, r_max)].ravel())
    return {"seed": (int(sy), int(sx)), "r_max": r_max, "threshold": threshold}


def _roi(shape, seed, r_max):
    half = int(np.ceil(ROI_HALF_SIDE_IN_RADII * r_max)) + 2
    y0, x0 = max(0, seed[0] - half), max(0, seed[1] - half)
    y1, x1 = min(shape[0], seed[0] + half + 1), min(shape[1], seed[1] + half + 1)
    return (slice(y0, y1), slice(x0, x1)), (seed[0] - y0, seed[1] - x0)


def _bright_component(seg, image, y, x):
    """The brighter phase of a two-phase segmentation, as the LV component at the seed."""
    if seg.all() or not seg.any():
        return np.zeros_like(seg, bool)
    if image[seg].mean() < image[~seg].mean():
        seg = ~seg
    return _component_at(seg, y, x)


def _initial_mask(image, seed, threshold):
    """Bright component at the seed: where both segmenters start from in every frame."""
    return _component_at(image > threshold, *seed)


def segment_level_set(rois, seed, r_max, threshold) -> np.ndarray:
    """LV masks (T x h x w) by morphological Chan-Vese from each frame's thresholded seed component."""
    from skimage.segmentation import morphological_chan_vese
    masks = []
    for image in rois:
        init = _initial_mask(image, seed, threshold)
        if not init.any():
            init = _disc(image.shape, seed[0], seed[1], SEED_RADIUS)
        seg = morphological_chan_vese(image, LEVEL_SET_ITERATIONS,
                                      init_level_set=init.astype(np.int8), smoothing=1)
        masks.append(_bright_component(seg.astype(bool), image, *seed))
    return np.stack(masks)


def _trimap(image, seed, r_max, threshold):
    import cv2
    mask = np.full(image.shape, cv2.GC_BGD, np.uint8)
    mask[_disc(image.shape, seed[0], seed[1], 2 * r_max)] = cv2.GC_PR_BGD
    mask[_initial_mask(image, seed, threshold)] = cv2.GC_PR_FGD
    mask[_disc(image.shape, seed[0], seed[1], SEED_RADIUS)] = cv2.GC_FGD
    return mask


def segment_graph_cut(rois, seed, r_max, threshold) -> np.ndarray:
    """LV masks (T x h x w) by cv2.grabCut from seed-centred trimaps (module docstring).

    The colour models are learned once per sequence, on the frame with the largest initial
    blood component, then frozen: per-frame models drift with the pool's size (a small ES pool
    lets the myocardium into the foreground model), which makes areas incomparable.
    """
    import cv2
    trimaps = [_trimap(image, seed, r_max, threshold) for image in rois]
    rgbs = [np.repeat(np.rint(image * 255).astype(np.uint8)[:, :, None], 3, axis=2)
            for image in rois]
    ref = int(np.argmax([(t == cv2.GC_PR_FGD).sum() for t in trimaps]))
    cv2.setRNGSeed(0)                       # grabCut's k-means draws from OpenCV's global RNG
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(rgbs[ref], trimaps[ref].copy(), None, bgd, fgd, GRABCUT_ITERATIONS,
                    cv2.GC_INIT_WITH_MASK)
    except cv2.error:                       # a flat ROI has no colour model: nothing segmented
        return np.zeros(rois.shape, bool)
    masks = []
    for rgb, trimap in zip(rgbs, trimaps):
        cv2.grabCut(rgb, trimap, None, bgd.copy(), fgd.copy(), 1, cv2.GC_EVAL_FREEZE_MODEL)
        seg = (trimap == cv2.GC_FGD) | (trimap == cv2.GC_PR_FGD)
        masks.append(_component_at(seg, *seed) if seg.any() else seg)
    return np.stack(masks)


SEGMENTERS = {"level_set": segment_level_set, "graph_cut": segment_graph_cut}


def lv_areas(frames, method: str) -> np.ndarray:
    """LV area (pixels) in every frame with one of SEGMENTATION_METHODS."""
    if method not in SEGMENTERS:
        raise ValueError(f"unknown baseline {method!r}; expected one of {SEGMENTATION_METHODS}")
    f = _normalise(frames)
    init = find_lv(f)
    box, seed = _roi(f.shape[1:], init["seed"], init["r_max"])
    masks = SEGMENTERS[method](f[:, box[0], box[1]], seed, init["r_max"], init["threshold"])
    return masks.reshape(len(f), -1).sum(axis=1).astype(np.float64)


def segmentation_ed_es(frames, method: str) -> tuple[int, int]:
    """ED = frame of largest LV area, ES = smallest (earliest on ties), in the given frames."""
    areas = lv_areas(frames, method)
    return int(np.argmax(areas)), int(np.argmin(areas))


def estimate_es_fraction(ed, es, n_frames) -> float:
    """Median systole fraction ((ES - ED) mod T) / T of training sequences."""
    ed, es, n = (np.asarray(a, dtype=np.float64) for a in (ed, es, n_frames))
    if ed.size == 0:
        return DEFAULT_ES_FRACTION
    return float(np.median(np.mod(es - ed, n) / n))


LABEL_KEYS = ("ed", "es", "n_frames")       # what rows_es_fraction reads of prepared rows


def rows_es_fraction(rows: dict) -> float:
    """estimate_es_fraction of the labelled ones of prepared rows (data_prep.hdf5.load_rows)."""
    labelled = np.asarray(rows["ed"]) >= 0
    return estimate_es_fraction(np.asarray(rows["ed"])[labelled], np.asarray(rows["es"])[labelled],
                                np.asarray(rows["n_frames"])[labelled])


def trivial_ed_es(n_frames: int, fraction: float = DEFAULT_ES_FRACTION) -> tuple[int, int]:
    """The reference rule: ED = first frame, ES = round(fraction x T) (kept inside 1..T-1)."""
    if not 0 < fraction < 1:
        raise ValueError(f"ES fraction must be inside (0, 1), got {fraction}")
    return 0, int(min(max(round(fraction * n_frames), 1), n_frames - 1))


def segmentation_ed_es_on_steps(step_frames, n_frames: int, method: str) -> tuple[int, int]:
    """ED/ES in original frames from the stored 20-step frames: areas resampled onto the T
    frames by the same cyclic interpolation as the nets' curves, then largest / smallest."""
    from tempregnet.labels import decode_steps
    return decode_steps(lv_areas(step_frames, method), n_frames, "cycle", "extrema")
