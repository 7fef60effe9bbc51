"""Real ACDC and Sunnybrook data (../shared/data, read-only): counts, labels, and an HDF5 round trip."""
from __future__ import annotations

import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from data_prep import prepare
from data_prep.hdf5 import load_prepared, load_rows
from data_prep.readers import find_sequences, read_any
from data_prep.sunnybrook import polygon_area, read_contour

pytestmark = pytest.mark.realdata

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ACDC, SUNNYBROOK = DATA / "acdc", DATA / "sunnybrook"
STEPS = 20
ROUNDING = 0.5 + 1e-3     # float32 arithmetic may round an exact .5 tie either way


def need(folder: Path):
    if not folder.is_dir():
        pytest.skip(f"{folder} not present")


def test_acdc_counts_and_info_labels():
    """Every slice of every patient is a sequence carrying its patient's Info.cfg ED/ES minus 1."""
    need(ACDC)
    seqs = read_any("acdc", ACDC)
    patients = sorted(p for p in os.listdir(ACDC) if p.startswith("patient"))
    assert len(patients) == 50
    slices = {p: nib.load(ACDC / p / f"{p}_4d.nii.gz").shape for p in patients}
    # The data README says 50 x 7 = 350; 10 patients have 5 or 6 slices, so the headers give 336.
    assert len(seqs) == sum(shape[2] for shape in slices.values()) == 336
    by_group = {}
    for s in seqs:
        by_group.setdefault(s.group, []).append(s)
    assert len(by_group) == 50
    for p in patients:
        info = dict(re.findall(r"^(\w+):\s*(\S+)", (ACDC / p / "Info.cfg").read_text(), re.M))
        ed, es, n = int(info["ED"]) - 1, int(info["ES"]) - 1, int(info["NbFrame"])
        mine = read_any("acdc", ACDC / p)
        assert len(mine) == slices[p][2]
        assert all((s.ed, s.es, s.n_frames) == (ed, es, n) for s in mine)
    assert {s.ed for s in seqs} == {0, 3}          # ED 1 everywhere except patient090 (ED 4)


def test_sunnybrook_counts_and_contour_labels():
    """3 patients, 35 slices of 20 frames; ED = larger contoured area, near the end of the cycle."""
    need(SUNNYBROOK)
    found, problems = find_sequences("sunnybrook", SUNNYBROOK)
    assert problems == []
    assert len(found) == 35 and len({s.group for s in found}) == 3
    assert all(len(s.images) == STEPS for s in found)
    links = dict(line.split(",") for line in (SUNNYBROOK / "link.csv").read_text().split()[1:])
    for patient, original in links.items():
        mine = [s for s in found if Path(s.images[0].path).parent.name == patient]
        (ed, es), = {(s.ed, s.es) for s in mine}
        assert ed >= 15 and es < ed                 # README: ED near the END of the cycle
        # independent check on one contoured slice: the ED image's endocardial area is the larger
        contours = sorted((SUNNYBROOK / "contourfiles" / original / "i-contours").glob("*icontour*"))
        numbers = {int(re.search(r"IM-\d+-(\d+)-", c.name).group(1)): c for c in contours}
        for s in mine:
            at = {int(Path(im.path).stem): k for k, im in enumerate(s.images)}
            hits = {at[n]: polygon_area(read_contour(c)) for n, c in numbers.items() if n in at}
            if hits:
                assert set(hits) == {ed, es} and hits[ed] > hits[es]
        # TriggerTime ordering holds in the files themselves
        times = [float(pydicom.dcmread(im.path, stop_before_pixels=True).TriggerTime)
                 for im in mine[0].images]
        assert times == sorted(times)


def reference(frames: np.ndarray, size: int) -> np.ndarray:
    """Documented transform without resizing (size = square side): percentiles, crop, cyclic time, clip."""
    x = frames.astype(np.float64)
    lo, hi = np.percentile(x[:, ::2, ::2], [1, 99])
    t, h, w = x.shape
    y0, x0 = (h - size) // 2, (w - size) // 2
    x = x[:, y0:y0 + size, x0:x0 + size]
    steps = []
    for i in range(STEPS):
        p = i * t / STEPS
        k = int(p)
        steps.append(x[k % t] * (1 - (p - k)) + x[(k + 1) % t] * (p - k))
    return np.clip((np.stack(steps) - lo) * 255.0 / (hi - lo), 0, 255)    # before rounding


def _check_round_trip(out: Path, seqs, size: int):
    data = load_prepared(out)
    row_of = {sid: r for r, sid in enumerate(data["seq_id"])}
    assert len(row_of) == len(seqs)
    for seq in seqs:
        r = row_of[seq.seq_id]
        diff = np.abs(data["frames"][r].astype(np.float64) - reference(seq.frames, size))
        assert diff.max() <= ROUNDING        # the stored byte is a rounding of the exact value
        assert (data["ed"][r], data["es"][r], data["n_frames"][r]) == (seq.ed, seq.es, seq.n_frames)


def test_sunnybrook_round_trip(tmp_path):
    """Prepared Sunnybrook rows equal the documented transform of the decoded frames (256: no resize)."""
    need(SUNNYBROOK)
    out = tmp_path / "sb"
    assert prepare.main(["--source", "sunnybrook", str(SUNNYBROOK), str(out), "--size", "256",
                         "--folds", "3", "--workers", "2"]) == 0
    _check_round_trip(out, read_any("sunnybrook", SUNNYBROOK), 256)
    for f in range(3):           # patient-level folds on real data
        test, train = load_rows(out / f"fold{f}_test.txt"), load_rows(out / f"fold{f}_train.txt")
        assert not set(test["group"]) & set(train["group"])


def test_acdc_round_trip_resampled(tmp_path):
    """Two ACDC patients with 30 and 12 frames: cyclic time resampling and the 100 x 95 centre crop."""
    need(ACDC)
    src = tmp_path / "two"
    src.mkdir()
    for p in ("patient001", "patient090"):
        os.symlink(ACDC / p, src / p)
    out = tmp_path / "out"
    assert prepare.main(["--source", "acdc", str(src), str(out), "--size", "95", "--folds", "2",
                         "--workers", "1"]) == 0
    seqs = read_any("acdc", src)
    assert sorted({s.n_frames for s in seqs}) == [12, 30]
    _check_round_trip(out, seqs, 95)
