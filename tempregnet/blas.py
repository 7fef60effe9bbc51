"""Which BLAS this process has loaded, its version and the kernels it runs (the bench and the tests).

Caffe links our own OpenBLAS build (tools/caffe/build_openblas.sh, libopenblas_tempreg); numpy
brings its own (libscipy_openblas). Each is found among the libraries this process has mapped, so
what is described is the library really in use, not whichever one a fresh dlopen would find.
"""
from __future__ import annotations

import ctypes
from pathlib import Path

CAFFE_BLAS = "libopenblas"          # libopenblas_tempreg.so.0, what libcaffe links
NUMPY_BLAS = "libscipy_openblas"    # numpy's wheel's own OpenBLAS


def mapped(prefix: str) -> Path | None:
    """The shared library this process has mapped whose file name starts with prefix, if any."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and Path(fields[5]).name.startswith(prefix):
            return Path(fields[5])
    return None


def _function(dll, name: str):
    """OpenBLAS's function name, or its name in a scipy-openblas build (prefixed, 64-bit suffixed)."""
    for symbol in (name, f"scipy_{name}64_", f"scipy_{name}"):
        if hasattr(dll, symbol):
            return getattr(dll, symbol)
    raise AttributeError(f"no {name} in {dll._name}")


def describe(path: Path) -> dict:
    """library (file name), config (OpenBLAS's own string: version, build options, core) and kernel."""
    dll = ctypes.CDLL(str(path))          # already mapped: the same handle, nothing loaded anew
    out = dict(library=path.name)
    for key, name in (("config", "openblas_get_config"), ("kernel", "openblas_get_corename")):
        function = _function(dll, name)
        function.restype = ctypes.c_char_p
        out[key] = " ".join(function().decode().split())
    return out


def summary(info: dict) -> str:
    """One line for a report: 'OpenBLAS 0.3.29 ... (libopenblas_tempreg.so.0), Zen kernels'."""
    return f"{info['config']} ({info['library']}), {info['kernel']} kernels"


def sgemm(path: Path):
    """cblas_sgemm of the library at path as f(a, b, c): c = a @ b for C-ordered float32 arrays."""
    dll = ctypes.CDLL(str(path))
    function = _function(dll, "cblas_sgemm")
    row_major, no_trans = 101, 111
    int_t = ctypes.c_int64 if function.__name__.endswith("64_") else ctypes.c_int
    pointer = ctypes.POINTER(ctypes.c_float)

    def run(a, b, c):
        m, k = a.shape
        n = b.shape[1]
        function(row_major, no_trans, no_trans, int_t(m), int_t(n), int_t(k), ctypes.c_float(1.0),
                 a.ctypes.data_as(pointer), int_t(k), b.ctypes.data_as(pointer), int_t(n),
                 ctypes.c_float(0.0), c.ctypes.data_as(pointer), int_t(n))
    return run
