"""tools/detect.py end to end: generated DICOM studies with a bad file, ACDC and NIfTI inputs."""
import csv
import json

import numpy as np
import pytest

from cli import run_module
from trivial_net import write_run_dir

pytest.importorskip("caffe")
synthetic = pytest.importorskip("data_prep.synthetic")
pydicom = pytest.importorskip("pydicom")

PHANTOM_PX = 64          # small phantoms keep the test fast
IDENTIFIERS = (synthetic.FAKE_PATIENT_NAME, synthetic.FAKE_PATIENT_ID, synthetic.FAKE_BIRTH_DATE,
               synthetic.FAKE_STUDY_DATE, "ZORBLAX", "QUENTINA", "case001", "case002")


def run_detect(*args):
    return run_module("tools.detect", *args, "--quiet")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return write_run_dir(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def dicom_studies(tmp_path_factory):
    """Two generated DICOM patients; a corrupt file is dropped into the first one."""
    root = tmp_path_factory.mktemp("dicom")
    truth = synthetic.write_dicom_cohort(root / "cohort", 2, seed=5, size=PHANTOM_PX)
    (root / "cohort" / "case001" / "broken.dcm").write_bytes(b"\x00" * 64 + b"not a dicom file")
    return root / "cohort", truth


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_dicom_batch_with_a_bad_file(dicom_studies, run_dir, tmp_path):
    cohort, truth = dicom_studies
    out = tmp_path / "det"
    res = run_detect(cohort / "case001", cohort / "case002", "--run", run_dir, "--out", out,
                     "--plot")
    assert res.returncode == 1                       # something failed ...
    assert "Traceback" not in res.stderr
    problems = [l for l in res.stderr.splitlines() if l.startswith("problem:")]
    assert len(problems) == 1 and "broken.dcm" in problems[0] and "not a DICOM" in problems[0]
    rows = read_csv(out / "detections.csv")
    assert len(rows) == len(truth)                   # ... yet every good sequence is reported
    assert sorted({int(r["input"]) for r in rows}) == [1, 2]
    for row in rows:
        n = int(row["n_frames"])
        ed, es = int(row["ed_0based"]), int(row["es_0based"])
        assert 0 <= ed < n and 0 <= es < n and ed != es
        assert (int(row["ed_1based"]), int(row["es_1based"])) == (ed + 1, es + 1)
    assert len(list((out / "plots").glob("*.png"))) == len(truth)
    # time per sequence printed
    assert "s per sequence" in res.stdout


def test_instance_numbers_are_those_of_the_detected_frames(dicom_studies, run_dir, tmp_path):
    cohort, truth = dicom_studies
    out = tmp_path / "det"
    run_detect(cohort / "case002", "--run", run_dir, "--out", out)
    rows = read_csv(out / "detections.csv")
    mine = [t for t in truth if t["folder"] == "case002"]
    assert sorted(int(r["n_frames"]) for r in rows) == sorted(t["n_frames"] for t in mine)
    # independent check: InstanceNumber read straight from the file of each frame
    by_frames = {}
    for t in mine:
        numbers = [int(pydicom.dcmread(cohort / f, stop_before_pixels=True).InstanceNumber)
                   for f in t["files"]]
        by_frames.setdefault(t["n_frames"], []).append(numbers)
    for row in rows:
        ed, es = int(row["ed_0based"]), int(row["es_0based"])
        candidates = by_frames[int(row["n_frames"])]
        assert any(int(row["ed_instance"]) == nums[ed] and int(row["es_instance"]) == nums[es]
                   for nums in candidates)


def test_no_identifiers_in_outputs(dicom_studies, run_dir, tmp_path):
    cohort, _ = dicom_studies
    out = tmp_path / "det"
    run_detect(cohort / "case001", "--run", run_dir, "--out", out, "--plot")
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for ident in IDENTIFIERS:
                assert ident.encode() not in data, (path.name, ident)


def test_refuses_to_overwrite(dicom_studies, run_dir, tmp_path):
    cohort, _ = dicom_studies
    out = tmp_path / "det"
    assert run_detect(cohort / "case002", "--run", run_dir, "--out", out).returncode == 0
    again = run_detect(cohort / "case002", "--run", run_dir, "--out", out)
    assert again.returncode == 2 and "--force" in again.stderr and "Traceback" not in again.stderr
    assert run_detect(cohort / "case002", "--run", run_dir, "--out", out,
                      "--force").returncode == 0


def test_acdc_folder_and_nifti_file(run_dir, tmp_path):
    truth = synthetic.write_nifti_cohort(tmp_path / "acdc", 1, seed=7, size=PHANTOM_PX)
    patient = tmp_path / "acdc" / truth[0]["folder"]
    nifti = next(patient.glob("*_4d.nii*"))
    out = tmp_path / "det"
    res = run_detect(patient, nifti, "--run", run_dir, "--out", out)
    assert res.returncode == 0, res.stderr
    rows = read_csv(out / "detections.csv")
    from_acdc = [r for r in rows if r["input"] == "1"]
    from_file = [r for r in rows if r["input"] == "2"]
    assert len(from_acdc) == len(from_file) == len(truth)
    # ACDC's Info.cfg is 1-based; its labels come out 0-based
    assert sorted({(int(r["ed_true_0based"]), int(r["es_true_0based"])) for r in from_acdc}) == \
        sorted({(t["ed"], t["es"]) for t in truth})
    # the same volume gives the same detections whichever way it is given
    assert [(r["ed_0based"], r["es_0based"]) for r in from_acdc] == \
        [(r["ed_0based"], r["es_0based"]) for r in from_file]
    assert all(r["ed_instance"] == "" for r in rows)


def test_missing_and_empty_inputs_are_one_line_each(run_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    res = run_detect(tmp_path / "nope", empty, "--run", run_dir, "--out", tmp_path / "det")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    problems = [l for l in res.stderr.splitlines() if l.startswith("problem:")]
    assert len(problems) == 2
    assert "nope" in problems[0] and "does not exist" in problems[0]
    assert "empty" in problems[1] and "no files" in problems[1]
    data = json.loads((tmp_path / "det" / "detections.json").read_text())
    assert data["n_sequences"] == 0 and data["n_problems"] == 2


def test_bad_model_is_one_line(tmp_path):
    res = run_detect(tmp_path, "--run", tmp_path / "no_run", "--out", tmp_path / "det")
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "model folder not found" in res.stderr
    assert not np.any([p.name == "detections.csv" for p in tmp_path.rglob("*")])


def test_model_without_size_is_refused(run_dir, tmp_path):
    res = run_detect(tmp_path, "--model", run_dir / "snapshots" / "fixture_iter_1.caffemodel", "--deploy",
                     run_dir / "fixture_deploy.prototxt", "--out", tmp_path / "det")
    assert res.returncode == 2 and "--size" in res.stderr and "Traceback" not in res.stderr


def test_stack_decoding_gives_each_patient_stack_one_pair(dicom_studies, run_dir, tmp_path):
    from tempregnet.labels import decode_steps
    cohort, _ = dicom_studies
    outputs = {}
    for mode in ("per_sequence", "stack"):
        out = tmp_path / mode
        res = run_detect(cohort / "case002", "--run", run_dir, "--out", out,
                         *(["--stack"] if mode == "stack" else []))
        assert res.returncode == 0, res.stderr
        outputs[mode] = json.loads((out / "detections.json").read_text())
    stacked = outputs["stack"]
    assert stacked["decoding"].startswith("per stack") and outputs["per_sequence"]["decoding"] == "per sequence"
    by_length = {}
    for rec in stacked["sequences"]:                 # one patient: a stack per frame count
        by_length.setdefault(rec["n_frames"], []).append(rec)
    for n, recs in by_length.items():
        curves = np.array([r["curve_steps"] for r in recs])
        z = (curves - curves.mean(axis=1, keepdims=True)) / curves.std(axis=1, keepdims=True)
        want = decode_steps(z.mean(axis=0), n, "cycle")
        assert {(r["ed_0based"], r["es_0based"]) for r in recs} == {want}
        assert all(r["stack_size"] == len(recs) for r in recs)
    # the curves are the per-sequence ones: only the decoding changed
    assert [r["curve_steps"] for r in stacked["sequences"]] == \
        [r["curve_steps"] for r in outputs["per_sequence"]["sequences"]]


def test_stacks_are_decoded_per_patient_and_frame_count():
    from types import SimpleNamespace
    from tempregnet.labels import decode_steps, step_positions, volume_label
    from tempregnet.detection import decode_input_stacks
    n = 24
    truth = volume_label(step_positions(n, 20), n, 3, 12)
    spoiled = [truth.copy(), truth.copy()]
    spoiled[0][15] += 1.2                      # each slice alone: a spurious maximum ...
    spoiled[1][18] -= 1.5                      # ... or minimum
    spoiled[1] = 50 * spoiled[1] - 7           # and another scale: standardised before averaging
    assert all(decode_steps(c, n) != (3, 12) for c in spoiled)
    other = volume_label(step_positions(n, 20), n, 20, 5)
    from tempregnet.decoding import Decoding
    from data_prep.rwave import RWAVE_KEY, first_frame_after

    def seq(group, frames, rwave=None):
        return SimpleNamespace(group=group, n_frames=frames,
                               meta={} if rwave is None else {RWAVE_KEY: rwave})

    done = [(seq("a", n), {"curve": c, "time_s": 0.1}) for c in spoiled]
    done.append((seq("b", n), {"curve": other, "time_s": 0.1}))
    done.append((seq("a", n + 1), {"curve": other, "time_s": 0.1}))
    out = decode_input_stacks(done, "cycle", Decoding("fit"))
    assert [(r["ed"], r["es"], r["stack_size"]) for _, r in out] == \
        [(3, 12, 2), (3, 12, 2), (20, 5, 1), decode_steps(other, n + 1) + (1,)]
    # ED at the R wave: the stack's, from its slices' trigger times (median), not frame 0
    late = [(seq("a", n, rwave), {"curve": c, "time_s": 0.1})
            for rwave, c in zip((5.2, 5.6), spoiled)]
    out = decode_input_stacks(late, "cycle", Decoding("rwave_ed"))
    assert [r["ed"] for _, r in out] == [first_frame_after(5.4, n)] * 2 == [6, 6]
    assert [r["es"] for _, r in out] == [12, 12]
