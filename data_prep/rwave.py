"""One decoder for scans that start at ED and scans whose ED lies before the end of the cycle.

Gated cine starts at the R wave (DICOM TriggerTime of the first frame ~0 ms), and ED is the
phase of largest volume, at or just before the R wave. The "fit_rwave" decoder takes the cyclic
Eq. 4 fit (any ED anywhere, as the "cycle" convention allows), then, among the frames near the
fitted ED whose predicted value is within TIE of the curve's peak there, takes the one nearest
the R wave. A clear peak two frames before the R wave stays there (Sunnybrook's ED); a flat top
that straddles the wrap goes to the R-wave frame instead of the cycle's last frame (ACDC's ED at
frame 1). TIE and WINDOW are fixed (not tuned on any test fold): docs/scale-and-crop.md.
"""
from __future__ import annotations

import numpy as np

TIE = 0.05          # share of the curve's range: values this close to the peak count as the peak
WINDOW = 0.1        # frames within this share of the cycle (at least 1) of the fitted ED
RWAVE_KEY = "rwave_frame"   # CineSequence.meta: R-wave position in frames (0: at frame 0)


def rwave_frame(first_trigger_ms, rr_ms, n_frames: int) -> float:
    """Where the R wave falls, in frames of the sequence: 0 unless trigger times say otherwise."""
    if first_trigger_ms is None or not rr_ms or rr_ms <= 0:
        return 0.0
    return float(np.mod(-first_trigger_ms / rr_ms * n_frames, n_frames))


def _cyclic_distance(a, b, n: int):
    d = np.abs(np.asarray(a, dtype=np.float64) - b) % n
    return np.minimum(d, n - d)


def snap_ed(curve_on_frames, ed_fit: int, rwave: float = 0.0) -> int:
    """ED near the fitted one: among the near-peak frames, the one nearest the R wave."""
    y = np.asarray(curve_on_frames, dtype=np.float64)
    n = y.size
    span = float(y.max() - y.min())
    reach = max(1, int(round(WINDOW * n)))
    near = np.array([(ed_fit + k) % n for k in range(-reach, reach + 1)])
    peak = float(y[near].max())
    tied = near[y[near] >= peak - TIE * span]
    after = np.mod(tied - rwave, n)                 # ties: the frame after the R wave first
    return int(tied[np.lexsort((after, np.round(_cyclic_distance(tied, rwave, n), 6)))[0]])


def trigger_rwave(triggers_ms, nominal_rr_ms=None) -> float:
    """R-wave position in frames from a slice's trigger times (ms after the R wave, in order)."""
    t = [v for v in triggers_ms if v is not None]
    n = len(triggers_ms)
    if len(t) != n or n < 2:
        return 0.0
    rr = nominal_rr_ms or (t[-1] - t[0]) * n / (n - 1)    # retrospective gating covers the RR
    return rwave_frame(t[0], rr, n)
