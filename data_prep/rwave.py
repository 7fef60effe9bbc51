"""One decoder for scans that start at ED and scans whose ED lies before the end of the cycle.

Gated cine starts at the R wave (DICOM TriggerTime of the first frame ~0 ms), and ED is the
phase of largest volume, at or just before the R wave. The "fit_rwave" decoder takes the cyclic
Eq. 4 fit (ED anywhere, as the "cycle" convention allows); when the fitted ED lies at most
WINDOW of the cycle before the first frame after the R wave and the curve there is within TIE of
the fitted ED's value (a flat top across the wrap), ED moves forward to that frame. A clear peak
two frames before the R wave stays (Sunnybrook's ED); a plateau that straddles the wrap goes to
frame 0 rather than the cycle's last frame (ACDC's ED). ED never moves backwards, and never
further than WINDOW. TIE and WINDOW are fixed, not tuned on any data: docs/scale-and-crop.md.
"""
from __future__ import annotations

import numpy as np

TIE = 0.05          # share of the curve's range: this close to the fitted ED's value is "flat"
WINDOW = 0.1        # ED moves at most this share of the cycle (at least 1 frame) forward
RWAVE_KEY = "rwave_frame"   # CineSequence.meta: R-wave position in frames (0: at frame 0)


def rwave_frame(first_trigger_ms, rr_ms, n_frames: int) -> float:
    """Where the R wave falls, in frames of the sequence: 0 unless trigger times say otherwise."""
    if first_trigger_ms is None or not rr_ms or rr_ms <= 0:
        return 0.0
    return float(np.mod(-first_trigger_ms / rr_ms * n_frames, n_frames))


def first_frame_after(rwave: float, n_frames: int) -> int:
    """The first frame at or after the R wave (at rwave, in frames)."""
    return int(np.ceil(rwave - 1e-9)) % n_frames


def snap_ed(curve_on_frames, ed_fit: int, rwave: float = 0.0) -> int:
    """The fitted ED, or the first frame after the R wave when the curve is flat between them."""
    y = np.asarray(curve_on_frames, dtype=np.float64)
    n = y.size
    r_frame = first_frame_after(rwave, n)
    ahead = (r_frame - ed_fit) % n                          # frames from the fitted ED forward
    reach = max(1, int(round(WINDOW * n)))
    if 0 < ahead <= reach and y[r_frame] >= y[ed_fit] - TIE * float(np.ptp(y)):
        return r_frame
    return int(ed_fit)


def trigger_rwave(triggers_ms, nominal_rr_ms=None) -> float:
    """R-wave position in frames from a slice's trigger times (ms after the R wave, in order)."""
    t = [v for v in triggers_ms if v is not None]
    n = len(triggers_ms)
    if len(t) != n or n < 2:
        return 0.0
    rr = nominal_rr_ms or (t[-1] - t[0]) * n / (n - 1)    # retrospective gating covers the RR
    return rwave_frame(t[0], rr, n)
