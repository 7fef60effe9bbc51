"""Caffe's OpenBLAS (tools/caffe/build_openblas.sh): libcaffe loads our build, whose kernels are the
widest this CPU has whatever OPENBLAS_CORETYPE says, and its sgemm agrees with numpy in float64.

Each probe runs in a fresh process, since OpenBLAS chooses its kernels when it loads."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("caffe", reason="pycaffe is not built: run `make caffe`")

from tempregnet import blas  # noqa: E402

PROBE = """
import json, sys
import numpy as np
import caffe
from tempregnet import blas
library = blas.mapped(blas.CAFFE_BLAS)
info = blas.describe(library)
info["path"] = str(library)
# sgemm of Caffe's OpenBLAS against numpy in float64: shapes past the kernels' blocking, odd edges
rng = np.random.default_rng(0)
worst = 0.0
for m, k, n in ((1, 1, 1), (7, 300, 13), (96, 1152, 144), (257, 513, 129)):
    a = rng.normal(size=(m, k)).astype(np.float32)
    b = rng.normal(size=(k, n)).astype(np.float32)
    c = np.full((m, n), np.nan, np.float32)
    blas.sgemm(library)(a, b, c)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    scale = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)
    worst = max(worst, float(np.max(np.abs(c - exact) / scale)))
info["sgemm_error"] = worst
print(json.dumps(info))
"""


def probe(**env_changes) -> dict:
    """Caffe's BLAS as a fresh pycaffe process sees it; env_changes: None removes a variable."""
    env = dict(os.environ, GLOG_minloglevel="2")
    for key, value in env_changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    run = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).resolve().parent.parent)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def unset():
    return probe(OPENBLAS_CORETYPE=None)


def caffe_prefix() -> Path:
    return Path((Path(sys.prefix) / "caffe_prefix").read_text().strip())


def test_libcaffe_loads_our_openblas_build(unset):
    """The library in the process is the one libcaffe's RUNPATH names: the cached build, not the system's."""
    ldd = subprocess.run(["ldd", str(caffe_prefix() / "lib" / "libcaffe.so")], capture_output=True,
                         text=True, check=True).stdout
    linked = [line.split("=>")[1].split()[0] for line in ldd.splitlines() if blas.CAFFE_BLAS in line]
    assert [Path(p).resolve() for p in linked] == [Path(unset["path"]).resolve()], ldd
    install = Path(unset["path"]).resolve().parent.parent
    assert install.name.startswith("openblas-") and (install / ".complete").is_file()
    assert unset["config"].startswith("OpenBLAS ") and "DYNAMIC_ARCH" in unset["config"]


@pytest.mark.parametrize("coretype", ["Prescott", "Haswell"])
def test_kernels_do_not_depend_on_openblas_coretype(unset, coretype):
    """Prescott is built in (the fallback of every DYNAMIC_LIST build): a library that obeyed the
    variable would switch to it. (Not SkylakeX: numpy's OpenBLAS, loaded in the same process,
    obeys it and dies of an illegal instruction on a CPU without AVX-512.)"""
    forced = probe(OPENBLAS_CORETYPE=coretype)
    assert forced["kernel"] == unset["kernel"]
    assert forced["path"] == unset["path"]


def cpu_flags() -> set:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def test_kernels_are_the_widest_this_cpu_has(unset):
    """From the kernel's own flags (/proc/cpuinfo), independently of OpenBLAS's cpuid detection:
    AVX-512 (F, DQ, BW, VL) -> SkylakeX or Cooperlake kernels; AVX2 + FMA -> Haswell or Zen."""
    flags = cpu_flags()
    if {"avx512f", "avx512dq", "avx512bw", "avx512vl"} <= flags:
        assert unset["kernel"] in ("SkylakeX", "Cooperlake"), unset
    elif {"avx2", "fma"} <= flags:
        assert unset["kernel"] in ("Haswell", "Zen"), unset
    else:
        pytest.skip("a CPU without AVX2: no claim about its kernels")


@pytest.mark.parametrize("coretype", [None, "Haswell"])
def test_sgemm_agrees_with_numpy_float64(unset, coretype):
    result = unset if coretype is None else probe(OPENBLAS_CORETYPE=coretype)
    # float32 sums of up to 1,152 products: error well under 1e-5 of the sum of |terms|
    assert result["sgemm_error"] < 1e-5, result
    assert np.isfinite(result["sgemm_error"])
