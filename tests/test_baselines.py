"""Segmentation baselines and the trivial reference on phantoms with known ED/ES and LV area."""
import numpy as np
import pytest

from tempregnet import baselines

synthetic = pytest.importorskip("data_prep.synthetic")


def disc_phantom(n_frames, ed, es, size=64, centre=(33.0, 30.0)):
    """A bright blood disc in a myocardial ring whose radius falls linearly ED -> ES and rises
    back, a static bright blob near the corner (it must not be taken for the LV)."""
    systole = (es - ed) % n_frames
    r_ed, r_es = 10.0, 5.0
    yy, xx = np.mgrid[:size, :size]
    dist = np.hypot(yy - centre[0], xx - centre[1])
    frames = []
    for k in range(n_frames):
        j = (k - ed) % n_frames
        r = (r_ed - (r_ed - r_es) * j / systole if j <= systole
             else r_es + (r_ed - r_es) * (j - systole) / (n_frames - systole))
        img = np.full((size, size), 20.0)
        img += 80 * np.clip(r + 4 - dist + 0.5, 0, 1)           # myocardium
        img += 120 * np.clip(r - dist + 0.5, 0, 1)              # blood, partial-volume edge
        img += 150 * (np.hypot(yy - 6, xx - 6) < 4)             # static bright distractor
        frames.append(img)
    return np.stack(frames).astype(np.float32)


@pytest.fixture(scope="module")
def clean_mid_slices():
    """Mid-ventricular slices of clean synthetic patients (A1's generator), with ground truth."""
    rng = np.random.default_rng(2016)
    out = []
    for index in range(4):
        p = synthetic.generate_patient(rng, index, clean=True)
        i = len(p.slices) // 2
        out.append((p.slices[i], p.ed, p.es, p.lv_area[i], p.lv_center[i]))
    return out


@pytest.mark.parametrize("method", baselines.SEGMENTATION_METHODS)
def test_segmentation_finds_ed_es_within_one_frame_on_clean_phantoms(method, clean_mid_slices):
    for frames, ed, es, _, _ in clean_mid_slices:
        got_ed, got_es = baselines.segmentation_ed_es(frames, method)
        assert abs(got_ed - ed) <= 1 and abs(got_es - es) <= 1, (method, ed, es, got_ed, got_es)


@pytest.mark.parametrize("method", baselines.SEGMENTATION_METHODS)
def test_segmented_area_tracks_the_analytic_lv_area(method, clean_mid_slices):
    for frames, _, _, area, _ in clean_mid_slices[:2]:
        got = baselines.lv_areas(frames, method)
        assert np.corrcoef(got, area)[0, 1] > 0.98
        assert np.median(got / area) == pytest.approx(1.0, abs=0.1)


def test_automatic_seed_lies_in_the_lv_blood_pool(clean_mid_slices):
    for frames, _, _, area, centre in clean_mid_slices:
        seed = np.array(baselines.find_lv(frames)["seed"])
        radius_at_es = np.sqrt(area.min() / np.pi)
        assert np.hypot(*(seed - centre[0])) < radius_at_es


@pytest.mark.parametrize("method", baselines.SEGMENTATION_METHODS)
@pytest.mark.parametrize("n_frames, ed, es", [(20, 0, 8), (25, 17, 3), (30, 12, 23), (13, 6, 11)])
def test_segmentation_on_disc_phantom_any_placement(method, n_frames, ed, es):
    got = baselines.segmentation_ed_es(disc_phantom(n_frames, ed, es), method)
    assert abs(got[0] - ed) <= 1 and abs(got[1] - es) <= 1


def test_on_steps_maps_back_to_original_frames():
    # 20 stored steps of a 30-frame cycle; the answer is in original frames.
    from data_prep.preprocess import sequence_to_steps
    from tempregnet.contract import SequenceContract
    n, ed, es = 30, 3, 15
    steps = sequence_to_steps(disc_phantom(n, ed, es), SequenceContract(20, 64, "cycle", 1.0))
    got = baselines.segmentation_ed_es_on_steps(steps, n, "level_set")
    assert abs(got[0] - ed) <= 1 and abs(got[1] - es) <= 1


def test_bad_frames_are_rejected():
    frames = disc_phantom(20, 0, 8)
    frames[3, 5, 5] = np.nan
    with pytest.raises(ValueError):
        baselines.lv_areas(frames, "level_set")
    with pytest.raises(ValueError):
        baselines.lv_areas(frames[:1], "graph_cut")
    with pytest.raises(ValueError):
        baselines.lv_areas(disc_phantom(20, 0, 8), "watershed")


def test_trivial_reference_by_hand():
    assert baselines.trivial_ed_es(20, 0.4) == (0, 8)
    assert baselines.trivial_ed_es(25, 0.35) == (0, 9)          # round(8.75)
    assert baselines.trivial_ed_es(12, 0.01) == (0, 1)          # ES never on ED
    with pytest.raises(ValueError):
        baselines.trivial_ed_es(20, 1.2)


def test_es_fraction_from_training_is_the_median_systole_share():
    # systole shares: 8/20 = .4, (5 - 20) mod 25 = 10 -> .4, 9/30 = .3 -> median .4
    assert baselines.estimate_es_fraction([0, 20, 0], [8, 5, 9], [20, 25, 30]) == pytest.approx(0.4)
    assert baselines.estimate_es_fraction([], [], []) == baselines.DEFAULT_ES_FRACTION
