"""Synthetic cine MRI cohort: SSFP-like short-axis phantoms with known ED/ES, as DICOM or ACDC NIfTI.

The phantom (see docs/data.md, "Synthetic cohort"): a torso with fat, muscle, lungs, liver, spine and
aorta; a heart whose LV blood-pool area follows a physiological volume curve (ejection, rapid
filling, diastasis, atrial kick) with constant myocardial area, so the wall thickens in systole;
an RV crescent that contracts with its own curve; Rician noise, a smooth coil bias field and slow
in-plane breathing shifts. ED and ES are the frames of maximum and minimum LV volume on the frame
grid (0-based), unique by construction.

    python -m data_prep.synthetic OUT --patients 24 --seed 0 --format dicom
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage


# Fake identity written into every DICOM header, so that tests can prove it never reaches outputs.
FAKE_PATIENT_NAME = "ZORBLAX^QUENTINA^SYNTHETIC"
FAKE_BIRTH_DATE = "19230417"
FAKE_PATIENT_ID = "ZZFAKEID"          # prefix: patient 7 is ZZFAKEID0007
FAKE_STUDY_DATE = "20110902"

KINDS = ("normal", "dilated", "hypertrophic")
ACDC_GROUP = {"normal": "NOR", "dilated": "DCM", "hypertrophic": "HCM"}
KIND_CYCLE = ("normal", "dilated", "normal", "hypertrophic")   # patient index -> kind, balanced
FRAMES_RANGE = (12, 35)                # frames per cycle, inclusive
ES_FRACTION_RANGE = (0.30, 0.45)       # ES - ED in frames, as a fraction of the cycle
SLICES_RANGE = (3, 7)                  # short-axis slices per patient, inclusive
HEART_RATE_RANGE = (52.0, 100.0)        # beats per minute
P_START_AT_ED = 0.4                    # share of sequences triggered at ED (ED = frame 0)
GRID_JITTER = 0.1                      # frames between a sampled extreme and the true one
GRID_TRIES = 300                       # draws of grid offset and cycle shape before giving up
MIN_EXTREME_MARGIN = 0.004             # ED/ES beat every other frame by this share of EDV ...
MIN_MARGIN_PX = 10.0                   # ... and by this many pixels of the smallest slice's area
TEMPORAL_RES_MS = (25.0, 65.0)         # cine frame spacing; frames per cycle = RR / this
RV_DELAY = 0.01                        # RV cycle lags the LV by this share of the cycle
SIZE = 256                             # image rows = columns
FOV_MM = (330.0, 380.0)                # square field of view
SYSTOLE_MS = (290.0, 330.0)            # ED -> ES duration, nearly independent of heart rate

# Per kind: ejection fraction, ED cavity radius (mid slice), ED wall thickness, filling shares of
# the stroke volume in rapid filling (E wave) and atrial kick (A wave; diastasis takes the rest),
# RV ejection fraction and how much the cavity radius shrinks from base to apex (dilated
# ventricles are spherical).
KIND_PARAMS = {
    "normal": dict(ef=(0.55, 0.65), radius_mm=(22.0, 26.0), wall_mm=(8.0, 10.0),
                   e_share=(0.55, 0.65), a_share=(0.22, 0.30), rv_ef=(0.48, 0.60), taper=0.4),
    "dilated": dict(ef=(0.20, 0.35), radius_mm=(31.0, 37.0), wall_mm=(6.0, 7.5),
                    e_share=(0.60, 0.70), a_share=(0.20, 0.28), rv_ef=(0.30, 0.45), taper=0.25),
    "hypertrophic": dict(ef=(0.68, 0.80), radius_mm=(17.0, 20.0), wall_mm=(14.0, 19.0),
                         e_share=(0.35, 0.45), a_share=(0.38, 0.48), rv_ef=(0.50, 0.62), taper=0.3),
}

# SSFP signal relative to blood (bright blood, dark myocardium, bright fat, black lung).
TISSUE = dict(air=0.0, fat=0.78, muscle=0.22, mediastinum=0.30, lung=0.045, liver=0.34,
              bone=0.30, marrow=0.55, aorta=0.92, epicardial_fat=0.72, myocardium=0.24,
              blood=1.0)
EDGE_PX = 0.45                         # partial-volume edge width (logistic scale, pixels)
_PROFILE_GRID = np.linspace(0.0, 1.0, 2049)


# --- the volume curve ---------------------------------------------------------------------------

@dataclass(frozen=True)
class CurveShape:
    """Shape of one cardiac cycle; phases are fractions of the cycle from ED (0) to next ED (1).

    Ejection and filling are rates integrated over their phase: a floor (steady flow) plus
    Gaussian waves. A floor > 0 keeps the rate non-zero at ED and ES, which shortens the
    isovolumic phases to a corner so that ED and ES are unique frames at any frame rate.
    """
    es_fraction: float        # ES phase
    eject_floor: float        # share of the stroke volume ejected at a steady rate
    eject_peak: float         # peak ejection, as a fraction of systole (about a third)
    eject_width: float
    e_share: float            # stroke volume refilled by the E wave (rapid filling)
    a_share: float            # ... by the A wave (atrial kick); diastasis gets the rest
    e_centre: float           # E-wave peak, as a fraction of diastole
    e_width: float
    a_centre: float           # A-wave peak, as a fraction of diastole
    a_width: float


def _cumulative_profile(x: np.ndarray, floor: float, waves) -> np.ndarray:
    """Share (0..1) of a flow done by fractions x of its phase: a floor plus (share, centre, width)."""
    g = _PROFILE_GRID
    rate = np.full_like(g, floor)
    for share, centre, width in waves:
        bump = np.exp(-0.5 * ((g - centre) / width) ** 2)
        rate += share * bump / np.trapezoid(bump, g)
    done = np.concatenate([[0.0], np.cumsum(0.5 * (rate[1:] + rate[:-1]) * np.diff(g))])
    return np.interp(x, g, done / done[-1])


def volume_curve(phase, ef: float, shape: CurveShape) -> np.ndarray:
    """LV volume relative to EDV (1 at ED, 1 - ef at ES) at cycle phases (0 = ED, periodic 1)."""
    phi = np.mod(np.asarray(phase, dtype=np.float64), 1.0)
    s = shape.es_fraction
    ejected = _cumulative_profile(
        np.clip(phi / s, 0.0, 1.0), shape.eject_floor,
        [(1.0 - shape.eject_floor, shape.eject_peak, shape.eject_width)])
    refilled = _cumulative_profile(
        np.clip((phi - s) / (1.0 - s), 0.0, 1.0), 1.0 - shape.e_share - shape.a_share,
        [(shape.e_share, shape.e_centre, shape.e_width),
         (shape.a_share, shape.a_centre, shape.a_width)])
    return (1.0 - ef) + ef * np.where(phi <= s, 1.0 - ejected, refilled)


def _draw_shape(rng, es_fraction: float, rr_ms: float, kind_p: dict) -> CurveShape:
    """Draw a cycle shape; wave timings in ms, so fast hearts fuse E and A and lose diastasis."""
    diastole_ms = (1.0 - es_fraction) * rr_ms
    return CurveShape(
        es_fraction=es_fraction, eject_floor=rng.uniform(0.5, 0.65),
        eject_peak=rng.uniform(0.3, 0.4), eject_width=rng.uniform(0.15, 0.22),
        e_share=rng.uniform(*kind_p["e_share"]), a_share=rng.uniform(*kind_p["a_share"]),
        e_centre=rng.uniform(65.0, 85.0) / diastole_ms,      # E peaks soon after ES
        e_width=rng.uniform(35.0, 45.0) / diastole_ms,
        a_centre=1.0 - rng.uniform(35.0, 50.0) / diastole_ms,  # the atrial kick ends at ED
        a_width=rng.uniform(22.0, 30.0) / diastole_ms)


# --- one patient --------------------------------------------------------------------------------

@dataclass
class SyntheticPatient:
    """One synthetic patient: several short-axis slices through the same cardiac cycle.

    slices: per slice (base to apex) a T x H x W float32 cine in scanner units.
    ed, es: 0-based frames of maximum / minimum LV volume, shared by all slices.
    lv_area: n_slices x T analytic LV blood-pool area in pixels (cavity ellipse, per frame).
    volume: T relative LV volume (EDV = 1) at the frames; lv_area[i] = lv_area[i, ed] * volume.
    lv_center: n_slices x T x 2 (row, col) of the LV cavity centre, breathing shifts included.
    blood_level, myocardium_level: clean signal of blood and myocardium (scanner units).
    """
    slices: list
    ed: int
    es: int
    n_frames: int
    ef: float
    kind: str
    lv_area: np.ndarray
    volume: np.ndarray
    lv_center: np.ndarray
    heart_rate: float
    es_fraction: float
    start_phase: float
    pixel_spacing: float
    slice_spacing: float
    blood_level: float
    myocardium_level: float
    index: int = 0
    shape: CurveShape | None = None


def _ellipse_mask(dy, dx, a, b, theta, edge=EDGE_PX):
    """Soft (partial-volume) mask of an ellipse; semi-axes a (along theta) and b, in pixels."""
    c, s = np.cos(theta), np.sin(theta)
    u = (c * dx + s * dy) / a
    v = (-s * dx + c * dy) / b
    f = u * u + v * v - 1.0
    # f / |grad f| approximates the signed distance near the edge, exactly 0 on the ellipse.
    grad = 2.0 * np.sqrt((u / a) ** 2 + (v / b) ** 2) + 1e-6
    return 1.0 / (1.0 + np.exp(np.clip(f / grad / edge, -50.0, 50.0)))


def _paint(img, mask, value):
    img *= 1.0 - mask
    img += value * mask


def _smooth_field(rng, size: int, knots: int = 6) -> np.ndarray:
    """A smooth random field of mean 0, std ~1, from a coarse grid upsampled by cubic splines."""
    coarse = rng.standard_normal((knots, knots))
    return ndimage.zoom(coarse, size / knots, order=3, mode="reflect")[:size, :size]


def _pick_grid(rng, n_frames, ed_frame, s_nominal, ef, min_margin, make_shape):
    """Place the frame grid on the cycle so that ED and ES are unique frames.

    The ED sample lies within GRID_JITTER frames of the volume maximum and the ES sample as
    close to the minimum; a draw is kept when both extremes beat every other frame by
    min_margin (share of EDV). Returns the shape, the ED offset and the systole in frames.
    """
    lo = int(np.ceil(ES_FRACTION_RANGE[0] * n_frames))
    hi = int(np.floor(ES_FRACTION_RANGE[1] * n_frames))
    n_systole = int(np.clip(round(s_nominal * n_frames), lo, hi))
    for _ in range(GRID_TRIES):
        j_ed, j_es = rng.uniform(-GRID_JITTER, GRID_JITTER, 2)
        shape = make_shape((n_systole + j_ed + j_es) / n_frames)
        v = volume_curve((np.arange(n_frames) - ed_frame + j_ed) / n_frames, ef, shape)
        order = np.argsort(v)
        if (order[-1] == ed_frame and order[0] == (ed_frame + n_systole) % n_frames
                and v[order[-1]] - v[order[-2]] >= min_margin
                and v[order[1]] - v[order[0]] >= min_margin):
            return shape, j_ed, n_systole
    return None


def generate_patient(rng: np.random.Generator, index: int, **overrides) -> SyntheticPatient:
    """Draw one patient (anatomy, cycle, noise) from rng; keyword overrides fix any parameter.

    Overridable: kind, n_frames, heart_rate, ef, ed_frame, n_slices, size, fov_mm, noise,
    bias, breathing_mm, scale, clean (True: no noise, bias or breathing; same anatomy and cycle),
    shift_mm (whole body moved (down, right) in the field of view) and rotation_deg (image
    rotated about its centre); pixel size = fov_mm / size.
    Every draw happens whether overridden or not, so the rest of the patient stays the same.
    Raises ValueError when the overrides leave no frame grid with unique ED and ES.
    """
    over = dict(overrides)

    def pick(name, drawn):
        return over.pop(name, drawn)

    kind = pick("kind", KIND_CYCLE[index % len(KIND_CYCLE)])
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    kp = KIND_PARAMS[kind]
    n_frames_drawn = int(rng.integers(FRAMES_RANGE[0], FRAMES_RANGE[1] + 1))
    n_frames = int(pick("n_frames", n_frames_drawn))
    if not FRAMES_RANGE[0] <= n_frames <= FRAMES_RANGE[1]:
        raise ValueError(f"n_frames {n_frames} is outside {FRAMES_RANGE}")
    # Frames per cycle = RR / temporal resolution: many frames go with slow hearts.
    rr_lo, rr_hi = 60000.0 / HEART_RATE_RANGE[1], 60000.0 / HEART_RATE_RANGE[0]
    t_res = rng.uniform(max(TEMPORAL_RES_MS[0], rr_lo / n_frames),
                        max(min(TEMPORAL_RES_MS[1], rr_hi / n_frames), rr_lo / n_frames))
    heart_rate = float(pick("heart_rate", 60000.0 / (n_frames * t_res)))
    ef = float(pick("ef", rng.uniform(*kp["ef"])))
    start_at_ed = rng.random() < P_START_AT_ED
    ed_drawn = int(rng.integers(0, n_frames))
    ed_frame = int(pick("ed_frame", 0 if start_at_ed else ed_drawn))
    if not 0 <= ed_frame < n_frames:
        raise ValueError(f"ed_frame {ed_frame} is outside 0..{n_frames - 1}")
    n_slices = int(pick("n_slices", rng.integers(SLICES_RANGE[0], SLICES_RANGE[1] + 1)))
    size = int(pick("size", SIZE))
    fov = float(pick("fov_mm", rng.uniform(*FOV_MM)))
    noise = float(pick("noise", rng.uniform(0.02, 0.05)))       # sigma / blood signal
    bias = float(pick("bias", rng.uniform(0.15, 0.35)))         # coil gradient strength
    breathing_mm = float(pick("breathing_mm", rng.uniform(1.0, 4.0)))
    scale = float(pick("scale", rng.uniform(400.0, 1400.0)))    # blood signal, scanner units
    clean = bool(pick("clean", False))
    # Placement in the field of view (no draws, so the rest of the patient stays the same):
    # the whole body shifted by (down, right) mm, and the image rotated about its centre.
    body_shift = np.asarray(pick("shift_mm", (0.0, 0.0)), dtype=np.float64)
    rotation = float(pick("rotation_deg", 0.0))
    if over:
        raise TypeError(f"unknown override(s): {', '.join(sorted(over))}")

    anatomy = _draw_anatomy(rng, kp, n_slices, size)
    anatomy["heart"] = anatomy["heart"] + body_shift
    anatomy["torso_shift"] = anatomy["torso_shift"] + body_shift
    rr_ms = 60000.0 / heart_rate
    s_nominal = rng.uniform(*SYSTOLE_MS) / rr_ms
    # Unique extremes in the smallest slice's pixel area (at the reference size), not only in
    # volume: the measured blood pool must give back ED and ES despite pixel quantisation.
    smallest = min(_lv_radius_mm(anatomy, i) for i in range(n_slices))
    ref_area = np.pi * (smallest * SIZE / fov) ** 2
    min_margin = max(MIN_EXTREME_MARGIN, MIN_MARGIN_PX / ref_area)
    shape_rng = np.random.default_rng(rng.integers(2 ** 63))
    # Rarely (a small cavity sampled very finely) no grid qualifies: then take one frame fewer,
    # unless the frame count was asked for.
    while (grid := _pick_grid(rng, n_frames, ed_frame, s_nominal, ef, min_margin,
                              lambda s: _draw_shape(shape_rng, s, rr_ms, kp))) is None:
        if "n_frames" in overrides or n_frames == FRAMES_RANGE[0]:
            raise ValueError(f"no frame grid with unique ED/ES for {kind} patient {index} "
                             f"(T={n_frames}, EF={ef:.2f}, heart rate {heart_rate:.0f})")
        n_frames -= 1
        ed_frame = ed_frame % n_frames if "ed_frame" not in overrides else ed_frame
        if ed_frame >= n_frames:
            raise ValueError(f"ed_frame {ed_frame} is outside 0..{n_frames - 1}")
    shape, j_ed, n_systole = grid
    ed, es = ed_frame, (ed_frame + n_systole) % n_frames
    phases = (np.arange(n_frames) - ed_frame + j_ed) / n_frames
    volume = volume_curve(phases, ef, shape)
    rv_volume = volume_curve(phases - RV_DELAY, rng.uniform(*kp["rv_ef"]), shape)

    px = fov / size
    slices, areas, centres = [], [], []
    for i in range(n_slices):
        breath = _breathing(rng, n_frames, rr_ms, breathing_mm / px) * (0.0 if clean else 1.0)
        field = _smooth_field(rng, size)
        img, area, centre = _render_slice(anatomy, i, volume, rv_volume, breath, size, px)
        if rotation:
            img, centre = _rotate(img, centre, rotation)
        if not clean:
            yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
            gain = np.exp(bias * (anatomy["coil"][0] * yy + anatomy["coil"][1] * xx)
                          + 0.08 * field).astype(np.float32)
            img *= gain
            sigma = np.float32(noise)
            re = img + sigma * rng.standard_normal(img.shape, dtype=np.float32)
            im = sigma * rng.standard_normal(img.shape, dtype=np.float32)
            img = np.sqrt(re * re + im * im)          # magnitude of complex Gaussian noise
        slices.append((img * np.float32(scale)).astype(np.float32))
        areas.append(area)
        centres.append(centre)
    return SyntheticPatient(
        slices=slices, ed=ed, es=es, n_frames=n_frames, ef=ef, kind=kind,
        lv_area=np.asarray(areas), volume=volume, lv_center=np.asarray(centres),
        heart_rate=heart_rate, es_fraction=shape.es_fraction,
        start_phase=float(np.mod(phases[0], 1.0)), pixel_spacing=px,
        slice_spacing=anatomy["slice_spacing"], blood_level=scale * TISSUE["blood"],
        myocardium_level=scale * TISSUE["myocardium"], index=index, shape=shape)


def _rotate(frames: np.ndarray, centres: np.ndarray, degrees: float):
    """Frames rotated about the image centre (counter-clockwise on screen) and the LV centres."""
    import cv2
    h, w = frames.shape[1:]
    about = ((w - 1) / 2.0, (h - 1) / 2.0)
    m = cv2.getRotationMatrix2D(about, degrees, 1.0)          # acts on (x = col, y = row)
    out = np.stack([cv2.warpAffine(f, m, (w, h), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
                    for f in frames])
    xy = np.stack([centres[:, 1], centres[:, 0], np.ones(len(centres))])
    moved = m @ xy
    return out, np.stack([moved[1], moved[0]], axis=1)


def _breathing(rng, n_frames, rr_ms, amplitude_px) -> np.ndarray:
    """T x 2 slow in-plane shift (rows, cols) in pixels: a 3.5-5 s breathing sinusoid."""
    period_ms = rng.uniform(3500.0, 5000.0)
    t = np.arange(n_frames) * rr_ms / n_frames
    direction = rng.normal([1.0, 0.3], 0.3)
    direction /= np.linalg.norm(direction)
    wave = np.sin(2 * np.pi * t / period_ms + rng.uniform(0, 2 * np.pi))
    return amplitude_px * wave[:, None] * direction[None, :]


def _draw_anatomy(rng, kp, n_slices, size) -> dict:
    """Patient anatomy in mm (image centre origin; x to the image right, y down = posterior)."""
    return dict(
        n_slices=n_slices, slice_spacing=float(rng.uniform(8.0, 10.0)),
        torso=(rng.uniform(150, 175), rng.uniform(105, 125)), fat_mm=rng.uniform(8, 20),
        muscle_mm=rng.uniform(10, 18), torso_shift=rng.uniform(-8, 8, 2),
        heart=np.array([rng.uniform(-20, 0), rng.uniform(10, 30)]),          # (y, x)
        taper=kp["taper"],
        apex_drift=rng.uniform(-6, 6, 2), theta=rng.uniform(0, np.pi),
        aspect=rng.uniform(1.0, 1.1), radius=rng.uniform(*kp["radius_mm"]),
        wall=rng.uniform(*kp["wall_mm"]), rv_angle=np.pi + rng.uniform(-0.05, 0.45),
        rv_width=rng.uniform(1.3, 1.6), rv_depth=rng.uniform(0.45, 0.7),
        rv_wall=rng.uniform(2.5, 4.0), fat_pad=rng.uniform(4, 9),
        liver=(rng.uniform(55, 75), rng.uniform(-110, -80)),
        coil=rng.normal(0.0, 1.0, 2), fat_patches=rng.standard_normal((5, 5)),
        texture=_smooth_field(rng, size, knots=12))


def _slice_level(an, i) -> float:
    return i / max(an["n_slices"] - 1, 1)                 # 0 base .. 1 apex


def _lv_radius_mm(an, i) -> float:
    """ED cavity radius of slice i: it shrinks from base to apex."""
    return an["radius"] * (1.05 - an["taper"] * _slice_level(an, i) ** 1.5)


def _render_slice(an, i, volume, rv_volume, breath, size, px):
    """Clean T x H x W frames of slice i (blood = 1), its LV cavity area (px) and centre."""
    n_frames = volume.size
    level = _slice_level(an, i)
    rv_scale = 1.0 - 0.55 * level
    centre = size / 2 + (an["heart"] + level * an["apex_drift"]) / px      # (row, col) pixels
    r_ed = _lv_radius_mm(an, i) / px
    wall = an["wall"] * (1.0 - 0.2 * level) / px
    area_ed = np.pi * r_ed ** 2
    myo_area = np.pi * ((r_ed + wall) ** 2 - r_ed ** 2)   # constant: the wall thickens in systole
    areas = area_ed * volume
    q = an["aspect"]

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    bg = _background(an, yy, xx, size, px, level)
    # The heart is redrawn per frame only inside its bounding box.
    half = int(np.ceil((r_ed + wall) * (1.0 + an["rv_width"]) + an["fat_pad"] / px
                       + np.abs(breath).max() + 4))
    r0, c0 = int(centre[0]) - half, int(centre[1]) - half
    r0, c0 = max(r0, 0), max(c0, 0)
    r1, c1 = min(r0 + 2 * half, size), min(c0 + 2 * half, size)
    by, bx = yy[r0:r1, c0:c1], xx[r0:r1, c0:c1]
    knots = an["fat_patches"].shape[0]
    patches = ndimage.zoom(an["fat_patches"], ((r1 - r0) / knots, (c1 - c0) / knots), order=3)
    patches = np.clip(0.55 + 0.35 * patches, 0.15, 1.0).astype(np.float32)
    frames = np.empty((n_frames, size, size), np.float32)
    centres = np.empty((n_frames, 2))
    theta = an["theta"]
    rv_dir = np.array([np.sin(an["rv_angle"]), np.cos(an["rv_angle"])])      # (row, col)
    ro_ed = r_ed + wall
    for t in range(n_frames):
        c = centre + breath[t]
        centres[t] = c
        dy, dx = by - np.float32(c[0]), bx - np.float32(c[1])
        frame = bg.copy()
        roi = frame[r0:r1, c0:c1]
        r_c = np.sqrt(areas[t] / np.pi)
        r_o = np.sqrt((areas[t] + myo_area) / np.pi)
        # RV crescent: an ellipse hugging the septum, its free wall moving with the RV volume.
        depth = an["rv_depth"] * ro_ed * rv_scale * rv_volume[t] ** 0.8
        a_rv = (1.2 * r_o + depth) / 2.0
        b_rv = an["rv_width"] * ro_ed * max(rv_scale, 0.3) * rv_volume[t] ** 0.25
        rc = rv_dir * (r_o + depth - a_rv)
        fat_a = max(a_rv + depth, ro_ed) + an["fat_pad"] / px
        fat_mask = _ellipse_mask(dy - rc[0] / 2, dx - rc[1] / 2, fat_a,
                                 max(b_rv, ro_ed) + an["fat_pad"] / px, an["rv_angle"])
        _paint(roi, fat_mask * patches, TISSUE["epicardial_fat"])
        rv_wall = an["rv_wall"] / px
        _paint(roi, _ellipse_mask(dy - rc[0], dx - rc[1], a_rv + rv_wall, b_rv + rv_wall,
                                  an["rv_angle"]), TISSUE["myocardium"])
        _paint(roi, _ellipse_mask(dy - rc[0], dx - rc[1], a_rv, b_rv, an["rv_angle"]),
               TISSUE["blood"])
        sq = np.sqrt(q)
        _paint(roi, _ellipse_mask(dy, dx, r_o * sq, r_o / sq, theta), TISSUE["myocardium"])
        _paint(roi, _ellipse_mask(dy, dx, r_c * sq, r_c / sq, theta), TISSUE["blood"])
        frames[t] = frame
    return frames, areas, centres


def _background(an, yy, xx, size, px, level) -> np.ndarray:
    """Static torso around the heart: fat, muscle, mediastinum, lungs, liver, spine, aorta."""
    cy, cx = size / 2 + an["torso_shift"] / px
    img = np.zeros((size, size), np.float32)
    a, b = an["torso"][0] / px, an["torso"][1] / px
    dy, dx = yy - cy, xx - cx
    _paint(img, _ellipse_mask(dy, dx, a, b, 0.0), TISSUE["fat"])
    f, m = an["fat_mm"] / px, an["muscle_mm"] / px
    _paint(img, _ellipse_mask(dy, dx, a - f, b - f, 0.0), TISSUE["muscle"])
    _paint(img, _ellipse_mask(dy, dx, a - f - m, b - f - m, 0.0), TISSUE["mediastinum"])
    inner_a, inner_b = a - f - m, b - f - m
    for side in (-1.0, 1.0):                               # lungs left and right of the heart
        _paint(img, _ellipse_mask(dy + 0.05 * inner_b, dx - side * 0.55 * inner_a,
                                  0.42 * inner_a, 0.78 * inner_b, side * 0.25), TISSUE["lung"])
    # The liver rises into lower (apical) slices under the right lung (image left).
    liver_r = (0.35 + 0.4 * level) * inner_b
    ly, lx = an["liver"][0] / px, an["liver"][1] / px
    inside = _ellipse_mask(dy, dx, inner_a, inner_b, 0.0)
    _paint(img, inside * _ellipse_mask(dy - ly, dx - lx, 1.3 * liver_r, liver_r, 0.3),
           TISSUE["liver"])
    spine_y = inner_b * 0.95
    _paint(img, _ellipse_mask(dy - spine_y, dx, 16 / px, 14 / px, 0.0), TISSUE["bone"])
    _paint(img, _ellipse_mask(dy - spine_y, dx, 12 / px, 10 / px, 0.0), TISSUE["marrow"])
    _paint(img, _ellipse_mask(dy - spine_y + 24 / px, dx - 22 / px, 11 / px, 11 / px, 0.0),
           TISSUE["aorta"])
    _paint(img, _ellipse_mask(dy - spine_y + 28 / px, dx + 8 / px, 8 / px, 9 / px, 0.0),
           TISSUE["muscle"])                              # oesophagus
    img *= 1.0 + 0.06 * an["texture"]                      # soft tissue is not uniform
    return img


# --- writers ------------------------------------------------------------------------------------

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
UID_PREFIX = "1.2.826.0.1.3680043.8.498."          # pydicom's UID root
NONTRIVIAL_RESCALE = ((0.5, -1024.0), (2.0, 0.0), (0.25, -100.0))   # (slope, intercept)
P_NONTRIVIAL_RESCALE = 0.4


def _uid(*parts) -> str:
    """A deterministic DICOM UID from its parts (the same seed writes the same UIDs)."""
    from pydicom.uid import generate_uid
    return generate_uid(prefix=UID_PREFIX, entropy_srcs=[str(p) for p in parts])


def _orientation(rng) -> tuple[np.ndarray, np.ndarray]:
    """Row and column direction cosines of an oblique short-axis plane."""
    normal = np.array([0.6, -0.55, 0.58]) + rng.normal(0, 0.08, 3)
    normal /= np.linalg.norm(normal)
    row = np.cross(normal, [0.0, 0.0, 1.0])
    row /= np.linalg.norm(row)
    col = np.cross(normal, row)
    return row, col


def write_dicom_series(folder, frames, *, series_uid: str, slice_location: float,
                       study_uid: str | None = None, rescale=(1.0, 0.0), dtype="int16",
                       trigger_times=None, instance_numbers=None, pixel_spacing=1.4,
                       orientation=None, position=None, heart_rate=70.0, series_number=1,
                       patient_id=FAKE_PATIENT_ID + "0000", file_names=None, subfolders=None,
                       rng=None, omit=(), tags=None) -> list[Path]:
    """Write frames (T x H x W, or a list of 2-D arrays) as single-frame MR Image Storage files.

    Stored value = round((frame - intercept) / slope) in int16 or uint16. Files get random hex
    names (file_names to choose them) spread over subfolders (relative paths, chosen at
    random per file). trigger_times / instance_numbers default to the cycle order. For tests
    of the reader: omit names tags to leave out (e.g. "TriggerTime", "PixelData"); tags sets
    or overrides tags on every file. Returns the written paths in frame order.
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

    rng = np.random.default_rng(0) if rng is None else rng
    folder = Path(folder)
    n = len(frames)
    rr_ms = 60000.0 / heart_rate
    trigger_times = ([round(k * rr_ms / n, 2) for k in range(n)] if trigger_times is None
                     else list(trigger_times))
    instance_numbers = list(range(1, n + 1)) if instance_numbers is None else instance_numbers
    row, col = _orientation(np.random.default_rng(0)) if orientation is None else orientation
    normal = np.cross(row, col)
    study_uid = study_uid or _uid("study", series_uid)
    slope, intercept = float(rescale[0]), float(rescale[1])
    info = np.iinfo(dtype)
    subfolders = list(subfolders) if subfolders else ["."]
    names = file_names or [f"{v:08X}" for v in rng.integers(0, 2 ** 32, n, dtype=np.uint64)]
    paths = []
    for k, frame in enumerate(frames):
        frame = np.asarray(frame, dtype=np.float64)
        stored = np.round((frame - intercept) / slope)
        if stored.min() < info.min or stored.max() > info.max:
            raise ValueError(f"frame {k} does not fit {dtype} with slope {slope}, "
                             f"intercept {intercept}")
        rows, cols = frame.shape
        if position is None:
            # Top-left pixel centre: the plane centred on the isocentre line, shifted along normal.
            pos = (normal * slice_location - row * pixel_spacing * cols / 2
                   - col * pixel_spacing * rows / 2)
        else:
            pos = np.asarray(position, dtype=np.float64)
        sop_uid = _uid("sop", series_uid, slice_location, k)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MR_IMAGE_STORAGE, sop_uid
        ds.PatientName, ds.PatientID = FAKE_PATIENT_NAME, patient_id
        ds.PatientBirthDate, ds.PatientSex = FAKE_BIRTH_DATE, "O"
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = FAKE_STUDY_DATE
        ds.StudyTime = "101500"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.FrameOfReferenceUID = _uid("frame", study_uid)
        ds.StudyID, ds.SeriesNumber, ds.AcquisitionNumber = "1", series_number, 1
        ds.Modality, ds.Manufacturer = "MR", "TempRegNet synthetic phantom"
        ds.SeriesDescription = "cine SSFP short axis (synthetic)"
        ds.ScanningSequence, ds.SequenceVariant, ds.MRAcquisitionType = "GR", "SS", "2D"
        ds.RepetitionTime, ds.EchoTime, ds.FlipAngle = 3.2, 1.6, 60
        ds.InstanceNumber = int(instance_numbers[k])
        ds.TriggerTime = float(trigger_times[k])
        ds.NominalInterval = round(rr_ms)
        ds.HeartRate = round(heart_rate)
        ds.CardiacNumberOfImages = n
        ds.ImagePositionPatient = [round(float(v), 4) for v in pos]
        ds.ImageOrientationPatient = [round(float(v), 6) for v in (*row, *col)]
        ds.SliceLocation = round(float(slice_location), 4)
        ds.SliceThickness = 8.0
        ds.PixelSpacing = [round(float(pixel_spacing), 6)] * 2
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1 if info.min < 0 else 0
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.RescaleType = "US"
        ds.WindowCenter, ds.WindowWidth = round(float(frame.mean())), round(float(np.ptp(frame)))
        ds.PixelData = stored.astype(dtype).tobytes()
        for key, value in (tags or {}).items():
            setattr(ds, key, value)
        for key in omit:
            if key in ds:
                delattr(ds, key)
        path = folder / subfolders[int(rng.integers(len(subfolders)))] / names[k]
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _nested_folders(rng, depth=2, count=3) -> list[str]:
    """Random nested folder names like a PACS export (e.g. 'A3F0/9C1D')."""
    return ["/".join(f"{v:04X}" for v in rng.integers(0, 2 ** 16, depth)) for _ in range(count)]


