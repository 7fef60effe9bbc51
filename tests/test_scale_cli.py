"""Physical scale through the commands: detect crops as the run's data was cropped, evaluate_afd
refuses frames of another geometry, a missing pixel size is one clear problem."""
import csv
import json

import numpy as np
import pytest

from cli import run_module
from data_prep import prepare
from data_prep.synthetic import generate_patient, write_dicom_series
from tempregnet.contract import read_contract
from trivial_net import STORED, write_prepared, write_run_dir

pytest.importorskip("caffe")
nib = pytest.importorskip("nibabel")

FIELD_MM = 128.0


def physical_run(folder, contract):
    """The trivial run folder, recorded as trained on data of this (physical) contract."""
    return write_run_dir(folder, contract=contract)


@pytest.fixture(scope="module")
def phantom_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    p = generate_patient(np.random.default_rng([3, 2]), 2, n_slices=2, fov_mm=300.0, size=160)
    for i, frames in enumerate(p.slices):
        write_dicom_series(root / "study" / f"s{i}", frames, series_uid=f"1.2.9.{i}",
                           slice_location=-10.0 * i, pixel_spacing=p.pixel_spacing,
                           rng=np.random.default_rng(i))
    (root / "study" / "labels.csv").write_text(
        "series_uid,ed,es\n" + "".join(f"1.2.9.{i},{p.ed},{p.es}\n" for i in range(len(p.slices))))
    return root / "study", p


@pytest.fixture(scope="module")
def physical_prepared(tmp_path_factory, phantom_study):
    out = tmp_path_factory.mktemp("prep") / "prepared"
    assert prepare.main(["--source", "dicom", str(phantom_study[0]), str(out), "--size",
                         str(STORED), "--mm-per-px", repr(FIELD_MM / STORED), "--workers", "1",
                         "--folds", "1"]) == 0
    return out


def test_detect_crops_around_the_lv_and_says_where(phantom_study, physical_prepared, tmp_path):
    study, p = phantom_study
    run = physical_run(tmp_path / "run", read_contract(physical_prepared))
    out = tmp_path / "det"
    res = run_module("tools.detect", study, "--run", run, "--out", out, "--plot", "--quiet")
    assert res.returncode == 0, res.stderr
    det = json.loads((out / "detections.json").read_text())
    assert len(det["sequences"]) == len(p.slices)
    for rec in det["sequences"]:
        crop = rec["crop"]
        assert crop["side_mm"] == FIELD_MM and crop["spacing_from"] == "header"
        err = min(np.hypot(*(np.array(crop["centre_px"]) - p.lv_center[i].mean(axis=0)))
                  for i in range(len(p.slices))) * p.pixel_spacing
        assert err < 15.0
    assert len(list((out / "plots").glob("*.png"))) == len(p.slices)
    # the crop detect took is the one prepare took for the same frames
    prepared = json.loads((physical_prepared / "crops.json").read_text())["sequences"]
    assert sorted(tuple(c["centre_px"]) for c in prepared) == \
        sorted(tuple(r["crop"]["centre_px"]) for r in det["sequences"])


