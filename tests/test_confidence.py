"""The detection confidence (labels.decode_detail) against a brute-force least-squares reference,
the fitted curve the plots draw, and the calibration table (tempregnet.calibration) by hand."""
import numpy as np
import pytest

from tempregnet import calibration
from tempregnet.labels import (DECODERS, decode_detail, decode_steps, step_positions,
                               volume_label)

N_STEPS = 20


def reference_rss(curve, n_frames):
    """Per (ED, ES): residual of the least-squares a + b * template with b >= 0 (np.polyfit,
    the constant fit where the slope comes out negative)."""
    pos = step_positions(n_frames, N_STEPS)
    out = {}
    for ed in range(n_frames):
        for es in range(n_frames):
            if ed == es:
                continue
            t = volume_label(pos, n_frames, ed, es)
            b, a = np.polyfit(t, curve, 1)
            fitted = a + b * t if b > 0 else np.full_like(curve, curve.mean())
            out[ed, es] = float(((curve - fitted) ** 2).sum())
    return out


def reference_confidence(curve, n_frames):
    rss = reference_rss(curve, n_frames)
    ed, es = min(rss, key=rss.get)
    near = [v for (a, b), v in rss.items() if abs(a - ed) <= 1 and abs(b - es) <= 1]
    far = [v for (a, b), v in rss.items() if not (abs(a - ed) <= 1 and abs(b - es) <= 1)]
    return (ed, es), 1 - min(near) / min(far)


@pytest.mark.parametrize("seed", range(6))
def test_confidence_matches_the_brute_force_reference(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(12, 31))
    ed, es = 0, int(rng.integers(5, n - 3))
    curve = 3 * volume_label(step_positions(n, N_STEPS), n, ed, es) + 1 \
        + rng.normal(0, rng.uniform(0.1, 1.5), N_STEPS)
    d = decode_detail(curve, n, "cycle", "fit")
    answer, want = reference_confidence(curve, n)
    assert (d.ed, d.es) == answer == decode_steps(curve, n, "cycle", "fit")
    assert d.confidence == pytest.approx(want, abs=1e-9)
    assert 0 <= d.confidence <= 1


def test_a_clean_curve_is_confident_and_an_ambiguous_one_is_not():
    n = 25
    pos = step_positions(n, N_STEPS)
    clean = volume_label(pos, n, 0, 9)
    assert decode_detail(clean, n).confidence > 0.99
    # two systoles of equal weight, ES 9 and ES 17: either answer fits as well as the other
    mixed = volume_label(pos, n, 0, 9) + volume_label(pos, n, 0, 17)
    assert decode_detail(mixed, n).confidence < 0.1
    assert decode_detail(np.ones(N_STEPS), n).confidence == 0.0      # a flat curve: nothing


def test_confidence_counts_the_decoders_own_answers():
    """fit_rwave moves a fitted ED at the cycle's last frame onto frame 0 when the top is flat:
    the placements it would move are not alternatives to the answer it gives."""
    n = 20
    pos = step_positions(n, N_STEPS)
    flat_top = volume_label(pos, n, n - 1, 8)
    flat_top[0] = flat_top[n - 1] - 0.04                  # within data_prep.rwave.TIE of the peak
    plain, snapped = decode_detail(flat_top, n, "cycle", "fit"), \
        decode_detail(flat_top, n, "cycle", "fit_rwave")
    assert (plain.ed, plain.es) == (n - 1, 8) and plain.confidence < 0.1   # 19 or 0: a toss-up
    assert (snapped.ed, snapped.es) == (0, 8) == decode_steps(flat_top, n, "cycle", "fit_rwave")
    assert snapped.confidence > 0.5                     # both go to 0 under fit_rwave
    for method in DECODERS:
        d = decode_detail(flat_top, n, "cycle", method)
        assert (d.ed, d.es) == decode_steps(flat_top, n, "cycle", method)
        assert 0 <= d.confidence <= 1


