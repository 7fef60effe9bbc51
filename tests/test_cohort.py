"""tools.cohort on real Dask clusters: a LocalCluster of two worker processes against the serial
tools.detect, bad studies in the mix, and SIGKILLs of a worker, of the scheduler and of the whole
command, each followed by a rerun that finishes only what is missing."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cli import run_module
from trivial_net import write_run_dir

pytest.importorskip("caffe")
pytest.importorskip("distributed")
synthetic = pytest.importorskip("data_prep.synthetic")

PHANTOM_PX = 64
N_PATIENTS = 4
COPIES = 2                 # each patient folder twice (other paths): 8 good studies
OUTPUTS = ("detections.csv", "detections.json", "manifest.json")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """8 good studies, a corrupt one (a folder of junk files) and a path that does not exist."""
    root = tmp_path_factory.mktemp("cohort")
    synthetic.write_dicom_cohort(root / "gen", N_PATIENTS, seed=5, size=PHANTOM_PX)
    studies = []
    for copy in range(COPIES):
        for i in range(1, N_PATIENTS + 1):
            dst = root / f"copy{copy}" / f"case{i:03d}"
            shutil.copytree(root / "gen" / f"case{i:03d}", dst)
            studies.append(dst)
    (root / "corrupt").mkdir()
    (root / "corrupt" / "IM0001").write_bytes(b"\x00" * 64 + b"truncated")
    studies[3:3] = [root / "corrupt"]
    studies.append(root / "missing")
    (root / "studies.csv").write_text("path\n" + "".join(f"{p.relative_to(root)}\n"
                                                         for p in studies))
    return root, studies


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return write_run_dir(tmp_path_factory.mktemp("run"))


def cohort_args(cohort, run_dir, out, *extra):
    root, _ = cohort
    return ["--list", root / "studies.csv", "--run", run_dir, "--out", out, "--quiet", *extra]


@pytest.fixture(scope="module")
def reference(cohort, run_dir, tmp_path_factory):
    """The uninterrupted run: a LocalCluster of two worker processes."""
    out = tmp_path_factory.mktemp("reference") / "out"
    res = run_module("tools.cohort", *cohort_args(cohort, run_dir, out, "--workers", "2"))
    return out, res


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_local_cluster_equals_serial_detect(reference, cohort, run_dir, tmp_path):
    out, res = reference
    _, studies = cohort
    assert res.returncode == 1, res.stderr            # the bad studies fail the exit status
    assert "Traceback" not in res.stderr
    problems = [line for line in res.stderr.splitlines() if line.startswith("problem:")]
    assert len(problems) == 2                           # one line per bad study, with its cause
    assert "input 4:" in problems[0] and "IM0001: not a DICOM file" in problems[0]
    assert f"input {len(studies)}:" in problems[1] and "does not exist" in problems[1]
    serial = tmp_path / "serial"
    ser = run_module("tools.detect", *studies, "--run", run_dir, "--out", serial, "--quiet")
    assert ser.returncode == 1
    mine, theirs = read_csv(out / "detections.csv"), read_csv(serial / "detections.csv")
    n_truth = len(json.loads((cohort[0] / "gen" / "truth.json").read_text())["sequences"])
    assert len(mine) == len(theirs) == COPIES * n_truth
    key = lambda r: (int(r["input"]), r["seq_id"])    # noqa: E731
    for a, b in zip(sorted(mine, key=key), sorted(theirs, key=key)):
        for col in ("input", "seq_id", "n_frames", "ed_0based", "es_0based", "ed_instance",
                    "es_instance", "slice"):
            assert a[col] == b[col], col
    curves_a = {key(r): r["curve_steps"] for r in json.loads((out / "detections.json")
                                                              .read_text())["sequences"]}
    curves_b = {key(r): r["curve_steps"] for r in json.loads((serial / "detections.json")
                                                              .read_text())["sequences"]}
    for k, curve in curves_a.items():
        np.testing.assert_allclose(curve, curves_b[k], atol=2e-5)
    merged = json.loads((out / "detections.json").read_text())
    assert [s["status"] for s in merged["studies"]].count("failed") == 2
    assert merged["n_problems"] == 3                    # corrupt file + no images; missing path
    assert all("/" not in p for s in merged["studies"] for p in s["problems"])   # no paths


def test_outputs_name_no_path(reference, cohort):
    out, _ = reference
    root, _ = cohort
    for path in out.rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert str(root) not in text and "case00" not in text and "copy0" not in text, path


def start_scheduler(folder: Path):
    """A real `dask scheduler` process on a free port; returns (process, address)."""
    info = folder / "scheduler.json"
    proc = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--port", "0",
                             "--no-dashboard", "--scheduler-file", str(info)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = json.loads(wait_for(lambda: info.is_file() and info.read_text(), 60))["address"]
    return proc, address


def start_worker(address: str):
    """A real `dask worker` process without a nanny: a SIGKILL loses the worker for good."""
    return subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address,
                             "--nthreads", "1", "--no-nanny", "--no-dashboard"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for(condition, timeout: float):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise TimeoutError("condition not met")


def n_results(out: Path) -> int:
    folder = out / "studies"
    return len(list(folder.glob("*.json"))) if folder.is_dir() else 0


def snapshot(out: Path) -> dict:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (out / "studies").glob("*.json")}


def start_cohort(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "tools.cohort", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def assert_same_outputs(out: Path, reference: Path):
    for name in OUTPUTS:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name


def assert_resumed(res, before: dict, out: Path, n_studies: int):
    assert res.returncode == 1, res.stderr
    assert f"{n_studies} studies: {len(before)} done before, {n_studies - len(before)} run now" \
        in res.stdout
    after = snapshot(out)
    assert {k: after[k] for k in before} == before       # nothing done was done again


def kill(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def test_sigkill_of_a_worker_then_of_the_scheduler(reference, cohort, run_dir, tmp_path):
    """External cluster: a worker SIGKILLed mid-run (Dask runs its study elsewhere), then the
    scheduler SIGKILLed mid-run (the command stops, exit 3), then the same command on a new
    scheduler finishes the rest; the merged outputs equal the uninterrupted run's."""
    ref_out, _ = reference
    _, studies = cohort
    procs = []
    try:
        scheduler, address = start_scheduler(tmp_path)
        workers = [start_worker(address) for _ in range(2)]
        procs += [scheduler, *workers]
        out = tmp_path / "a"
        run = start_cohort(cohort_args(cohort, run_dir, out, "--scheduler", address))
        procs.append(run)
        wait_for(lambda: n_results(out) >= 1 or run.poll() is not None, 120)
        kill(workers[0])
        stdout, stderr = run.communicate(timeout=300)
        assert run.returncode == 1, stderr
        assert "Traceback" not in stderr
        assert_same_outputs(out, ref_out)

        workers.append(start_worker(address))          # two workers again
        procs.append(workers[-1])
        out = tmp_path / "b"
        args = cohort_args(cohort, run_dir, out, "--scheduler", address)
        run = start_cohort(args)
        procs.append(run)
        wait_for(lambda: n_results(out) >= 1 or run.poll() is not None, 120)
        kill(scheduler)
        stdout, stderr = run.communicate(timeout=300)
        assert run.returncode == 3, stderr
        assert "rerun the same command" in stderr and "Traceback" not in stderr
        before = snapshot(out)
        assert 0 < len(before) < len(studies)
        assert not (out / "detections.csv").exists()
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["n_done"] == len(before) and manifest["n_missing"] == len(studies) - len(before)

        for w in workers:
            kill(w)
        (tmp_path / "again").mkdir()
        scheduler, address = start_scheduler(tmp_path / "again")
        procs += [scheduler, start_worker(address)]
        res = run_module("tools.cohort", *cohort_args(cohort, run_dir, out, "--scheduler", address))
        assert_resumed(res, before, out, len(studies))
        assert_same_outputs(out, ref_out)
    finally:
        for p in procs:
            kill(p)


