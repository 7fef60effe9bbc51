"""aFD (Eq. 5), its STD and the cyclic difference against hand-computed cases."""
import math

import pytest

from tempregnet import evaluation as afd


def rec(fold, n, ed_t, ed_p, es_t, es_p, time_s=None):
    return dict(fold=fold, n_frames=n, ed_true=ed_t, ed_pred=ed_p, es_true=es_t, es_pred=es_p,
                time_s=time_s)


def test_afd_and_population_std_by_hand():
    # |d| = 1, 0, 2, 0 -> mean 0.75; deviations .25 -.75 1.25 -.75 -> var 2.75 / 4
    true, pred = [0, 0, 2, 5], [1, 0, 0, 5]
    assert afd.afd(true, pred) == pytest.approx(0.75)
    assert afd.afd_std(true, pred) == pytest.approx(math.sqrt(2.75 / 4))
    assert afd.afd_std(true, pred, ddof=1) == pytest.approx(math.sqrt(2.75 / 3))


def test_cyclic_difference_wraps_but_eq5_does_not():
    # ES at 0 predicted at T-1 = 19: Eq. 5 counts 19 frames, the cyclic difference 1.
    assert afd.frame_differences([0], [19]).tolist() == [19]
    assert afd.cyclic_differences([0, 3], [19, 10], [20, 20]).tolist() == [1, 7]
    assert afd.cyclic_differences([2], [12], [20]).tolist() == [10]


def test_shape_mismatch_and_empty_are_errors():
    with pytest.raises(ValueError):
        afd.afd([1, 2], [1])
    with pytest.raises(ValueError):
        afd.afd([], [])
    with pytest.raises(ValueError):
        afd.summarise([])


def test_single_sequence_std_is_zero_population_nan_sample():
    assert afd.afd_std([3], [5]) == 0.0
    assert math.isnan(afd.afd_std([3], [5], ddof=1))


def test_summary_per_fold_and_pooled_by_hand():
    records = [
        rec("fold0", 20, 0, 2, 7, 7, 1.0),          # ED |d| 2, ES 0
        rec("fold1", 20, 0, 0, 7, 8, 2.0),          # ED 0, ES 1
        rec("fold1", 25, 3, 3, 10, 10, 3.0),        # ED 0, ES 0
        rec("fold1", 20, 0, 19, 6, 9, 4.0),         # ED 19 (cyclic 1), ES 3
    ]
    s = afd.summarise(records)
    assert list(s["folds"]) == ["fold0", "fold1"]
    assert s["folds"]["fold0"]["ed"]["afd"] == pytest.approx(2.0)
    assert s["folds"]["fold1"]["ed"]["afd"] == pytest.approx(19 / 3)
    assert s["folds"]["fold1"]["es"]["afd"] == pytest.approx(4 / 3)
    # pooled is over all 4 sequences, not the mean of the fold means
    assert s["pooled"]["ed"]["afd"] == pytest.approx(21 / 4)
    assert s["pooled"]["es"]["afd"] == pytest.approx(4 / 4)
    ed = [2, 0, 0, 19]
    mean = sum(ed) / 4
    assert s["pooled"]["ed"]["std"] == pytest.approx(math.sqrt(sum((x - mean) ** 2 for x in ed) / 4))
    assert s["pooled"]["ed"]["cyclic_afd_not_paper"] == pytest.approx((2 + 0 + 0 + 1) / 4)
    assert s["pooled"]["es"]["exact_fraction"] == pytest.approx(2 / 4)
    assert s["pooled"]["time_per_sequence_s"] == pytest.approx(2.5)
    assert s["pooled"]["n_sequences"] == 4


def test_markdown_table_has_every_fold_and_says_what_std_is():
    s = afd.summarise([rec("fold0", 20, 0, 1, 7, 7), rec("fold1", 20, 0, 0, 7, 9)])
    md = afd.markdown_table(s, "test")
    assert "| fold0 | 1 | 1.00 |" in md
    assert "| fold1 | 1 | 0.00 |" in md
    assert "| pooled | 2 | 0.50 | 0.50 | 1.00 | 1.00 |" in md
    assert "population" in md and "not the paper's" in md