def _patients(n_patients: int, seed: int, size: int, progress: bool):
    """Patient index, its own generator and the patient, deterministic per (seed, index)."""
    from tqdm import tqdm
    for index in tqdm(range(n_patients), desc="synthetic patients", unit="patient",
                      disable=not progress):
        rng = np.random.default_rng([seed, index])
        yield index, rng, generate_patient(rng, index, size=size)


def _check_out_dir(out_dir) -> Path:
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: not empty; refusing to write a cohort into it")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _sequence_record(p: SyntheticPatient, slice_index: int) -> dict:
    return dict(patient=p.index, slice=slice_index, n_frames=p.n_frames, ed=p.ed, es=p.es,
                kind=p.kind, ef=round(p.ef, 4), heart_rate=round(p.heart_rate, 2),
                es_fraction=round(p.es_fraction, 4))


def write_dicom_cohort(out_dir, n_patients: int, seed: int = 0, *, size: int = SIZE,
                       progress: bool = False) -> list[dict]:
    """Write n_patients as DICOM cine series under out_dir, plus truth.json; returns its records.

    Each patient is a folder caseNNN/ of randomly named files spread over nested folders in
    random order; half the patients put every slice in one series (told apart by position),
    the others one series per slice. Records: folder, files (frame order), series_uid,
    slice_location, slice, n_frames, ed, es (0-based) and the phantom's parameters.
    """
    out = _check_out_dir(out_dir)
    records = []
    for index, rng, p in _patients(n_patients, seed, size, progress):
        folder = f"case{index + 1:03d}"
        wrng = np.random.default_rng([seed, index, 1])        # writer draws: not the phantom's
        study_uid = _uid("study", seed, index)
        one_series = wrng.random() < 0.5
        subfolders = _nested_folders(wrng)
        orientation = _orientation(wrng)
        dtype = "int16" if wrng.random() < 0.5 else "uint16"
        base = wrng.uniform(-40.0, 40.0)
        n_slices = len(p.slices)
        for i, frames in enumerate(p.slices):
            series_key = "all" if one_series else i
            series_rng = np.random.default_rng([seed, index, 2, 0 if one_series else i])
            rescale = ((1.0, 0.0) if series_rng.random() >= P_NONTRIVIAL_RESCALE else
                       NONTRIVIAL_RESCALE[int(series_rng.integers(len(NONTRIVIAL_RESCALE)))])
            series_uid = _uid("series", seed, index, series_key)
            location = round(base - i * p.slice_spacing, 3)          # base to apex
            numbers = (np.arange(p.n_frames) + 1 + (i * p.n_frames if one_series else 0))
            paths = write_dicom_series(
                out / folder, frames, series_uid=series_uid, slice_location=location,
                study_uid=study_uid, rescale=rescale, dtype=dtype, pixel_spacing=p.pixel_spacing,
                orientation=orientation, heart_rate=p.heart_rate,
                series_number=1 if one_series else i + 1,
                patient_id=f"{FAKE_PATIENT_ID}{index:04d}", subfolders=subfolders, rng=wrng,
                instance_numbers=numbers.tolist())
            records.append(dict(_sequence_record(p, i), format="dicom", folder=folder,
                                files=[str(q.relative_to(out)) for q in paths],
                                series_uid=series_uid, slice_location=location,
                                n_slices=n_slices, rescale=list(rescale)))
    _write_truth(out, records, "dicom", n_patients, seed, size)
    return records


