"""Each bad-input case of issue 3: one InputError naming file and problem; the CLI skips or stops."""
from __future__ import annotations

import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from data_prep.errors import InputError
from data_prep.readers import find_sequences, read_any
from data_prep.synthetic import write_dicom_series, write_nifti_cohort

RNG = np.random.default_rng


def frames_of(t: int, h: int = 10, w: int = 10, seed: int = 0) -> np.ndarray:
    """Random non-constant integer frames."""
    return RNG(seed).integers(0, 400, (t, h, w)).astype(np.float64)


def good_series(folder, uid="1.1", location=0.0, t=4, seed=0, **kw):
    """A valid single-slice series; returns the paths in phase order."""
    return write_dicom_series(folder, frames_of(t, seed=seed), series_uid=uid,
                              slice_location=location, rng=RNG(seed + 100), **kw)


def only_problem(source, path) -> InputError:
    """The single problem found (scan) or met on loading."""
    found, problems = find_sequences(source, path)
    for item in found:
        try:
            item.load()
        except InputError as exc:
            problems.append(exc)
    assert len(problems) == 1, problems
    return problems[0]


def test_not_a_dicom_file(tmp_path):
    good_series(tmp_path, t=3)
    (tmp_path / "scan.dcm").write_bytes(b"hello, not DICOM at all" * 10)
    err = only_problem("dicom", tmp_path)
    assert err.path.endswith("scan.dcm") and err.problem == "not a DICOM file"


def test_truncated_file(tmp_path):
    """Cut in the pixel data: the scan still reads the header, decoding names the file."""
    paths = good_series(tmp_path, t=3)
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) - 60])
    err = only_problem("dicom", tmp_path)
    assert err.path == str(paths[1]) and "truncated" in err.problem


def test_truncated_header(tmp_path):
    paths = good_series(tmp_path, t=3)
    paths[0].write_bytes(paths[0].read_bytes()[:200])
    found, problems = find_sequences("dicom", tmp_path)
    assert any(p.path == str(paths[0]) for p in problems)


def test_no_pixel_data(tmp_path):
    paths = good_series(tmp_path, t=3, omit=("CardiacNumberOfImages",))   # no count to contradict
    write_dicom_series(tmp_path, frames_of(1), series_uid="1.1", slice_location=0.0,
                       trigger_times=[999.0], instance_numbers=[9],
                       omit=("PixelData", "CardiacNumberOfImages"), file_names=["nopix"])
    err = only_problem("dicom", tmp_path)
    assert err.path.endswith("nopix") and err.problem == "no pixel data"
    assert len(paths) == 3


def test_frames_of_different_sizes(tmp_path):
    good_series(tmp_path, t=3)
    write_dicom_series(tmp_path, frames_of(1, 12, 12), series_uid="1.1", slice_location=0.0,
                       trigger_times=[500.0], instance_numbers=[7], file_names=["big"])
    err = only_problem("dicom", tmp_path)
    assert err.path.endswith("big") and "frame size 12x12 differs from 10x10" in err.problem


def test_series_of_one_frame(tmp_path):
    good_series(tmp_path, t=1)
    err = only_problem("dicom", tmp_path)
    assert "a series of 1 frame" in err.problem and "at least 2" in err.problem


def test_duplicate_phases(tmp_path):
    good_series(tmp_path, t=3, trigger_times=[0, 10, 10], instance_numbers=[1, 2, 2])
    err = only_problem("dicom", tmp_path)
    assert err.problem.startswith("duplicate phase")


def test_missing_ordering_tags(tmp_path):
    paths = good_series(tmp_path, t=3)
    write_dicom_series(tmp_path, frames_of(1), series_uid="1.1", slice_location=0.0,
                       omit=("TriggerTime", "InstanceNumber"), file_names=["unordered"])
    err = only_problem("dicom", tmp_path)
    assert err.path.endswith("unordered")
    assert err.problem == "no TriggerTime or InstanceNumber to order the phases by"
    assert paths


def test_missing_frame_against_cardiac_number_of_images(tmp_path):
    paths = good_series(tmp_path, t=5)
    paths[2].unlink()
    err = only_problem("dicom", tmp_path)
    assert "missing frame: 4 of 5 phases" in err.problem


