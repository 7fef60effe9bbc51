"""The fit_rwave decoder (data_prep.rwave): one rule for scans that start at ED and those that do not."""
import numpy as np
import pytest

from tempregnet.labels import decode_steps, step_positions, volume_label
from data_prep.rwave import TIE, rwave_frame, snap_ed, trigger_rwave

T = 20


def steps_of(curve_fn, n_frames=T, n_steps=20):
    return curve_fn(step_positions(n_frames, n_steps))


def test_exact_eq4_curves_decode_as_the_fit_does():
    for ed, es in ((0, 7), (18, 7), (5, 12)):
        y = steps_of(lambda k: volume_label(k, T, ed, es))
        assert decode_steps(y, T, "cycle", "fit_rwave") == decode_steps(y, T, "cycle", "fit") \
            == (ed, es)


def test_a_flat_top_across_the_wrap_goes_to_the_r_wave_frame():
    """Peak at the last frame, the first frame within TIE of it: ED = frame 0 (ACDC-like)."""
    y = volume_label(np.arange(T), T, T - 1, 7)
    y[0] = y[T - 1] - 0.5 * TIE * np.ptp(y)
    assert snap_ed(y, T - 1, 0.0) == 0
    assert snap_ed(y, T - 1, rwave=19.5) == 0          # R wave half a frame before frame 0
    assert snap_ed(y, T - 1, rwave=10.0) == T - 1     # an R wave elsewhere: no move
    y[0] = y[T - 1] - 2 * TIE * np.ptp(y)
    assert snap_ed(y, T - 1, 0.0) == T - 1             # not flat: the fit stands


def test_a_clear_peak_before_the_r_wave_stays():
    """ED two frames before the R wave and clearly above frame 0 (Sunnybrook-like)."""
    y = volume_label(np.arange(T), T, T - 2, 7)
    assert y[T - 2] - max(y[T - 1], y[0]) > TIE * np.ptp(y)
    assert snap_ed(y, T - 2, 0.0) == T - 2
    assert snap_ed(y, 3, 0.0) == 3                     # ED never moves backwards


def test_r_wave_position_from_trigger_times():
    triggers = [20.0 + 40.0 * k for k in range(T)]          # Sunnybrook's: 20 ... 780 ms
    assert trigger_rwave(triggers) == pytest.approx(19.5)   # half a frame before frame 0
    assert trigger_rwave(triggers, nominal_rr_ms=800.0) == pytest.approx(19.5)
    assert trigger_rwave([0.0, None, 80.0]) == 0.0            # incomplete: assume frame 0
    assert rwave_frame(None, None, T) == 0.0
    assert rwave_frame(0.0, 800.0, T) == 0.0
