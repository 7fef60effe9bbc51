"""Properties of the shared ED/ES decoders (tempregnet.labels.decode_ed_es / decode_steps)."""
import numpy as np
import pytest

from tempregnet.labels import (decode_ed_es, decode_steps, label_curve, step_positions, steps_to_frames,
                              volume_label)

N_STEPS = 20                      # the LSTM grid of the README contract
LENGTHS = range(12, 36)           # sequence lengths the contract allows (12-35 frames)


def placements(n_frames):
    """Every (ED, ES) pair of distinct frames, ED before or after ES."""
    return [(ed, es) for ed in range(n_frames) for es in range(n_frames) if ed != es]


def cyclic_distance(a, b, n_frames):
    d = abs(a - b)
    return min(d, n_frames - d)


@pytest.mark.parametrize("n_frames", LENGTHS)
def test_cycle_label_curve_decodes_exactly_for_every_placement(n_frames):
    wrong = [(ed, es) for ed, es in placements(n_frames)
             if decode_ed_es(label_curve(n_frames, ed, es), cyclic=True) != (ed, es)]
    assert wrong == []


@pytest.mark.parametrize("n_frames", LENGTHS)
def test_step_fit_decodes_cycle_labels_exactly_for_every_placement(n_frames):
    pos = step_positions(n_frames, N_STEPS)
    wrong = [(ed, es) for ed, es in placements(n_frames)
             if decode_steps(volume_label(pos, n_frames, ed, es), n_frames, "cycle", "fit")
             != (ed, es)]
    assert wrong == []


def test_ed_after_es_and_ed_at_zero_are_both_exact():
    # The two placements the README says Eq. 4 verbatim cannot tell apart.
    n = 25
    for ed, es in ((0, 9), (24, 9), (17, 3), (3, 0)):
        assert decode_ed_es(label_curve(n, ed, es)) == (ed, es)
        steps = volume_label(step_positions(n, N_STEPS), n, ed, es)
        assert decode_steps(steps, n) == (ed, es)


@pytest.mark.parametrize("n_frames", LENGTHS)
def test_paper_convention_exact_when_ed_is_first_frame(n_frames):
    pos = step_positions(n_frames, N_STEPS)
    for es in range(1, n_frames):
        curve = label_curve(n_frames, 0, es, "paper")
        assert decode_ed_es(curve, cyclic=False) == (0, es)
        steps = volume_label(pos, n_frames, 0, es, "paper")
        assert decode_steps(steps, n_frames, "paper", "fit") == (0, es)


def test_paper_linear_decoder_ignores_late_diastole_overshoot():
    # Eq. 4 verbatim exceeds 1 after ES when diastole is longer than systole; ED stays frame 0.
    curve = label_curve(30, 0, 8, "paper")
    assert curve.max() > 1.0 and int(np.argmax(curve)) != 0
    assert decode_ed_es(curve, cyclic=False) == (0, 8)


def test_plateaus_and_ties_go_to_the_earliest_frame():
    curve = [1.0, 1.0, 0.5, 0.0, 0.0, 0.5, 1.0]
    assert decode_ed_es(curve, cyclic=True) == (0, 3)
    assert decode_ed_es(curve, cyclic=False) == (0, 3)
    flat_top_later = [0.2, 0.9, 0.9, 0.1, 0.1, 0.3]
    assert decode_ed_es(flat_top_later) == (1, 3)


def test_linear_decoder_takes_the_peak_before_es():
    curve = [0.5, 0.9, 0.3, 0.0, 0.4, 1.2]     # global max after ES
    assert decode_ed_es(curve, cyclic=True) == (5, 3)
    assert decode_ed_es(curve, cyclic=False) == (1, 3)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_curves_are_rejected(bad):
    curve = label_curve(20, 0, 7)
    curve[4] = bad
    with pytest.raises(ValueError):
        decode_ed_es(curve)
    with pytest.raises(ValueError):
        decode_steps(curve, 25)
    with pytest.raises(ValueError):
        decode_steps(curve, 25, method="extrema")