def test_sigkill_of_the_command_and_its_local_cluster(reference, cohort, run_dir, tmp_path):
    """Default LocalCluster: the command (client and scheduler in one process) SIGKILLed
    mid-run; the same command again finishes only what is missing."""
    ref_out, _ = reference
    _, studies = cohort
    out = tmp_path / "out"
    args = cohort_args(cohort, run_dir, out, "--workers", "2")
    run = start_cohort(args, start_new_session=True)
    try:
        wait_for(lambda: n_results(out) >= 1 or run.poll() is not None, 120)
        run.send_signal(signal.SIGKILL)                     # the scheduler dies with it
        run.wait(timeout=30)
    finally:
        try:
            os.killpg(run.pid, signal.SIGKILL)              # its orphaned worker processes
        except ProcessLookupError:
            pass
    before = snapshot(out)
    assert 0 < len(before) < len(studies)
    res = run_module("tools.cohort", *args)
    assert_resumed(res, before, out, len(studies))
    assert_same_outputs(out, ref_out)


def test_other_settings_in_out_are_refused(reference, cohort, run_dir):
    out, _ = reference
    res = run_module("tools.cohort", *cohort_args(cohort, run_dir, out, "--decoder", "extrema"))
    assert res.returncode == 2 and "other decoder" in res.stderr
    res = run_module("tools.cohort", *cohort_args(cohort, run_dir, out))   # same: nothing to do
    assert res.returncode == 1 and "0 run now" in res.stdout


