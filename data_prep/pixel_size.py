"""The pixel size of a cine stack whose header states none, estimated from the heart in its images.

The LV crop finder (data_prep.heart_crop.find_stack) locates the LV of each slice at a nominal
pixel size. From each slice's LV centre, RAYS rays run through the temporal mean image (1-99 %
normalised): the bright blood pool, then the dark myocardial ring, then whatever lies outside
(fat, the RV pool, liver: brighter than the ring). The threshold halfway between the pool (median
within half the disc found) and the darkest point of the ring is crossed downwards at the
endocardium and upwards again past the epicardium; the median over rays of that second crossing
is the slice's outer LV radius in pixels, and the median over the stack's slices the stack's.
Outer radii vary much less between hearts than the blood pool does (dilated hearts have thin
walls, hypertrophic ones small pools): on the 29 ACDC patients whose headers state a pixel size
the outer radius in mm varies by 15 % (coefficient of variation); the pool's radius varied by
25-31 % in a first exploration (the same rays, the pool's edge).

pixel size = OUTER_RADIUS_MM / (outer radius in pixels); prepare and detect then find the crops
at that size, as for a header's (data_prep.physical.stack_crops). Measuring the radius again
from those crops (a second pass) was no better on the calibration patients (mean error 14.4 %
against 13.5 %, median 10.1 % against 11.5 %), so the estimate is the first pass's.
OUTER_RADIUS_MM is calibrated by `python -m tools.calibrate_pixel_size` (calibrate(), below;
docs/scale-and-crop.md has its leave-one-patient-out errors). Pixels are taken as square: a header that states nothing
says nothing of anisotropy either.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from data_prep.errors import InputError
from data_prep.heart_crop import PERCENTILES, find_stack
from data_prep.readers import find_sequences
from data_prep.scale import header_spacing

NOMINAL_MM = 1.5            # the first pass's guess: a common cine pixel (the finder is in mm)
OUTER_RADIUS_MM = 39.8      # median outer LV radius, 29 ACDC patients (tools.calibrate_pixel_size)
RAYS = 32
STEP_PX = 0.25              # sampling along a ray, input pixels
POOL_CORE = 0.5             # the pool level: median within this fraction of the disc found
POOL_EDGE_MIN = 0.3         # the endocardium lies beyond this fraction of the disc found
RING_REACH = (2.5, 6.0)     # the ring's darkest point: within 2.5 x the disc + 6 mm
REACH_MM = 90.0             # rays end here (at the pass's pixel size)


@dataclass(frozen=True)
class SizeEstimate:
    """A stack's estimated pixel size, the outer LV radius it came from and the slices used."""
    mm_per_px: float
    outer_radius_px: float
    slices_used: int