@pytest.mark.parametrize("shape", [(0,), (1,), (4, 5)])
def test_degenerate_shapes_are_rejected(shape):
    with pytest.raises(ValueError):
        decode_ed_es(np.zeros(shape))


def test_unknown_decoder_and_convention_are_rejected():
    steps = volume_label(step_positions(20, N_STEPS), 20, 0, 7)
    with pytest.raises(ValueError):
        decode_steps(steps, 20, method="argmax")
    with pytest.raises(ValueError):
        decode_steps(steps, 20, convention="volume")


def test_fit_is_invariant_to_positive_scale_and_offset():
    n, ed, es = 28, 5, 15
    steps = volume_label(step_positions(n, N_STEPS), n, ed, es)
    assert decode_steps(3.7 * steps - 1.2, n) == (ed, es)


def test_extrema_decoder_is_close_but_fit_is_exact():
    # The paper's rule after resampling 20 steps onto T frames: off by at most 2, sometimes >0.
    worst, misses = 0, 0
    for n in LENGTHS:
        pos = step_positions(n, N_STEPS)
        for ed, es in placements(n):
            got = decode_steps(volume_label(pos, n, ed, es), n, method="extrema")
            err = max(cyclic_distance(got[0], ed, n), cyclic_distance(got[1], es, n))
            worst, misses = max(worst, err), misses + (err > 0)
    assert worst <= 2
    assert misses > 0


def test_fit_decoder_is_robust_to_noise():
    rng = np.random.default_rng(2016)
    errors = []
    for _ in range(300):
        n = int(rng.integers(12, 36))
        ed = int(rng.integers(n))
        es = int((ed + rng.integers(1, n)) % n)
        noisy = volume_label(step_positions(n, N_STEPS), n, ed, es) + rng.normal(0, 0.03, N_STEPS)
        got_ed, got_es = decode_steps(noisy, n)
        errors.append((cyclic_distance(got_ed, ed, n), cyclic_distance(got_es, es, n)))
    errors = np.array(errors)
    assert errors.max() <= 1                    # noise of 3 % of the range moves it one frame at most
    assert errors.mean() < 0.1                  # and almost never


def test_stack_decoding_averages_standardised_slice_curves():
    """Two slices of one stack, each with a wrong extreme, decode to the stack's true pair;
    a slice of another stack and a record without a group keep their own decoding."""
    from tempregnet.inference import decode_stacks
    n_frames, ed, es = 24, 3, 12
    label = volume_label(step_positions(n_frames, N_STEPS), n_frames, ed, es)
    bump = np.zeros(N_STEPS)
    bump[15] = 1.2                                   # a spurious maximum on one slice...
    dip = np.zeros(N_STEPS)
    dip[18] = -1.5                                   # ...a spurious minimum on the other
    slice_a = 0.1 * label + 0.1 * bump               # scales 500x apart, and an offset: the
    slice_b = 50 * label - 7 + 50 * dip              # raw mean would follow slice_b alone
    assert decode_steps(slice_a, n_frames) != (ed, es) and decode_steps(slice_b, n_frames) != (ed, es)
    assert decode_steps((slice_a + slice_b) / 2, n_frames) != (ed, es)
    other = volume_label(step_positions(n_frames, N_STEPS), n_frames, 20, 5)
    records = [dict(group="p1", n_frames=n_frames, curve=list(slice_a), ed_pred=-1, es_pred=-1, time_s=0.1),
               dict(group="p1", n_frames=n_frames, curve=list(slice_b), ed_pred=-1, es_pred=-1, time_s=0.1),
               dict(group="p2", n_frames=n_frames, curve=list(other), ed_pred=-1, es_pred=-1, time_s=0.1),
               dict(n_frames=n_frames, curve=list(slice_a), ed_pred=-1, es_pred=-1, time_s=0.1)]
    out = decode_stacks(records, "cycle")
    assert [(r["ed_pred"], r["es_pred"]) for r in out] == [
        (ed, es), (ed, es), (20, 5), decode_steps(slice_a, n_frames)]
    assert [r["stack_size"] for r in out] == [2, 2, 1, 1]
    assert all(r["ed_pred"] == -1 for r in records), "inputs are not changed"
    # the same slices in another stack length are another stack
    records[1]["n_frames"] = 25
    out = decode_stacks(records, "cycle")
    assert (out[0]["ed_pred"], out[0]["es_pred"]) == decode_steps(slice_a, n_frames)