def write_nifti_cohort(out_dir, n_patients: int, seed: int = 0, *, size: int = SIZE,
                       progress: bool = False) -> list[dict]:
    """Write n_patients in ACDC layout (patientNNN/patientNNN_4d.nii.gz + Info.cfg), truth.json.

    The volume is int16 with axes (x, y, slice, time), x the image column; Info.cfg has
    1-based ED/ES as in ACDC. Records are per slice with 0-based ed/es.
    """
    import nibabel as nib

    out = _check_out_dir(out_dir)
    records = []
    for index, rng, p in _patients(n_patients, seed, size, progress):
        name = f"patient{index + 1:03d}"
        (out / name).mkdir()
        volume = np.stack(p.slices)                              # slice x T x rows x cols
        data = np.clip(np.round(volume), -32768, 32767).astype(np.int16).transpose(3, 2, 0, 1)
        affine = np.diag([p.pixel_spacing, p.pixel_spacing, p.slice_spacing, 1.0])
        image = nib.Nifti1Image(data, affine)
        image.header.set_zooms((p.pixel_spacing, p.pixel_spacing, p.slice_spacing, 1.0))
        image.header.set_xyzt_units("mm")
        path = out / name / f"{name}_4d.nii.gz"
        nib.save(image, path)
        wrng = np.random.default_rng([seed, index, 1])
        height, weight = wrng.uniform(150, 195), wrng.uniform(50, 110)
        (out / name / "Info.cfg").write_text(
            f"ED: {p.ed + 1}\nES: {p.es + 1}\nGroup: {ACDC_GROUP[p.kind]}\n"
            f"Height: {height:.1f}\nNbFrame: {p.n_frames}\nWeight: {weight:.1f}\n")
        for i in range(len(p.slices)):
            records.append(dict(_sequence_record(p, i), format="nifti", folder=name,
                                file=str(path.relative_to(out)), n_slices=len(p.slices)))
    _write_truth(out, records, "nifti", n_patients, seed, size)
    return records


