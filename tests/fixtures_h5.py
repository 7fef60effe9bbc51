"""Tiny prepared-data fixtures in the prepared HDF5 layout: a bright disc whose area follows Eq. 4."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from models.config import N_STEPS
from tempregnet.contract import SequenceContract
from tempregnet.labels import step_positions, volume_label
from tempregnet.recipes import load_recipe


def recipe_contract(name: str, **changes) -> SequenceContract:
    """The sequence contract of a recipe's data (what tools.train checks), with changes."""
    return load_recipe(name).contract().replace(**changes)


def disc_sequences(n_seq: int, size: int, seed: int, n_steps: int = N_STEPS):
    """Frames n_seq x T x S x S uint8 and Eq. 4 labels n_seq x T: disc area = a + b * label, plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    frames = np.zeros((n_seq, n_steps, size, size), np.uint8)
    labels = np.zeros((n_seq, n_steps), np.float32)
    eds, ess, lengths = [], [], []
    for s in range(n_seq):
        n_frames = int(rng.integers(12, 36))
        ed = int(rng.integers(0, n_frames))
        es = (ed + int(rng.integers(n_frames // 4, n_frames // 2 + 1))) % n_frames
        label = volume_label(step_positions(n_frames, n_steps), n_frames, ed, es)
        cy, cx = size / 2 + rng.uniform(-size / 16, size / 16, 2)
        r_min, r_max = size * 0.12, size * 0.28
        radius = np.sqrt(r_min ** 2 + label * (r_max ** 2 - r_min ** 2))   # area follows the label
        for t in range(n_steps):
            disc = ((yy - cy) ** 2 + (xx - cx) ** 2) <= radius[t] ** 2
            image = 40 + 160 * disc + rng.normal(0, 12, (size, size))
            frames[s, t] = np.clip(image, 0, 255).astype(np.uint8)
        labels[s] = label
        eds.append(ed), ess.append(es), lengths.append(n_frames)
    return frames, labels, np.array(eds), np.array(ess), np.array(lengths)


def write_prepared(folder: Path, n_seq: int, size: int, seed: int = 0, n_test: int = 0,
                   contract: SequenceContract | None = None) -> Path:
    """sequences.h5 plus fold0_train.txt / fold0_test.txt (last n_test rows) and all.txt; returns
    folder. The provenance records contract (default: size px, cycle labels, whole frame)."""
    folder.mkdir(parents=True, exist_ok=True)
    contract = contract or SequenceContract(steps=N_STEPS, stored_size=size, label="cycle", roi=1.0)
    assert contract.stored_size == size and contract.steps == N_STEPS
    frames, labels, ed, es, n_frames = disc_sequences(n_seq, size, seed)
    with h5py.File(folder / "sequences.h5", "w") as f:
        f["frames"], f["label"] = frames, labels
        f["ed"], f["es"], f["n_frames"] = ed, es, n_frames
        f["seq_id"] = np.array([f"s{i:04d}" for i in range(n_seq)], dtype="S")
        f["group"] = np.array([f"g{i:04d}" for i in range(n_seq)], dtype="S")
        f.attrs["provenance"] = json.dumps({"source": "tests/fixtures_h5.py",
                                            "contract": contract.to_dict()})
    rows = [f"sequences.h5 {i}\n" for i in range(n_seq)]
    (folder / "all.txt").write_text("".join(rows))
    (folder / "fold0_train.txt").write_text("".join(rows[: n_seq - n_test]))
    (folder / "fold0_test.txt").write_text("".join(rows[n_seq - n_test:] or rows))
    return folder
