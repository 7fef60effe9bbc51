"""The Caffe build itself: one solver file for CPU and GPU builds, and the GPU build's own checks.

`make test` runs against the CPU build (the GPU checks skip); `make test GPU=1` links the CUDA
build into the venv and runs the same suite against it in CPU mode, plus the GPU checks below.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

caffe = pytest.importorskip("caffe", reason="pycaffe is not built: run `make caffe`")
from caffe.proto import caffe_pb2  # noqa: E402

from test_caffe import half_square_net, layer_module  # noqa: E402,F401  (layer_module: a fixture)

CAFFE_BIN = Path(sys.prefix) / "bin" / "caffe"
FALLBACK_WARNING = "solver_mode: GPU, but this Caffe is CPU-only: training on the CPU"
VERBOSE = dict(GLOG_minloglevel="0", GLOG_logtostderr="1")   # losses are INFO lines


def linked_prefix() -> Path:
    """The Caffe install that `make caffe` linked into this venv (tools/caffe_link.py)."""
    return Path((Path(sys.prefix) / "caffe_prefix").read_text().strip())


def linked_build_is_gpu() -> bool:
    """The build's .complete line records its GPU switch (tools/caffe/build_caffe.sh)."""
    return " gpu1" in (linked_prefix() / ".complete").read_text()


cpu_build_only = pytest.mark.skipif(linked_build_is_gpu(), reason="the CPU fallback is for "
                                    "CPU-only builds; this venv links the GPU build")
gpu_build_only = pytest.mark.skipif(not linked_build_is_gpu(), reason="this venv links the CPU "
                                    "build: run `make test GPU=1` for the GPU build's checks")


@cpu_build_only
def test_gpu_solver_trains_on_cpu_only_build_with_one_warning(layer_module, tmp_path):  # noqa: F811
    net = tmp_path / "net.prototxt"
    net.write_text(str(half_square_net(value=1.5, scale=4.0)))
    solver = caffe_pb2.SolverParameter(net=str(net), base_lr=0.0, lr_policy="fixed", max_iter=1,
                                       display=1, snapshot_after_train=False,
                                       solver_mode=caffe_pb2.SolverParameter.GPU)
    (tmp_path / "solver.prototxt").write_text(str(solver))
    run = subprocess.run([str(CAFFE_BIN), "train", "-solver", str(tmp_path / "solver.prototxt")],
                         capture_output=True, text=True, timeout=120, env=dict(os.environ, **VERBOSE))
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stderr.count(FALLBACK_WARNING) == 1
    assert [ln for ln in run.stderr.splitlines() if ln.startswith("W")] == \
        [ln for ln in run.stderr.splitlines() if FALLBACK_WARNING in ln]     # no other warning
    losses = [float(v) for v in re.findall(r"Iteration 0.*loss = ([0-9.eE+-]+)", run.stderr)]
    assert losses and losses[0] == pytest.approx(4.0 * 0.5 * 6 * 1.5 ** 2 / 2)


@cpu_build_only
def test_explicit_gpu_flag_still_refused_on_cpu_only_build(layer_module, tmp_path):  # noqa: F811
    net = tmp_path / "net.prototxt"
    net.write_text(str(half_square_net(value=1.0, scale=1.0)))
    solver = caffe_pb2.SolverParameter(net=str(net), base_lr=0.0, lr_policy="fixed", max_iter=1)
    (tmp_path / "solver.prototxt").write_text(str(solver))
    run = subprocess.run([str(CAFFE_BIN), "train", "-solver", str(tmp_path / "solver.prototxt"),
                          "-gpu", "0"], capture_output=True, text=True, timeout=120)
    assert run.returncode != 0                      # asked for on the command line: not overridden
    assert "CPU-only" in run.stderr


def test_device_query_without_gpu_is_one_clear_line():
    run = subprocess.run([str(CAFFE_BIN), "device_query"], capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, GLOG_logtostderr="1"))
    if run.returncode == 0:
        pytest.skip("a CUDA device is usable here")
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, run.stderr
    expected = "no usable CUDA device" if linked_build_is_gpu() else "CPU-only build"
    assert expected in lines[0]
    assert "Check failed" not in run.stderr and "stack trace" not in run.stderr