def test_stack_weighting_by_fit_share():
    """weights="fit": two noisy slices whose curves put ES 5 frames late count for less than
    the clean slice, so the stack keeps its ES where the plain mean moves; fit_share is 1 for an
    exact Eq. 4 curve, 0 for a flat one, and the best placement's 1 - rss / total recomputed here
    by least squares."""
    from tempregnet.inference import decode_stacks, fit_share, standardised
    n_frames, ed, es = 20, 0, 8
    label = volume_label(step_positions(n_frames, N_STEPS), n_frames, ed, es)
    late = volume_label(step_positions(n_frames, N_STEPS), n_frames, ed, es + 5)
    rng = np.random.default_rng(3)
    curves = [label, late + rng.normal(0, 0.35, N_STEPS), late + rng.normal(0, 0.35, N_STEPS)]
    records = [dict(group="p", n_frames=n_frames, curve=list(c), ed_pred=-1, es_pred=-1, time_s=0.0)
               for c in curves]
    plain = decode_stacks(records, "cycle")[0]["es_pred"]
    weighted = decode_stacks(records, "cycle", weights="fit")[0]["es_pred"]
    assert plain != es and weighted == es
    z = standardised(curves)
    assert fit_share(z[0], n_frames, "cycle") == pytest.approx(1.0)
    assert fit_share(np.zeros(N_STEPS), n_frames, "cycle") == 0.0
    # the best placement's R^2 by an independent least-squares fit (offset + scale)
    best = 0.0
    for e in range(n_frames):
        for s in range(n_frames):
            if e == s:
                continue
            t = volume_label(step_positions(n_frames, N_STEPS), n_frames, e, s)
            a = np.stack([np.ones(N_STEPS), t], axis=1)
            coef, *_ = np.linalg.lstsq(a, z[2], rcond=None)
            if coef[1] >= 0:
                best = max(best, 1 - np.sum((a @ coef - z[2]) ** 2) / np.sum(z[2] ** 2))
    assert fit_share(z[2], n_frames, "cycle") == pytest.approx(best, abs=1e-9)
    with pytest.raises(ValueError, match="stack weighting"):
        decode_stacks(records, "cycle", weights="median")


def test_label_shape_bias_tool_on_true_volume_curves():
    """tools.label_shape_bias: the extrema rule recovers ED/ES of a sampled volume curve to a
    fraction of a frame, while the Eq. 4 fit, whose fall after ED is steeper than the phantom's
    ejection, lands late (the README's explanation of the demo's ED error)."""
    from tempregnet.decoder_bias import measure, signed_cyclic
    assert signed_cyclic(0, 29, 30) == 1 and signed_cyclic(29, 0, 30) == -1 and signed_cyclic(5, 3, 30) == 2
    result = measure(trials=30, seed=1)
    assert result["extrema"][2] < 0.3 and result["extrema"][3] < 0.5
    assert result["fit"][0] > 1.0 and result["fit"][1] > 0.5


@pytest.mark.parametrize("n_frames", LENGTHS)
def test_fit_es_decodes_paper_labels_that_start_at_ed_exactly(n_frames):
    pos = step_positions(n_frames, N_STEPS)
    wrong = [es for es in range(1, n_frames)
             if decode_steps(volume_label(pos, n_frames, 0, es, "paper"), n_frames, "paper", "fit_es")
             != (0, es)]
    assert not wrong


