"""Patient-level k-fold: no patient in two folds, each sequence tested once, deterministic from the seed."""
from __future__ import annotations

import json

import numpy as np
import pytest

from data_prep.hdf5 import read_list
from data_prep.splits import assign_folds, write_splits


def cohort_groups(n_patients: int, seed: int) -> list[str]:
    """Row -> patient, 1-12 sequences per patient, rows interleaved as a reader might return them."""
    rng = np.random.default_rng(seed)
    groups = [f"p{p:03d}" for p in range(n_patients) for _ in range(int(rng.integers(1, 13)))]
    return [groups[i] for i in rng.permutation(len(groups))]


@pytest.mark.parametrize("k,n_patients,seed", [(4, 10, 0), (4, 37, 3), (2, 2, 1), (5, 23, 9)])
def test_patient_level_folds(tmp_path, k, n_patients, seed):
    groups = cohort_groups(n_patients, seed)
    summary = write_splits(tmp_path, groups, "sequences.h5", k=k, seed=seed)
    test_rows = [[r for _, r in read_list(tmp_path / f"fold{f}_test.txt")] for f in range(k)]
    train_rows = [[r for _, r in read_list(tmp_path / f"fold{f}_train.txt")] for f in range(k)]
    # every sequence is in exactly one test fold
    assert sorted(r for rows in test_rows for r in rows) == list(range(len(groups)))
    # no patient's sequences in two folds; train is exactly the complement of test
    fold_of_group = {}
    for f, rows in enumerate(test_rows):
        for r in rows:
            assert fold_of_group.setdefault(groups[r], f) == f
        assert set(train_rows[f]) == set(range(len(groups))) - set(rows)
        assert not {groups[r] for r in train_rows[f]} & {groups[r] for r in rows}
    assert len(fold_of_group) == n_patients and all(rows for rows in test_rows)
    assert [r for _, r in read_list(tmp_path / "all.txt")] == list(range(len(groups)))
    on_disk = json.loads((tmp_path / "splits.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert sorted(g for fold in on_disk["folds"] for g in fold["test_groups"]) == sorted(set(groups))


def test_deterministic_from_seed():
    groups = cohort_groups(30, 2)
    assert assign_folds(groups, 4, seed=7) == assign_folds(list(groups), 4, seed=7)
    assert assign_folds(groups, 4, seed=7) != assign_folds(groups, 4, seed=8)
    # the row order of the input does not matter, only the set of patients and their sizes
    assert assign_folds(groups, 4, seed=7) == assign_folds(groups[::-1], 4, seed=7)


def test_folds_balanced_by_sequences():
    """Greedy fill: no fold holds more than the even share plus the largest patient."""
    groups = cohort_groups(40, 4)
    fold_of = assign_folds(groups, 4, seed=0)
    sizes = np.bincount([fold_of[g] for g in groups], minlength=4)
    largest = max(groups.count(g) for g in set(groups))
    assert sizes.max() - sizes.min() <= largest


def test_too_few_patients():
    with pytest.raises(ValueError, match="3 patients cannot fill 4 folds"):
        assign_folds(["a", "b", "c", "a"], 4)