def test_empty_folder(tmp_path):
    err = only_problem("dicom", tmp_path)
    assert err.path == str(tmp_path) and "empty folder" in err.problem
    err = only_problem("acdc", tmp_path)
    assert "empty input" in err.problem


def _acdc(tmp_path):
    write_nifti_cohort(tmp_path / "acdc", 1, seed=0, size=40)
    return tmp_path / "acdc" / "patient001"


def test_3d_nifti_where_4d_expected(tmp_path):
    patient = _acdc(tmp_path)
    nii = patient / "patient001_4d.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 3), np.int16), np.eye(4)), nii)
    err = only_problem("acdc", patient)
    assert err.path == str(nii) and "is 3-D" in err.problem and "expected 4-D" in err.problem


def test_info_cfg_without_ed_es(tmp_path):
    patient = _acdc(tmp_path)
    n = nib.load(patient / "patient001_4d.nii.gz").shape[3]
    (patient / "Info.cfg").write_text(f"Group: NOR\nNbFrame: {n}\n")
    err = only_problem("acdc", patient)
    assert err.path.endswith("Info.cfg") and err.problem.startswith("no ED line")


@pytest.mark.parametrize("line,expected", [("ED: 0\nES: 5", "ED 0 is out of range"),
                                           ("ED: 1\nES: 999", "ES 999 is out of range")])
def test_info_cfg_ed_es_out_of_range(tmp_path, line, expected):
    patient = _acdc(tmp_path)
    (patient / "Info.cfg").write_text(line + "\n")
    err = only_problem("acdc", patient)
    assert err.path.endswith("Info.cfg") and expected in err.problem


def _nifti_with(tmp_path, fill):
    patient = _acdc(tmp_path)
    nii = patient / "patient001_4d.nii.gz"
    data = nib.load(nii).get_fdata().astype(np.float32)
    fill(data)
    nib.save(nib.Nifti1Image(data, np.eye(4)), nii)
    return patient, data.shape[2]


def test_constant_image(tmp_path):
    def blank(d):
        d[:, :, 0, 3] = 7.0
    patient, _ = _nifti_with(tmp_path, blank)
    err = _cli_problem(tmp_path, "acdc", patient)
    assert "(slice 1 of the 4D volume): constant image: frame 3 has a single value" in err


def test_nan_image(tmp_path):
    def nan(d):
        d[5, 5, 1, 2] = np.nan
    patient, _ = _nifti_with(tmp_path, nan)
    err = _cli_problem(tmp_path, "acdc", patient)
    assert "(slice 2 of the 4D volume): NaN or infinite pixel values (first in frame 2)" in err


def _run(*args):
    return subprocess.run([sys.executable, "-m", "data_prep.prepare", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def _cli_problem(tmp_path, source, path) -> str:
    """Run the CLI with --on-error skip; return the one 'skipped:' line (no traceback)."""
    out = tmp_path / "out"
    res = _run("--source", source, path, out, "--workers", "1")
    assert "Traceback" not in res.stderr, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if "skipped:" in ln]
    assert len(lines) == 1, res.stderr
    return lines[0]


def test_cli_skip_stop_and_strict(tmp_path):
    """skip: one line, a summary, exit 0 (1 with --strict); stop: exit 1 and no OUT, no temp folder."""
    good_series(tmp_path / "in", uid="1.1", t=4, seed=1, patient_id="A")
    good_series(tmp_path / "in", uid="1.2", t=4, seed=2, patient_id="B")
    good_series(tmp_path / "in", uid="1.3", t=1, seed=3, patient_id="C")        # a 1-frame series
    (tmp_path / "in" / "junk.bin").write_bytes(b"\x00" * 300)                    # not DICOM
    res = _run("--source", "dicom", tmp_path / "in", tmp_path / "skip", "--folds", "2")
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    skipped = [ln for ln in res.stderr.splitlines() if ln.startswith("skipped:")]
    assert len(skipped) == 2 and any("junk.bin: not a DICOM file" in ln for ln in skipped)
    assert "wrote 2 sequences" in res.stdout and "skipped 2" in res.stdout
    assert "1 x not a DICOM file" in res.stdout
    strict = _run("--source", "dicom", tmp_path / "in", tmp_path / "strict", "--folds", "2", "--strict")
    assert strict.returncode == 1 and (tmp_path / "strict" / "sequences.h5").is_file()
    stop = _run("--source", "dicom", tmp_path / "in", tmp_path / "stop", "--on-error", "stop")
    assert stop.returncode == 1 and "Traceback" not in stop.stderr
    assert len([ln for ln in stop.stderr.splitlines() if ln.startswith("error:")]) == 1
    assert not (tmp_path / "stop").exists()
    assert not list(tmp_path.glob("*.tmp-*"))


def test_cli_nothing_to_write(tmp_path):
    (tmp_path / "empty").mkdir()
    res = _run("--source", "dicom", tmp_path / "empty", tmp_path / "out")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "empty folder" in res.stderr
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("*.tmp-*"))
    missing = _run("--source", "acdc", tmp_path / "nowhere", tmp_path / "out")
    assert missing.returncode == 1 and "does not exist" in missing.stderr