def test_fit_es_keeps_the_fits_es_and_takes_ed_at_the_peak():
    # An ACDC-like prediction (30 frames, true ED 0, ES 12) whose systole came out too short: the
    # joint fit moves ED one frame late to match the steep early drop; the peak stays at step 0.
    curve = np.array([1.0, 0.49, 0.2, 0.25, 0.47, 0.63, 0.66, 0.58, 0.51, 0.7,
                      0.9, 1.0, 1.03, 1.06, 1.06, 1.04, 1.05, 1.13, 1.13, 1.18])
    fit_ed, fit_es = decode_steps(curve, 30, "paper", "fit")
    assert fit_ed == 1
    assert decode_steps(curve, 30, "paper", "fit_es") == (0, fit_es)
    rng = np.random.default_rng(7)
    for _ in range(50):
        noisy, n = rng.normal(size=N_STEPS), int(rng.integers(12, 36))
        for convention in ("paper", "cycle"):
            ed, es = decode_steps(noisy, n, convention, "fit_es")
            fit_ed, fit_es = decode_steps(noisy, n, convention, "fit")
            frames = steps_to_frames(noisy, n)
            peak = int(np.argmax(frames if convention == "cycle" else frames[: es + 1]))
            assert es == fit_es
            assert ed == (peak if peak != es else fit_ed)     # a peak at ES itself: the fit's ED


@pytest.mark.parametrize("n_frames", [12, 20, 28, 35])
def test_fit_trigger_puts_ed_at_the_r_wave_and_fits_es_given_it(n_frames):
    """ED is the first frame at or after the R wave; ES is the fit's best placement with that ED
    (brute force over the cyclic templates here)."""
    pos = step_positions(n_frames, N_STEPS)
    rng = np.random.default_rng(n_frames)
    for rwave in (0.0, 0.4, n_frames - 2.5):
        r_frame = int(np.ceil(rwave)) % n_frames
        for es in range(n_frames):                       # exact on an Eq. 4 curve with ED there
            if es != r_frame:
                curve = volume_label(pos, n_frames, r_frame, es, "cycle")
                assert decode_steps(curve, n_frames, "cycle", "fit_trigger", rwave) == (r_frame, es)
        noisy = rng.normal(size=N_STEPS)                 # any curve: the best ES given that ED
        ed, es = decode_steps(noisy, n_frames, "cycle", "fit_trigger", rwave)
        v = noisy - noisy.mean()

        def gain(e):
            t = volume_label(pos, n_frames, r_frame, e, "cycle")
            t = t - t.mean()
            return max(t @ v, 0) ** 2 / (t @ t)
        assert ed == r_frame
        assert gain(es) == pytest.approx(max(gain(e) for e in range(n_frames) if e != r_frame))


@pytest.mark.parametrize("n_frames", [12, 20, 28, 35])
def test_rwave_ed_keeps_the_free_fits_es_and_puts_ed_at_the_r_wave(n_frames):
    """rwave_ed: ES is the unconstrained fit's ES (decoder "fit") on any curve, also when the
    curve's peak lies a few frames before the R wave (where fit_trigger would bend ES to the
    pinned ED); ED is the first frame at or after the R wave, unless that is ES itself."""
    pos = step_positions(n_frames, N_STEPS)
    rng = np.random.default_rng(n_frames)
    for rwave in (0.0, 0.4, n_frames - 2.5):
        r_frame = int(np.ceil(rwave)) % n_frames
        for _ in range(20):
            noisy = rng.normal(size=N_STEPS)
            _, fit_es = decode_steps(noisy, n_frames, "cycle", "fit")
            expected_ed = r_frame if fit_es != r_frame else decode_steps(noisy, n_frames, "cycle", "fit")[0]
            assert decode_steps(noisy, n_frames, "cycle", "rwave_ed", rwave) == (expected_ed, fit_es)
    early = (r_frame - 2) % n_frames                      # a peak two frames before the R wave
    for es in range(n_frames):
        if es not in (early, r_frame):
            curve = volume_label(pos, n_frames, early, es, "cycle")
            assert decode_steps(curve, n_frames, "cycle", "rwave_ed", rwave) == (r_frame, es)


