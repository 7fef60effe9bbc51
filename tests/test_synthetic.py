"""Synthetic cohort: determinism, cycle ranges, measured blood-pool area vs truth, DICOM/NIfTI round trips, CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from scipy import ndimage

from data_prep import synthetic as syn


def _patient(index, seed=0, **kw):
    return syn.generate_patient(np.random.default_rng([seed, index]), index, **kw)


def _measured_lv_area(frames, centres, threshold):
    """Pixels above threshold in the connected component holding the LV centre, per frame."""
    areas = []
    for frame, (row, col) in zip(frames, centres):
        labels, _ = ndimage.label(frame > threshold)
        component = labels[int(round(row)), int(round(col))]
        assert component > 0, "LV centre is not in the blood pool"
        areas.append(int((labels == component).sum()))
    return np.array(areas)


def test_generate_patient_is_deterministic_and_overrides_keep_the_rest():
    a, b = _patient(5, size=64), _patient(5, size=64)
    assert (a.ed, a.es, a.n_frames, a.kind) == (b.ed, b.es, b.n_frames, b.kind)
    for x, y in zip(a.slices, b.slices):
        np.testing.assert_array_equal(x, y)
    other = _patient(5, seed=1, size=64)
    assert not np.array_equal(a.volume[:3], other.volume[:3]) or a.n_frames != other.n_frames
    clean = _patient(5, size=64, clean=True)            # same cycle, anatomy; no noise
    assert (clean.ed, clean.es, clean.ef) == (a.ed, a.es, a.ef)
    np.testing.assert_allclose(clean.lv_area, a.lv_area)
    assert not np.array_equal(clean.slices[0], a.slices[0])
    with pytest.raises(TypeError, match="unknown override"):
        _patient(5, size=64, colour="red")


def test_cohort_cycles_cover_the_specified_ranges():
    patients = [_patient(i, size=32, clean=True) for i in range(160)]
    frames = [p.n_frames for p in patients]
    assert min(frames) >= 12 and max(frames) <= 35
    assert min(frames) <= 14 and max(frames) >= 33             # the range is used
    kinds = {}
    for p in patients:
        t = p.n_frames
        assert 0.30 <= ((p.es - p.ed) % t) / t <= 0.45
        # Truth = unique extremes of the volume curve on the frame grid.
        order = np.argsort(p.volume)
        assert (order[-1], order[0]) == (p.ed, p.es)
        assert p.volume[order[-1]] - p.volume[order[-2]] >= syn.MIN_EXTREME_MARGIN
        assert p.volume[order[1]] - p.volume[order[0]] >= syn.MIN_EXTREME_MARGIN
        np.testing.assert_allclose(p.volume.min(), 1 - p.ef, atol=0.02)
        relative = p.lv_area / p.lv_area[:, p.ed:p.ed + 1]
        np.testing.assert_allclose(relative, np.broadcast_to(p.volume / p.volume[p.ed],
                                                             relative.shape), rtol=1e-9)
        assert len(p.slices) >= 3 and np.all(np.diff(p.lv_area[:, p.ed]) <= 0)  # base to apex
        kinds.setdefault(p.kind, []).append(p.ef)
    for kind, (lo, hi) in ((k, syn.KIND_PARAMS[k]["ef"]) for k in syn.KINDS):
        assert lo <= min(kinds[kind]) and max(kinds[kind]) <= hi
    eds = np.array([p.ed for p in patients])
    ess = np.array([p.es for p in patients])
    assert 0.25 <= np.mean(eds == 0) <= 0.65          # many, not all, start at ED
    assert np.sum(eds > ess) >= 10                     # sequences starting mid-systole
    assert np.sum((eds > 0) & (eds < ess)) >= 10       # ... and mid-diastole


def test_measured_blood_pool_area_gives_the_true_ed_es():
    for index in range(8):                             # two of each kind, every slice
        p = _patient(index, clean=True)
        threshold = (p.blood_level + p.myocardium_level) / 2
        for s, frames in enumerate(p.slices):
            area = _measured_lv_area(frames, p.lv_center[s], threshold)
            assert (int(np.argmax(area)), int(np.argmin(area))) == (p.ed, p.es), (index, s)
            # Pixel counting is within the lattice error of the analytic area.
            assert np.abs(area - p.lv_area[s]).max() <= 0.02 * p.lv_area[s].max() + 12


def test_wall_thickens_in_systole_and_noise_is_rician():
    p = _patient(0, clean=True)
    mid = len(p.slices) // 2
    threshold = (p.blood_level + p.myocardium_level) / 2
    # Constant myocardial area: the dark ring around the cavity is wider at ES than at ED.
    widths = []
    for k in (p.ed, p.es):
        row, col = np.round(p.lv_center[mid, k]).astype(int)
        line = p.slices[mid][k, row, col:]
        dark = np.flatnonzero(line < threshold)
        start = dark[0]
        widths.append(np.argmax(line[start:] > threshold) if np.any(line[start:] > threshold)
                      else len(line) - start)
    assert widths[1] > widths[0]
    noisy = _patient(0)
    air = noisy.slices[mid][:, :4, :4]                 # corner outside the body
    assert air.min() >= 0 and air.mean() > 0            # magnitude noise floor, never negative
    assert np.corrcoef(noisy.slices[mid].ravel(), p.slices[mid].ravel())[0, 1] > 0.9


def test_dicom_cohort_round_trips(tmp_path):
    out = tmp_path / "dicom"
    records = syn.write_dicom_cohort(out, 4, seed=3, size=96)
    truth = json.loads((out / "truth.json").read_text())
    assert truth["sequences"] == records and truth["frames"] == "0-based"
    text = (out / "truth.json").read_text()
    for secret in (syn.FAKE_PATIENT_NAME, syn.FAKE_BIRTH_DATE, syn.FAKE_PATIENT_ID,
                   syn.FAKE_STUDY_DATE):
        assert secret not in text
    assert sum(len(r["files"]) for r in records) == len(
        [f for f in out.rglob("*") if f.is_file() and f.name != "truth.json"])
    slopes = set()
    patients = {i: _patient(i, seed=3, size=96) for i in {r["patient"] for r in records}}
    for rec in records:
        p = patients[rec["patient"]]
        assert (rec["ed"], rec["es"], rec["n_frames"]) == (p.ed, p.es, p.n_frames)
        assert len(rec["files"]) == p.n_frames
        assert all(len(Path(f).parts) >= 3 for f in rec["files"])        # nested folders
        times = []
        for k, rel in enumerate(rec["files"]):
            raw = (out / rel).read_bytes()
            assert syn.FAKE_PATIENT_NAME.encode() in raw
            ds = pydicom.dcmread(out / rel)
            assert ds.SOPClassUID == syn.MR_IMAGE_STORAGE and ds.Modality == "MR"
            assert str(ds.PatientName) == syn.FAKE_PATIENT_NAME
            assert ds.PatientBirthDate == syn.FAKE_BIRTH_DATE
            assert ds.PatientID.startswith(syn.FAKE_PATIENT_ID)
            assert ds.SeriesInstanceUID == rec["series_uid"]
            assert float(ds.SliceLocation) == pytest.approx(rec["slice_location"])
            assert (ds.Rows, ds.Columns) == p.slices[0].shape[1:]
            row, col = np.array(ds.ImageOrientationPatient, float).reshape(2, 3)
            assert abs(row @ col) < 1e-5 and abs(np.linalg.norm(row) - 1) < 1e-5
            # ImagePositionPatient lies at SliceLocation along the plane normal.
            assert np.cross(row, col) @ np.array(ds.ImagePositionPatient, float) == \
                pytest.approx(rec["slice_location"], abs=1e-2)
            slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
            slopes.add(slope)
            value = ds.pixel_array.astype(np.float64) * slope + intercept
            assert np.abs(value - p.slices[rec["slice"]][k]).max() <= slope / 2 + 1e-3
            times.append(float(ds.TriggerTime))
        assert np.all(np.diff(times) > 0)
    assert slopes - {1.0}, "no series with a non-trivial rescale in this cohort"
    # Several slices of one patient share the study; positions differ.
    first = [r for r in records if r["patient"] == 0]
    assert len({r["slice_location"] for r in first}) == len(first)


def test_write_dicom_series_for_reader_tests(tmp_path):
    frames = np.random.default_rng(0).uniform(0, 500, (3, 16, 20))
    paths = syn.write_dicom_series(tmp_path, frames, series_uid="1.2.3.4", slice_location=-7.5,
                                   dtype="uint16", trigger_times=[0, 40, 40],
                                   omit=("InstanceNumber",), tags={"SeriesDescription": "odd"})
    assert len(paths) == 3
    ds = pydicom.dcmread(paths[2])
    assert "InstanceNumber" not in ds and ds.SeriesDescription == "odd"
    assert float(ds.TriggerTime) == 40 and ds.PixelRepresentation == 0
    np.testing.assert_allclose(ds.pixel_array, np.round(frames[2]))
    with pytest.raises(ValueError, match="does not fit"):
        syn.write_dicom_series(tmp_path / "x", -frames, series_uid="1.2.3.5",
                               slice_location=0.0, dtype="uint16")


def test_nifti_cohort_round_trips_in_acdc_layout(tmp_path):
    out = tmp_path / "acdc"
    records = syn.write_nifti_cohort(out, 2, seed=1, size=96)
    for index in range(2):
        name = f"patient{index + 1:03d}"
        p = _patient(index, seed=1, size=96)
        img = nib.load(out / name / f"{name}_4d.nii.gz")
        data = np.asanyarray(img.dataobj)
        assert data.dtype == np.int16
        assert data.shape == (96, 96, len(p.slices), p.n_frames)        # x, y, slice, time
        for z, frames in enumerate(p.slices):
            np.testing.assert_allclose(data[:, :, z, :].transpose(2, 1, 0), frames, atol=0.5)
        cfg = dict(line.split(": ") for line in
                   (out / name / "Info.cfg").read_text().splitlines())
        assert (int(cfg["ED"]), int(cfg["ES"])) == (p.ed + 1, p.es + 1)    # 1-based in file
        assert int(cfg["NbFrame"]) == p.n_frames and cfg["Group"] == syn.ACDC_GROUP[p.kind]
        mine = [r for r in records if r["patient"] == index]
        assert [r["slice"] for r in mine] == list(range(len(p.slices)))
        assert all((r["ed"], r["es"]) == (p.ed, p.es) for r in mine)     # 0-based in API


def test_cli_refuses_to_overwrite_and_force_replaces(tmp_path):
    out = tmp_path / "cohort"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    cmd = [sys.executable, "-m", "data_prep.synthetic", str(out), "--patients", "1"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode != 0 and "exists" in run.stderr and "Traceback" not in run.stderr
    assert (out / "keep.txt").read_text() == "mine"
    assert syn.main([str(out), "--patients", "1", "--size", "64", "--format", "nifti",
                     "--force"]) == 0
    assert not (out / "keep.txt").exists() and (out / "patient001" / "Info.cfg").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort"]      # no temp leftovers