@gpu_build_only
@pytest.mark.parametrize("part", ["bin/caffe", "lib/libcaffe.so", "python/caffe/_caffe.so"])
def test_gpu_build_libraries_all_resolve(part):
    path = linked_prefix() / part
    ldd = subprocess.run(["ldd", str(path)], capture_output=True, text=True, check=True).stdout
    assert "not found" not in ldd, ldd
    for lib in ("libcudart.so.13", "libcublas.so.13", "libcurand.so.10"):
        assert lib in ldd, f"{path} does not link {lib}:\n{ldd}"


@pytest.fixture(scope="module")
def repo_like_root(tmp_path_factory):
    """A folder laid out like the repository root for `caffe train`: the committed prototxt/ and
    the demo recipe's data/prepared/demo, written by the project's own generator and `prepare`."""
    from data_prep import prepare, synthetic
    root = tmp_path_factory.mktemp("root")
    (root / "prototxt").symlink_to(Path(__file__).resolve().parent.parent / "prototxt")
    cohort = root / "cohort"
    assert synthetic.main([str(cohort), "--patients", "4", "--seed", "0", "--format", "dicom"]) == 0
    assert prepare.main(["--recipe", "demo", str(cohort), str(root / "data" / "prepared" / "demo"),
                         "--workers", "1"]) == 0
    return root


def caffe_train_until(root: Path, solver: str, iteration: int, timeout: float = 300) -> tuple:
    """Run the real `caffe train -solver SOLVER` in root; stop once `iteration` has logged a loss."""
    proc = subprocess.Popen([str(CAFFE_BIN), "train", "-solver", solver], cwd=root, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=dict(os.environ, **VERBOSE))
    lines, losses = [], []
    try:
        for line in proc.stderr:
            lines.append(line)
            m = re.search(r"Iteration (\d+).*?, loss = ([0-9.eE+-]+)", line)
            if m:
                losses.append((int(m.group(1)), float(m.group(2))))
                if losses[-1][0] >= iteration:
                    break
    finally:
        proc.kill()
        proc.wait(timeout)
    return "".join(lines), losses, proc.returncode


@cpu_build_only
def test_committed_solver_runs_unchanged_under_plain_caffe_train(repo_like_root):
    solver = "prototxt/demo/tempreg_solver.prototxt"
    assert "solver_mode: GPU" in (repo_like_root / solver).read_text()
    log, losses, _ = caffe_train_until(repo_like_root, solver, iteration=20)
    assert log.count(FALLBACK_WARNING) == 1, log[-3000:]
    assert "Use CPU." in log
    assert [i for i, _ in losses][:3] == [0, 10, 20], log[-3000:]
    assert all(np.isfinite(v) and v > 0 for _, v in losses)


@pytest.fixture(scope="module")
def paper_zf_cpu_root(tmp_path_factory):
    """A repository-like root with recipe paper_zf_cpu's data: a small synthetic cohort in ACDC's
    layout (NIfTI) prepared by `prepare --recipe paper_zf_cpu`, where its committed nets read it."""
    from data_prep import prepare, synthetic
    root = tmp_path_factory.mktemp("root_zf")
    (root / "prototxt").symlink_to(Path(__file__).resolve().parent.parent / "prototxt")
    cohort = root / "cohort"
    assert synthetic.main([str(cohort), "--patients", "4", "--seed", "0", "--format", "nifti"]) == 0
    assert prepare.main(["--recipe", "paper_zf_cpu", str(cohort),
                         str(root / "data" / "prepared" / "paper_zf_cpu"), "--workers", "1"]) == 0
    return root


@pytest.mark.slow
@cpu_build_only
def test_paper_zf_cpu_solver_runs_under_plain_caffe_train(paper_zf_cpu_root):
    """The paper's ZF net as recipe paper_zf_cpu trains it (Adam, from scratch), from the committed
    solver, unchanged, with the real binary: 20 iterations of the 192 px ZF + LSTM."""
    solver = "prototxt/paper_zf_cpu/tempreg_solver.prototxt"
    text = (paper_zf_cpu_root / solver).read_text()
    assert 'type: "Adam"' in text and "solver_mode: GPU" in text
    log, losses, _ = caffe_train_until(paper_zf_cpu_root, solver, iteration=20, timeout=600)
    assert log.count(FALLBACK_WARNING) == 1, log[-3000:]
    assert "fc6" in log and "lstm1" in log
    assert [i for i, _ in losses][:2] == [0, 20], log[-3000:]
    assert all(np.isfinite(v) and v > 0 for _, v in losses)