def _write_truth(out: Path, records, fmt, n_patients, seed, size) -> None:
    """truth.json, atomically: the phantoms' parameters and 0-based ED/ES; no identity."""
    truth = dict(generator="data_prep.synthetic", format=fmt, patients=n_patients, seed=seed,
                 size=size, frames="0-based", sequences=records)
    from tempregnet.outputs import write_text_atomic
    write_text_atomic(out / "truth.json", json.dumps(truth, indent=1))


# --- command line -------------------------------------------------------------------------------

WRITERS = {"dicom": write_dicom_cohort, "nifti": write_nifti_cohort}


def main(argv=None) -> int:
    """Write a synthetic cohort to OUT atomically (temporary folder, then rename)."""
    parser = argparse.ArgumentParser(prog="python -m data_prep.synthetic", description=__doc__
                                     .splitlines()[0])
    parser.add_argument("out", type=Path, help="output folder (must not exist, unless --force)")
    parser.add_argument("--patients", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", choices=sorted(WRITERS), default="dicom")
    parser.add_argument("--size", type=int, default=SIZE, help="image rows = columns")
    parser.add_argument("--force", action="store_true", help="replace an existing OUT")
    args = parser.parse_args(argv)
    if args.patients < 1 or args.size < 32:
        parser.error("--patients must be >= 1 and --size >= 32")
    out = args.out
    if out.exists() and not args.force:
        print(f"{out}: exists; pass --force to replace it", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        records = WRITERS[args.format](tmp, args.patients, args.seed, size=args.size,
                                       progress=True)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / "out")
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    print(f"wrote {len(records)} sequences of {args.patients} patients ({args.format}) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