def _placeholder_nifti(path, p):
    """A phantom's stack as a 4-D NIfTI whose header is the 1 x 1 x 1 placeholder (no units)."""
    data = np.stack(p.slices).astype(np.float32).transpose(3, 2, 0, 1)   # x, y, slice, time
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def test_detect_estimates_a_missing_pixel_size_and_says_so(phantom_study, physical_prepared,
                                                            tmp_path):
    """No flag: the pixel size is estimated from the images (one per stack), written in the
    JSON crop and the CSV; --input-mm-per-px overrides it."""
    from data_prep.pixel_size import estimate_stack
    _, p = phantom_study
    path = _placeholder_nifti(tmp_path / "case_4d.nii.gz", p)
    run = physical_run(tmp_path / "run", read_contract(physical_prepared))
    res = run_module("tools.detect", path, "--run", run, "--out", tmp_path / "a", "--quiet")
    assert res.returncode == 0, res.stderr
    expected = estimate_stack([np.asarray(f, np.float32) for f in p.slices], FIELD_MM).mm_per_px
    recs = json.loads((tmp_path / "a" / "detections.json").read_text())["sequences"]
    assert len(recs) == len(p.slices)
    for rec in recs:
        assert rec["crop"]["spacing_from"] == "estimated"
        assert rec["crop"]["input_mm_per_px"] == pytest.approx([expected] * 2, abs=1e-5)
    with open(tmp_path / "a" / "detections.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["pixel_size_from"] for r in rows] == ["estimated"] * len(p.slices)
    assert float(rows[0]["input_mm_per_px_row"]) == pytest.approx(expected, abs=1e-5)
    res = run_module("tools.detect", path, "--run", run, "--out", tmp_path / "b", "--quiet",
                     "--input-mm-per-px", "1.5")
    assert res.returncode == 0, res.stderr
    rec = json.loads((tmp_path / "b" / "detections.json").read_text())["sequences"][0]
    assert rec["crop"]["spacing_from"] == "override" and rec["crop"]["input_mm_per_px"] == [1.5, 1.5]


def test_detect_says_a_problem_of_every_slice_once(physical_prepared, tmp_path):
    """A placeholder NIfTI whose images show no heart: the size cannot be estimated for any of
    its slices, said in one line naming the file; exit 1, no traceback."""
    frames = np.full((24, 24, 3, 12), 100.0, np.float32)              # nothing to measure
    path = tmp_path / "flat_4d.nii.gz"
    nib.save(nib.Nifti1Image(frames, np.eye(4)), path)
    run = physical_run(tmp_path / "run", read_contract(physical_prepared))
    res = run_module("tools.detect", path, "--run", run, "--out", tmp_path / "a", "--quiet")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    problems = [ln for ln in res.stderr.splitlines() if ln.startswith("problem:")]
    assert len(problems) == 1, res.stderr
    assert problems[0].startswith(f"problem: {path}: NIfTI pixdim is the 1 x 1 x 1 placeholder")
    assert "none could be estimated" in problems[0] and "--input-mm-per-px" in problems[0]
    assert problems[0].endswith("(3 sequences of this file)")
    det = json.loads((tmp_path / "a" / "detections.json").read_text())
    assert det["n_problems"] == 1


def test_detect_refuses_a_frame_count_the_images_contradict(physical_prepared, tmp_path):
    """An ACDC folder whose Info.cfg NbFrame contradicts the volume: one line naming Info.cfg."""
    from data_prep.synthetic import write_nifti_cohort
    write_nifti_cohort(tmp_path / "acdc", 1, seed=0, size=64)
    patient = tmp_path / "acdc" / "patient001"
    info = patient / "Info.cfg"
    text = info.read_text()
    n = int(next(l for l in text.splitlines() if l.startswith("NbFrame")).split(":")[1])
    info.write_text(text.replace(f"NbFrame: {n}", f"NbFrame: {n - 1}"))
    run = physical_run(tmp_path / "run", read_contract(physical_prepared))
    res = run_module("tools.detect", patient, "--run", run, "--out", tmp_path / "a", "--quiet")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    problems = [ln for ln in res.stderr.splitlines() if ln.startswith("problem:")]
    assert problems == [f"problem: {info}: NbFrame {n - 1} contradicts patient001_4d.nii.gz, "
                        f"whose time axis has {n} frames"], res.stderr


def test_evaluate_refuses_frames_of_another_geometry(physical_prepared, tmp_path):
    legacy = write_prepared(tmp_path / "legacy", [(20, 0, 7, 0, 7), (15, 4, 9, 4, 9)], [[0], [1]])
    physical = read_contract(physical_prepared)
    run = physical_run(tmp_path / "run", physical)
    res = run_module("tools.evaluate_afd", "--run", run, "--list", legacy / "fold0_test.txt",
                     "--out", tmp_path / "e1")
    assert res.returncode == 2 and "mm_per_px" in res.stderr and "Traceback" not in res.stderr
    res = run_module("tools.evaluate_afd", "--run", run, "--list",
                     physical_prepared / "all.txt", "--out", tmp_path / "e2")
    assert res.returncode == 0, res.stderr
    other = physical_run(tmp_path / "run2", physical.replace(mm_per_px=200 / STORED))
    res = run_module("tools.evaluate_afd", "--run", other, "--list",
                     physical_prepared / "all.txt", "--out", tmp_path / "e3")
    assert res.returncode == 2 and "mm_per_px" in res.stderr