def test_systole_prior_ranks_by_unexplained_share_plus_penalty():
    """SystolePrior: the placement chosen minimises (1 - R^2) + w (systole fraction - f)^2, found
    here by brute force with least squares (offset + non-negative scale); weight 0 is the plain
    fit, bit for bit; an exact Eq. 4 curve keeps its ES under a moderate prior; bad priors are
    refused."""
    from tempregnet.labels import SystolePrior
    n_frames, f, w = 18, 0.35, 4.0
    pos = step_positions(n_frames, N_STEPS)
    rng = np.random.default_rng(7)
    for _ in range(5):
        y = rng.normal(size=N_STEPS)
        total = np.sum((y - y.mean()) ** 2)
        best, best_score = None, np.inf
        for e in range(n_frames):
            for s in range(n_frames):
                if e == s:
                    continue
                t = volume_label(pos, n_frames, e, s)
                a = np.stack([np.ones(N_STEPS), t], axis=1)
                coef, *_ = np.linalg.lstsq(a, y, rcond=None)
                rss = np.sum((a @ coef - y) ** 2) if coef[1] >= 0 else total
                score = rss / total + w * (((s - e) % n_frames) / n_frames - f) ** 2
                if score < best_score - 1e-12:
                    best, best_score = (e, s), score
        assert decode_steps(y, n_frames, "cycle", "fit", prior=SystolePrior(f, w)) == best
        assert decode_steps(y, n_frames, "cycle", "fit", prior=SystolePrior(f, 0.0)) == \
            decode_steps(y, n_frames, "cycle", "fit")
    exact = volume_label(pos, n_frames, 0, 9)           # systole 0.5 of the cycle, prior 0.35
    assert decode_steps(exact, n_frames, "cycle", "rwave_ed", prior=SystolePrior(f, 1.0)) == (0, 9)
    for fraction, weight in ((0.0, 1.0), (1.0, 1.0), (0.3, -1.0)):
        with pytest.raises(ValueError, match="systole prior"):
            SystolePrior(fraction, weight)


def test_a_decoding_takes_each_part_given_else_the_recorded_one():
    from tempregnet.decoding import Decoding, decoding_of
    recorded = {"decoder": "rwave_ed", "views": "tta", "stack_weights": "fit", "es_prior": 4.0,
                "name": "acdc_mm"}
    assert decoding_of(recorded) == Decoding("rwave_ed", "tta", "fit", 4.0)
    assert decoding_of(recorded, views="one", es_prior=0.0) == Decoding("rwave_ed", "one", "fit", 0.0)
    assert decoding_of({"decoder": "extrema"}) == Decoding("extrema")    # an older run: defaults
    assert decoding_of({}, decoder="fit_es") == Decoding("fit_es", "one", "equal", 0.0)
    assert Decoding().note() == "" and not Decoding().augment
    assert Decoding("fit", "tta", "fit", 2.0).note().count("; ") == 3
    for bad in (dict(decoder="max"), dict(views="all"), dict(stack_weights="median"),
                dict(es_prior=-1.0), dict(es_prior=True)):
        with pytest.raises(ValueError):
            Decoding(**bad)


def test_a_recipe_names_its_decoding_optionally_and_it_is_checked_on_load(tmp_path):
    from data_prep.errors import InputError
    from tempregnet.decoding import Decoding
    from tempregnet.recipes import RECIPE_DIR, load_recipe
    head, sep, tables = (RECIPE_DIR / "demo.toml").read_text().partition("\n[")
    path = tmp_path / "chosen.toml"        # top-level keys go before the first table
    path.write_text(head + '\nviews = "tta"\nstack_weights = "fit"\nes_prior = 4\n' + sep + tables)
    chosen = load_recipe(path)
    assert chosen.decoding() == Decoding(load_recipe("demo").decoder, "tta", "fit", 4.0)
    assert isinstance(chosen.es_prior, float)
    assert load_recipe("demo").decoding().views == "one"          # absent: the paper's one view
    for decoding in (Decoding("rwave_ed", "tta", "fit", 4.0), Decoding("extrema")):  # its own lines
        own = "".join(line + "\n" for line in head.splitlines() if not line.startswith("decoder"))
        path.write_text(own + decoding.recipe_lines() + sep + tables)
        assert load_recipe(path).decoding() == decoding
    path.write_text(head + '\nviews = "all"\n' + sep + tables)
    with pytest.raises(InputError, match="views 'all'"):
        load_recipe(path)