def test_read_any_raises_first_problem(tmp_path):
    (tmp_path / "x.dcm").write_bytes(b"nope" * 100)
    with pytest.raises(InputError, match="x.dcm: not a DICOM file"):
        read_any("dicom", tmp_path)


# --- frame counts that contradict the images (issue 23) -------------------------------------------

def test_info_cfg_nbframe_contradicts_the_volume(tmp_path):
    """The synthetic writer's ACDC patient with Info.cfg's NbFrame changed: one error naming
    Info.cfg and the volume, for prepare's scan and its CLI."""
    patient = _acdc(tmp_path)
    info = patient / "Info.cfg"
    n = nib.load(patient / "patient001_4d.nii.gz").shape[3]
    info.write_text(info.read_text().replace(f"NbFrame: {n}\n", f"NbFrame: {n + 3}\n"))
    err = only_problem("acdc", patient)
    assert err.path == str(info)
    assert err.problem == (f"NbFrame {n + 3} contradicts patient001_4d.nii.gz, whose time axis "
                           f"has {n} frames")
    line = _cli_problem(tmp_path, "acdc", patient)
    assert "Info.cfg: NbFrame" in line


def _retag(paths, **tags):
    import pydicom
    for path in paths:
        ds = pydicom.dcmread(path)
        for key, value in tags.items():
            setattr(ds, key, value)
        ds.save_as(path)


def test_more_phases_than_cardiac_number_of_images(tmp_path):
    paths = good_series(tmp_path, t=5)
    _retag(paths, CardiacNumberOfImages=4)
    err = only_problem("dicom", tmp_path)
    assert err.path == str(tmp_path)
    assert "5 phases found where CardiacNumberOfImages says 4" in err.problem


def test_contradictory_cardiac_number_of_images(tmp_path):
    paths = good_series(tmp_path, t=5)
    _retag(paths[:2], CardiacNumberOfImages=6)
    err = only_problem("dicom", tmp_path)
    assert "contradictory CardiacNumberOfImages [5, 6]" in err.problem


def test_one_problem_line_per_file_and_cause(tmp_path):
    """Every slice of one 4D NIfTI failing the same way is one line naming the file and the
    count; two causes in one file are two lines (errors.problem_lines, through the CLI)."""
    def blank(d):
        d[:, :, :, 3] = 7.0                       # frame 4 of every slice: constant
    patient, n_slices = _nifti_with(tmp_path, blank)
    out = tmp_path / "out"
    res = _run("--source", "acdc", patient, out, "--workers", "1")
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("skipped:")]
    assert lines == [f"skipped: {patient / 'patient001_4d.nii.gz'}: constant image: frame 3 has "
                     f"a single value ({n_slices} sequences of this file)"], res.stderr
    from data_prep.errors import Where, problem_lines
    a, b = (InputError(Where(f"f.nii (slice {k})", "f.nii"), "bad") for k in (1, 2))
    c = InputError(Where("f.nii (slice 3)", "f.nii"), "worse")
    d = InputError("g.nii", "bad")
    assert problem_lines([a, c, b, d]) == ["f.nii: bad (2 sequences of this file)",
                                           "f.nii (slice 3): worse", "g.nii: bad"]