def test_fixed_mm_model_gets_the_lv_crops_detect_finds(cohort, tmp_path):
    """A model trained on fixed-mm LV crops: every cohort worker finds each slice's crop as
    tools.detect does (per patient stack), feeds the net those frames and writes the crop."""
    import dataclasses
    from trivial_net import CONTRACT
    physical = dataclasses.replace(CONTRACT, mm_per_px=128.0 / CONTRACT.stored_size, crop="lv")
    run = write_run_dir(tmp_path / "run", contract=physical)
    root, _ = cohort
    studies = [root / "copy0" / f"case{i:03d}" for i in (1, 2)]
    out, serial = tmp_path / "cohort", tmp_path / "serial"
    res = run_module("tools.cohort", *studies, "--run", run, "--out", out, "--workers", "1",
                     "--quiet")
    assert res.returncode == 0, res.stderr
    ser = run_module("tools.detect", *studies, "--run", run, "--out", serial, "--quiet")
    assert ser.returncode == 0, ser.stderr
    mine = json.loads((out / "detections.json").read_text())["sequences"]
    theirs = json.loads((serial / "detections.json").read_text())["sequences"]
    assert len(mine) == len(theirs) > 0
    key = lambda r: (int(r["input"]), r["seq_id"])    # noqa: E731
    for a, b in zip(sorted(mine, key=key), sorted(theirs, key=key)):
        assert a["crop"] == b["crop"] and a["crop"]["side_mm"] == 128.0
        assert (a["ed_0based"], a["es_0based"]) == (b["ed_0based"], b["es_0based"])
        np.testing.assert_allclose(a["curve_steps"], b["curve_steps"], atol=2e-5)


def test_local_cluster_workers_get_the_allocator_settings(monkeypatch):
    """start_client's LocalCluster workers start with WORKER_MALLOC in their environment (set
    before the process starts, where glibc reads it)."""
    from tempregnet.cohort import WORKER_MALLOC, start_client
    for key in WORKER_MALLOC:
        monkeypatch.delenv(key, raising=False)
    client = start_client(None, 1, 1)
    try:
        found = client.run(lambda: {k: os.environ.get(k) for k in WORKER_MALLOC})
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()
    assert list(found.values()) == [{k: str(v) for k, v in WORKER_MALLOC.items()}]