def test_the_fitted_curve_is_the_least_squares_fit_and_its_minimum_is_es():
    """What the plot draws: offset + scale * template of the best placement, whose minimum over
    the frames is the ES it reports (the marker sits on the drawn line's minimum)."""
    rng = np.random.default_rng(3)
    n = 17
    pos = step_positions(n, N_STEPS)
    curve = volume_label(pos, n, 0, 7) + rng.normal(0, 0.2, N_STEPS)
    d = decode_detail(curve, n, "cycle", "fit")
    t = volume_label(pos, n, d.ed, d.es)
    b, a = np.polyfit(t, curve, 1)
    np.testing.assert_allclose(d.fit.curve_at(pos), a + b * t, atol=1e-9)
    fine = np.linspace(0, n - 1, 50 * n)
    assert int(np.argmin(d.fit.curve_at(np.arange(n)))) == d.es
    assert abs(fine[np.argmin(d.fit.curve_at(fine))] - d.es) < 0.05
    assert abs(fine[np.argmax(d.fit.curve_at(fine))] - d.ed) < 0.05


def _records(conf, errors):
    """Records of 20 frames, truth (0, 8); errors: ES error in frames."""
    return [{"n_frames": 20, "ed_true": 0, "es_true": 8, "ed_pred": 0, "es_pred": 8 + e,
             "confidence": c} for c, e in zip(conf, errors)]


def test_calibration_table_by_hand():
    # 20 detections; the 4 errors > 1 frame sit at confidences 0.05, 0.15, 0.5 and 0.95
    conf = np.round(np.linspace(0.0, 0.95, 20), 2)
    errors = [0] * 20
    errors[1], errors[3], errors[10], errors[19] = 2, 5, 3, 2
    errors[4] = 1                                         # one frame off: not an error
    cal = calibration.calibration(_records(conf, errors))
    assert [b["n"] for b in cal["deciles"]] == [2] * 10
    assert [b["n_errors"] for b in cal["deciles"]] == [1, 1, 0, 0, 0, 1, 0, 0, 0, 1]
    assert cal["deciles"][0]["afd_es"] == pytest.approx(1.0)       # errors 0 and 2
    assert cal["deciles"][2]["afd_es"] == pytest.approx(0.5)       # errors 1 and 0
    s = cal["shares"]["error"]
    assert s["n_errors"] == 4
    assert s["least_10pct"] == {"n_detections": 2, "n_errors": 1, "share_of_errors": 0.25,
                                "best_possible_share": 0.5}
    assert s["least_20pct"] == {"n_detections": 4, "n_errors": 2, "share_of_errors": 0.5,
                                "best_possible_share": 1.0}
    assert cal["shares"]["error_es"]["n_errors"] == 4 and cal["shares"]["error_ed"]["n_errors"] == 0
    text = calibration.markdown(cal)
    assert "least confident 20 % (4 detections): 2 (50 %; at most 100 %)" in text


def test_calibration_orders_by_confidence_not_by_record_order():
    conf = [0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.6, 0.4, 0.55, 0.45]
    errors = [0, 4, 0, 4, 0, 0, 0, 0, 0, 0]
    s = calibration.calibration(_records(conf, errors))["shares"]["error"]
    assert s["least_20pct"]["share_of_errors"] == 1.0 and s["least_10pct"]["n_errors"] == 1


def test_ranking_auc_by_hand():
    # errors at 0.1 and 0.5, correct at 0.2, 0.5, 0.9: pairs below 1 + 2 + 0.5 (tie) + 1 of 6
    assert calibration.ranking_auc([0.1, 0.5, 0.2, 0.5, 0.9],
                                   [True, True, False, False, False]) == pytest.approx(4.5 / 6)
    assert calibration.ranking_auc([0.1, 0.2], [True, True]) is None


def test_cyclic_errors_are_counted_apart():
    recs = [{"n_frames": 20, "ed_true": 0, "es_true": 8, "ed_pred": 19, "es_pred": 8,
             "confidence": 0.5}]
    s = calibration.calibration(recs, n_bins=1)["shares"]
    assert s["error"]["n_errors"] == 1 and s["error_cyclic"]["n_errors"] == 0


@pytest.mark.parametrize("convention", ["cycle", "paper"])
@pytest.mark.parametrize("n_frames", [2, 7, 30])
def test_fit_templates_are_volume_label_per_placement(convention, n_frames):
    """The fit's templates, built for all placements at once, are volume_label's, bit for bit."""
    from tempregnet.labels import _TEMPLATE_CACHE, _templates
    _TEMPLATE_CACHE.clear()
    eds, ess, rows = _templates(n_frames, N_STEPS, convention)
    pos = step_positions(n_frames, N_STEPS)
    assert len(eds) == (n_frames * (n_frames - 1) // (2 if convention == "paper" else 1))
    for ed, es, row in zip(eds, ess, rows):
        np.testing.assert_array_equal(row, volume_label(pos, n_frames, int(ed), int(es), convention))
