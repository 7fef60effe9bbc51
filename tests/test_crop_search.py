"""The crop finder's two-step search (issue 23's speed): the score on every STRIDE-th grid pixel
from a folded FFT bank, then each pixel near the pick from direct kernel sums; both against the
full bank (itself checked against cv2.filter2D in tests/test_heart_crop.py)."""
from __future__ import annotations

import numpy as np
import pytest

from data_prep import heart_crop as hc

SHAPES = [(47, 44), (64, 90), (33, 51), (125, 125)]


@pytest.mark.parametrize("shape", SHAPES)
def test_strided_bank_is_the_full_bank_at_even_pixels(shape):
    image = np.random.default_rng(4).random(shape).astype(np.float32)
    for which in (0, 1):
        full = hc._filter_bank(image, which)
        got = hc._filter_bank(image, which, hc.STRIDE)
        assert got.shape == full[:, ::2, ::2].shape
        np.testing.assert_allclose(got, full[:, ::2, ::2], atol=2e-6)


@pytest.mark.parametrize("shape", SHAPES)
def test_direct_kernel_sums_are_the_bank_there(shape):
    """Inside and at every border (where the reflected padding counts)."""
    image = np.random.default_rng(5).random(shape).astype(np.float32)
    h, w = shape
    for which in (0, 1):
        full = hc._filter_bank(image, which)
        for r0, c0, rows, cols in ((0, 0, 3, 4), (h - 5, w - 2, 5, 2), (h // 2, 1, 4, 5)):
            np.testing.assert_allclose(hc._filter_at(hc._padded(image, which), which, r0, c0,
                                                     rows, cols),
                                       full[:, r0:r0 + rows, c0:c0 + cols], atol=2e-6)


def _full_score(m):
    """The score at every grid pixel, as the search without the coarse step gives it."""
    return hc._best_disc(hc._filter_bank(m["mean"], 0), hc._filter_bank(m["h1"], 1), m["prior"])


def test_refine_takes_the_best_pixel_near_the_coarse_one():
    from data_prep.synthetic import generate_patient
    p = generate_patient(np.random.default_rng([7, 1]), 1, n_slices=1)
    m = hc.maps(p.slices[0], (p.pixel_spacing,) * 2)
    score, radius = _full_score(m)
    np.testing.assert_allclose(m["score"], score[::2, ::2], rtol=1e-4, atol=1e-7)
    h, w = score.shape
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)

    def weight(r, c):
        return np.exp(-((r - 20.0) ** 2 + (c - 31.0) ** 2) / 200.0)

    for r, c, wt in ((10, 12, None), (0, 0, weight), (h // 2, w // 2, weight),
                     ((h - 1) // 2, (w - 1) // 2, None)):
        reach, stride = hc.REACH_PX, hc.STRIDE
        lo_r, lo_c = max(stride * r - reach, 0), max(stride * c - reach, 0)
        window = (slice(lo_r, min(stride * r + reach + 1, h)),
                  slice(lo_c, min(stride * c + reach + 1, w)))
        weighted = score[window] * (1.0 if wt is None else wt(rows[window], cols[window]))
        i, j = np.unravel_index(int(np.argmax(weighted)), weighted.shape)
        got = hc.refine(m, r, c, wt)
        assert got[:2] == (lo_r + i, lo_c + j)
        assert got[2] == pytest.approx(score[lo_r + i, lo_c + j], abs=1e-5 * float(score.max()))
        assert got[3] == radius[lo_r + i, lo_c + j]
