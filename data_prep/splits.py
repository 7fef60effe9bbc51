"""Patient-level k-fold splits (deterministic from a seed) and the list files the data layer reads."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tempregnet.outputs import write_text_atomic

DEFAULT_FOLDS = 4            # the paper's 4-fold cross-validation
DEFAULT_SEED = 0


def assign_folds(groups, k: int = DEFAULT_FOLDS, seed: int = DEFAULT_SEED) -> dict[str, int]:
    """Group (patient) -> test fold 0..k-1; shuffled by seed, then each to the fold with fewest sequences."""
    names, counts = np.unique(np.asarray(list(groups), dtype=str), return_counts=True)
    if k < 2:
        raise ValueError(f"need at least 2 folds, got {k}")
    if len(names) < k:
        raise ValueError(f"{len(names)} patients cannot fill {k} folds "
                         f"(use --folds {max(2, len(names))} or fewer)")
    order = np.random.default_rng(seed).permutation(len(names))
    load = np.zeros(k, int)
    fold_of = {}
    for i in order:
        f = int(np.argmin(load))               # ties: lowest fold, so it is deterministic
        fold_of[str(names[i])] = f
        load[f] += counts[i]
    return fold_of


def write_splits(out_dir, groups, h5_name: str, k: int = DEFAULT_FOLDS, seed: int = DEFAULT_SEED) -> dict:
    """splits.json, all.txt, fold<i>_train.txt and fold<i>_test.txt for the rows of h5_name."""
    out_dir = Path(out_dir)
    groups = [str(g) for g in groups]
    fold_of = assign_folds(groups, k, seed)
    lines = [f"{h5_name} {row}\n" for row in range(len(groups))]
    write_text_atomic(out_dir / "all.txt", "".join(lines))
    folds = []
    for f in range(k):
        test = [row for row, g in enumerate(groups) if fold_of[g] == f]
        train = [row for row, g in enumerate(groups) if fold_of[g] != f]
        write_text_atomic(out_dir / f"fold{f}_test.txt", "".join(lines[r] for r in test))
        write_text_atomic(out_dir / f"fold{f}_train.txt", "".join(lines[r] for r in train))
        folds.append({"fold": f, "test_groups": sorted(g for g, v in fold_of.items() if v == f),
                      "n_test": len(test), "n_train": len(train)})
    summary = {"k": k, "seed": seed, "h5": h5_name, "n_sequences": len(groups),
               "n_groups": len(fold_of), "folds": folds}
    write_text_atomic(out_dir / "splits.json", json.dumps(summary, indent=1) + "\n")
    return summary
