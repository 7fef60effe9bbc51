"""prepare end to end: HDF5 layout, frames vs an independent transform, labels, lists, atomicity, privacy."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import h5py
import numpy as np
import pydicom
import pytest

from data_prep import prepare
from tempregnet.contract import SequenceContract, read_contract
from data_prep.hdf5 import load_prepared, load_rows, read_list
from tempregnet.labels import label_curve, volume_label
from data_prep.synthetic import (FAKE_BIRTH_DATE, FAKE_PATIENT_ID, FAKE_PATIENT_NAME,
                                 FAKE_STUDY_DATE, write_dicom_cohort, write_nifti_cohort)

SIZE = 64          # synthetic image side: small and quick
STEPS = 20
ROUNDING = 0.5 + 1e-3     # stored bytes are roundings of the exact value (float32 may flip a .5 tie)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """A 4-patient synthetic DICOM cohort with truth.json (written once for the module)."""
    folder = tmp_path_factory.mktemp("cohort") / "dicom"
    write_dicom_cohort(folder, 4, seed=5, size=SIZE)
    return folder


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "data_prep.prepare", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def prepared(cohort, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("prep") / "out"
    res = run_cli("--source", "dicom", cohort, out, "--size", SIZE, "--folds", 2)
    assert res.returncode == 0, res.stderr
    return out, res


def reference_steps(frames: np.ndarray, size: int, roi: float = 1.0) -> np.ndarray:
    """The README transform, written independently (percentiles, square, cyclic time, resize), unrounded."""
    x = frames.astype(np.float64)
    lo, hi = np.percentile(x[:, ::2, ::2], [1, 99])
    t, h, w = x.shape
    m = int(round(min(h, w) * roi))
    x = x[:, (h - m) // 2:(h - m) // 2 + m, (w - m) // 2:(w - m) // 2 + m]
    out = []
    for i in range(STEPS):
        p = i * t / STEPS
        k = int(np.floor(p))
        frame = x[k % t] * (1 - (p - k)) + x[(k + 1) % t] * (p - k)
        if m != size:
            method = cv2.INTER_AREA if m > size else cv2.INTER_LINEAR
            frame = cv2.resize(frame.astype(np.float32), (size, size), interpolation=method)
        out.append(frame)
    return np.clip((np.stack(out) - lo) * 255.0 / (hi - lo), 0, 255)     # before rounding


def dicom_frames(folder: Path, record: dict) -> np.ndarray:
    """A truth record's frames straight from pydicom, in scanner units."""
    out = []
    for name in record["files"]:
        ds = pydicom.dcmread(folder / name)
        out.append(ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
    return np.stack(out)


def test_layout(prepared):
    out, _ = prepared
    with h5py.File(out / "sequences.h5", "r") as f:
        n = f["frames"].shape[0]
        assert f["frames"].shape == (n, STEPS, SIZE, SIZE) and f["frames"].dtype == np.uint8
        assert f["frames"].chunks == (1, STEPS, SIZE, SIZE) and f["frames"].compression is None
        assert f["label"].shape == (n, STEPS) and f["label"].dtype == np.float32
        for key in ("ed", "es", "n_frames"):
            assert f[key].shape == (n,) and f[key].dtype == np.int16
        for key in ("seq_id", "group"):
            assert f[key].dtype.kind == "S"
        prov = json.loads(f.attrs["provenance"])
    assert prov["source"] == "dicom" and prov["input"] == "dicom"
    assert prov["contract"]["stored_size"] == SIZE and prov["contract"]["steps"] == STEPS
    assert read_contract(out) == SequenceContract(steps=STEPS, stored_size=SIZE, label="cycle", roi=1.0)
    assert prov["counts"]["written"] == n and prov["counts"]["skipped"] == 0
    assert prov["code_version"] and "pydicom" in prov["libraries"]


def test_rows_match_truth_and_independent_transform(prepared, cohort):
    """Every truth sequence is one row: ED/ES, n_frames, Eq. 4 label, and frames within 1 grey level."""
    out, _ = prepared
    data = load_prepared(out)
    records = json.loads((cohort / "truth.json").read_text())["sequences"]
    assert len(records) == len(data["ed"])
    used = set()
    for rec in records:
        ref = reference_steps(dicom_frames(cohort, rec), SIZE)
        diffs = np.abs(data["frames"].astype(np.float64) - ref).reshape(len(data["ed"]), -1)
        row = int(np.argmin(diffs.mean(axis=1)))
        used.add(row)
        assert diffs[row].max() <= ROUNDING
        stored = (data["ed"][row], data["es"][row], data["n_frames"][row])
        assert stored == (rec["ed"], rec["es"], rec["n_frames"])
        t = rec["n_frames"]
        positions = np.arange(STEPS) * t / STEPS
        np.testing.assert_allclose(data["label"][row],
                                   volume_label(positions, t, rec["ed"], rec["es"]), rtol=1e-6)
        if t == STEPS:   # on the original grid the label is Eq. 4 at the frames themselves
            np.testing.assert_allclose(data["label"][row], label_curve(t, rec["ed"], rec["es"]),
                                       rtol=1e-6)
    assert len(used) == len(records)


def test_resize_matches_reference(cohort, tmp_path):
    """With resizing (64 -> 40, area averaging) frames still match the independent transform."""
    out = tmp_path / "small"
    assert prepare.main(["--source", "dicom", str(cohort), str(out), "--size", "40",
                         "--folds", "2", "--workers", "1"]) == 0
    data = load_prepared(out)
    rec = json.loads((cohort / "truth.json").read_text())["sequences"][0]
    ref = reference_steps(dicom_frames(cohort, rec), 40)
    best = min(np.abs(data["frames"][r].astype(float) - ref).max() for r in range(len(data["ed"])))
    assert best <= ROUNDING


def test_roi_keeps_the_central_fraction(cohort, tmp_path):
    """--roi 0.5 keeps the central 32 x 32 of 64 x 64 frames, and the provenance records it."""
    out = tmp_path / "roi"
    assert prepare.main(["--source", "dicom", str(cohort), str(out), "--size", "32", "--roi", "0.5",
                         "--folds", "2", "--workers", "1"]) == 0
    data = load_prepared(out)
    assert data["provenance"]["contract"]["roi"] == 0.5
    rec = json.loads((cohort / "truth.json").read_text())["sequences"][0]
    frames = dicom_frames(cohort, rec)
    ref = reference_steps(frames, 32, roi=0.5)
    best = min(np.abs(data["frames"][r].astype(float) - ref).max() for r in range(len(data["ed"])))
    assert best <= ROUNDING
    whole = reference_steps(frames, 32)                  # control: the whole frame, resized
    assert min(np.abs(data["frames"][r].astype(float) - whole).max()
               for r in range(len(data["ed"]))) > 10
    assert run_cli("--source", "dicom", cohort, tmp_path / "bad", "--roi", "1.5").returncode == 2


def test_recipe_sets_the_contract_and_excludes_the_single_flags(cohort, tmp_path):
    """--recipe demo prepares the recipe's contract (72 px, roi 0.5, cycle labels, 20 steps) and
    gives the frames --size 72 --roi 0.5 would; a recipe and a contract flag together are refused."""
    from tempregnet.recipes import load_recipe
    out = tmp_path / "demo"
    assert prepare.main(["--recipe", "demo", str(cohort), str(out), "--folds", "2", "--workers", "1"]) == 0
    assert read_contract(out) == load_recipe("demo").contract()
    assert load_prepared(out)["provenance"]["recipe"] == "demo"
    flags = tmp_path / "flags"
    assert prepare.main(["--source", "dicom", str(cohort), str(flags), "--size", "72", "--roi", "0.5",
                         "--folds", "2", "--workers", "1"]) == 0
    np.testing.assert_array_equal(load_prepared(out)["frames"], load_prepared(flags)["frames"])
    res = run_cli("--recipe", "demo", cohort, tmp_path / "both", "--size", 64)
    assert res.returncode == 2 and "--recipe sets --size" in res.stderr


def test_lists_and_load_rows(prepared, tmp_path):
    """read_list resolves paths relative to the list; load_rows returns rows in list order."""
    out, _ = prepared
    full = load_prepared(out)
    n = len(full["ed"])
    entries = read_list(out / "all.txt")
    assert [r for _, r in entries] == list(range(n)) and all(p.name == "sequences.h5" for p, _ in entries)
    custom = out.parent / "custom.txt"
    custom.write_text("".join(f"out/sequences.h5 {r}\n" for r in [3, 0, 2]))
    rows = load_rows(custom)
    np.testing.assert_array_equal(rows["frames"], full["frames"][[3, 0, 2]])
    np.testing.assert_array_equal(rows["ed"], full["ed"][[3, 0, 2]])
    assert rows["seq_id"] == [full["seq_id"][i] for i in (3, 0, 2)]
    assert set(rows) == {"frames", "label", "ed", "es", "n_frames", "seq_id", "group"}


def test_summary_and_overwrite(prepared, cohort):
    out, res = prepared
    assert "wrote" in res.stdout and "skipped 0" in res.stdout and "resampled" in res.stdout
    again = run_cli("--source", "dicom", cohort, out)
    assert again.returncode == 1 and "exists; pass --force" in again.stderr
    assert "Traceback" not in again.stderr


def test_force_replaces_and_interrupt_leaves_nothing(cohort, tmp_path, monkeypatch):
    """--force replaces OUT; an interrupted run leaves no OUT, no temp folder, and an old OUT intact."""
    out = tmp_path / "out"
    args = ["--source", "dicom", str(cohort), str(out), "--folds", "2", "--workers", "1", "--size", "32"]
    assert prepare.main(args) == 0
    before = (out / "sequences.h5").read_bytes()
    calls = {"n": 0}
    real_append = prepare.SequenceWriter.append

    def interrupted(self, row):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_append(self, row)

    monkeypatch.setattr(prepare.SequenceWriter, "append", interrupted)
    assert prepare.main(args + ["--force"]) == 130
    assert (out / "sequences.h5").read_bytes() == before           # old output untouched
    fresh = tmp_path / "fresh"
    calls["n"] = 0
    assert prepare.main(["--source", "dicom", str(cohort), str(fresh), "--workers", "1"]) == 130
    assert not fresh.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]    # no *.tmp-* left behind
    monkeypatch.setattr(prepare.SequenceWriter, "append", real_append)
    assert prepare.main(args + ["--force", "--size", "40"]) == 0
    assert load_prepared(out)["frames"].shape[-1] == 40