def temporal_mean(frames: np.ndarray) -> np.ndarray:
    """The mean frame of a cine, 1-99 % normalised to [0, 1] (as the crop finder normalises)."""
    x = np.asarray(frames, np.float32)
    lo, hi = np.percentile(x[:, ::2, ::2], PERCENTILES)
    return np.clip((x.mean(axis=0) - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0)


def ray_profiles(image: np.ndarray, centre_px, reach_px: float) -> tuple[np.ndarray, np.ndarray]:
    """(radii, RAYS x len(radii) profiles) of image sampled (bilinear) along rays from centre."""
    angles = np.linspace(0.0, 2.0 * np.pi, RAYS, endpoint=False)
    radii = np.arange(0.0, max(reach_px, 2.0), STEP_PX, dtype=np.float32)
    rows = (centre_px[0] + np.sin(angles)[:, None] * radii[None]).astype(np.float32)
    cols = (centre_px[1] + np.cos(angles)[:, None] * radii[None]).astype(np.float32)
    profiles = cv2.remap(image.astype(np.float32), cols, rows, cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REFLECT)
    return radii, profiles


def outer_radius_px(mean: np.ndarray, centre_px, disc_px: float, mm_per_px: float) -> float:
    """The slice's outer LV radius in pixels (median over rays that cross out of the ring), or
    NaN where no ray does. disc_px: the blood-pool radius the finder found, in pixels."""
    reach = REACH_MM / mm_per_px
    radii, profiles = ray_profiles(mean, centre_px, reach)
    pool = float(np.median(profiles[:, radii < max(POOL_CORE * disc_px, 1.0)]))
    ring_zone = (radii >= POOL_CORE * disc_px) & \
        (radii < RING_REACH[0] * disc_px + RING_REACH[1] / mm_per_px)
    found = []
    for p in profiles:
        if not ring_zone.any():
            break
        threshold = (pool + float(p[ring_zone].min())) / 2.0
        inner = np.nonzero((p < threshold) & (radii > POOL_EDGE_MIN * disc_px))[0]
        if inner.size == 0:
            continue
        outer = np.nonzero(p[inner[0]:] > threshold)[0]
        if outer.size:
            found.append(float(radii[inner[0] + outer[0]]))
    return float(np.median(found)) if found else float("nan")


def stack_outer_radius_px(frames_list, crops, mm_per_px: float) -> tuple[float, int]:
    """(median outer radius over the slices that gave one, how many did) for crops found at
    mm_per_px."""
    radii = [outer_radius_px(temporal_mean(f), c.centre_px, c.radius_mm / mm_per_px, mm_per_px)
             for f, c in zip(frames_list, crops)]
    radii = [r for r in radii if np.isfinite(r)]
    return (float(np.median(radii)) if radii else float("nan")), len(radii)


def estimate_stack(frames_list, side_mm: float,
                   outer_mm: float = OUTER_RADIUS_MM) -> SizeEstimate | None:
    """The pixel size of one patient's slices (same acquisition, frames T x H x W each), or None
    where no slice shows an outer LV edge."""
    crops = find_stack([(f, (NOMINAL_MM, NOMINAL_MM)) for f in frames_list], side_mm)
    radius, used = stack_outer_radius_px(frames_list, crops, NOMINAL_MM)
    if not np.isfinite(radius) or radius <= 0:
        return None
    return SizeEstimate(float(outer_mm / radius), radius, used)


ESTIMATE = (f"headers without a pixel size: {OUTER_RADIUS_MM} mm / the stack's median outer LV "
            f"radius in pixels (LV found at {NOMINAL_MM} mm; data_prep.pixel_size)")


# --- calibration on scans whose headers state a size (tools.calibrate_pixel_size) ----------------

CALIBRATION_SIDE_MM = 128.0   # the recipes' crop side (irrelevant to the radius; crops need one)


def stacks_with_header(source: str, path) -> list[tuple[float, list[np.ndarray]]]:
    """[(header pixel size (row), [frames of each slice])] per patient whose header states one."""
    found, _ = find_sequences(source, path)
    by_group: dict = {}
    for item in found:
        by_group.setdefault(item.group_order or item.group, []).append(item)
    stacks = []
    for key in sorted(by_group):
        try:
            seqs = [item.load() for item in by_group[key]]
        except InputError:
            continue
        spacing = header_spacing(seqs[0])
        if spacing is not None:
            stacks.append((spacing[0], [s.frames for s in seqs]))
    return stacks


def _errors(estimates, truth) -> dict:
    e = 100.0 * (np.asarray(estimates) / np.asarray(truth) - 1.0)
    a = np.abs(e)
    return {"median_abs_pct": float(np.median(a)), "mean_abs_pct": float(np.mean(a)),
            "p90_abs_pct": float(np.percentile(a, 90)), "max_abs_pct": float(a.max()),
            "bias_pct": float(np.mean(e))}


def calibrate(stacks) -> dict:
    """Leave-one-out errors of the estimator (1 and 2 passes) and of the constant reference
    (tools.calibrate_pixel_size prints them; docs/scale-and-crop.md)."""
    truth = np.array([s for s, _ in stacks])
    n = len(stacks)
    r1 = np.array([stack_outer_radius_px(
        frames, find_stack([(f, (NOMINAL_MM,) * 2) for f in frames], CALIBRATION_SIDE_MM), NOMINAL_MM)[0]
        for _, frames in stacks])
    others = lambda v, i: np.delete(v, i)  # noqa: E731
    est1 = np.array([np.median(others(r1 * truth, i)) / r1[i] for i in range(n)])
    # second pass: the finder again at the first (leave-one-out) estimate, radius measured again
    r2 = np.array([stack_outer_radius_px(
        frames, find_stack([(f, (est1[i],) * 2) for f in frames], CALIBRATION_SIDE_MM), est1[i])[0]
        for i, (_, frames) in enumerate(stacks)])
    est2 = np.array([np.median(others(r2 * truth, i)) / r2[i] for i in range(n)])
    const = np.array([np.median(others(truth, i)) for i in range(n)])
    return {"patients": n, "header_mm": {"min": float(truth.min()), "median": float(np.median(truth)),
                                         "max": float(truth.max())},
            "outer_radius_mm_all": {"one_pass": float(np.median(r1 * truth)),
                                    "two_passes": float(np.median(r2 * truth)),
                                    "cv_pct_one_pass": float(100 * np.std(r1 * truth)
                                                            / np.mean(r1 * truth))},
            "loo": {"one_pass": _errors(est1, truth), "two_passes": _errors(est2, truth),
                    "constant_median_of_others": _errors(const, truth)},
            "per_patient": [{"row": i + 1, "header_mm": float(truth[i]), "estimate_mm": float(est1[i]),
                             "error_pct": float(100 * (est1[i] / truth[i] - 1))} for i in range(n)]}