def test_privacy_no_identity_in_outputs(prepared, cohort):
    """The fake name, IDs, birth and study dates in the DICOM headers reach no output byte nor log."""
    out, res = prepared
    header = pydicom.dcmread(next(p for p in cohort.rglob("*") if p.is_file() and p.suffix != ".json"))
    assert str(header.PatientName) == FAKE_PATIENT_NAME and header.PatientBirthDate == FAKE_BIRTH_DATE
    secrets = {FAKE_PATIENT_NAME, *FAKE_PATIENT_NAME.split("^"), FAKE_BIRTH_DATE, FAKE_PATIENT_ID,
               FAKE_STUDY_DATE, str(header.PatientID), str(header.StudyInstanceUID)}
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} == {".h5", ".json", ".txt"}
    for path in files:
        blob = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in blob, f"{secret} found in {path.name}"
    for secret in secrets:
        assert secret not in res.stdout + res.stderr


def test_unlabelled_dicom(cohort, tmp_path):
    """Without truth.json / labels.csv the rows get ed = es = -1 and a NaN label, and the summary says so."""
    import shutil
    plain = tmp_path / "plain"
    shutil.copytree(cohort, plain, ignore=shutil.ignore_patterns("truth.json"))
    res = run_cli("--source", "dicom", plain, tmp_path / "out", "--folds", "2", "--size", "32")
    assert res.returncode == 0, res.stderr
    data = load_prepared(tmp_path / "out")
    assert (data["ed"] == -1).all() and np.isnan(data["label"]).all()
    assert "have no ED/ES" in res.stdout


def test_nifti_sources_and_one_patient(tmp_path):
    """ACDC layout via --source acdc (root and one patient folder) and --source nifti agree."""
    write_nifti_cohort(tmp_path / "acdc", 2, seed=1, size=48)
    assert prepare.main(["--source", "acdc", str(tmp_path / "acdc"), str(tmp_path / "a"),
                         "--size", "48", "--folds", "2", "--workers", "1"]) == 0
    assert prepare.main(["--source", "nifti", str(tmp_path / "acdc"), str(tmp_path / "n"),
                         "--size", "48", "--folds", "2", "--workers", "1"]) == 0
    a, n = load_prepared(tmp_path / "a"), load_prepared(tmp_path / "n")
    np.testing.assert_array_equal(a["frames"], n["frames"])
    np.testing.assert_array_equal(a["ed"], n["ed"])
    assert prepare.main(["--source", "acdc", str(tmp_path / "acdc" / "patient001"),
                         str(tmp_path / "one"), "--size", "48", "--workers", "1"]) == 0
    one = load_prepared(tmp_path / "one")
    assert len(set(one["group"])) == 1 and (tmp_path / "one" / "all.txt").is_file()
    assert not (tmp_path / "one" / "fold0_test.txt").exists()      # one patient: no folds


def test_privacy_of_skip_reasons(tmp_path):
    """A skipped file under a folder named after the patient: the reason recorded in the HDF5 has no path."""
    from data_prep.synthetic import write_dicom_series
    folder = tmp_path / "in" / "ZORBLAX_QUENTINA"
    rng = np.random.default_rng(0)
    for uid, patient in (("1.1", "A"), ("1.2", "B")):
        write_dicom_series(folder, rng.integers(0, 300, (4, 16, 16)).astype(float), series_uid=uid,
                           slice_location=0.0, patient_id=patient, rng=rng)
    (folder / "broken.dcm").write_bytes(b"not dicom" * 40)
    out = tmp_path / "out"
    assert prepare.main(["--source", "dicom", str(tmp_path / "in"), str(out), "--folds", "2",
                         "--size", "16", "--workers", "1"]) == 0
    prov = load_prepared(out)["provenance"]
    assert prov["counts"]["skipped_reasons"] == {"not a DICOM file": 1}
    for path in out.rglob("*"):
        assert b"ZORBLAX" not in path.read_bytes()
