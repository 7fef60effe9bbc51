"""sgemm rates of CBLAS libraries side by side, each in its own process (the BLAS candidates of
docs/caffe.md, "BLAS"): 4096^3 and the shapes of ZF's per-image convolution GEMMs, float32.

    python -m tools.bench_blas [--threads 2] [--repeats 5] LIBRARY...

LIBRARY: a path to a shared library with cblas_sgemm (an OpenBLAS, a BLIS), or `caffe` (the one
libcaffe loads) or `numpy` (numpy's own). Prints one line per library and shape: GFLOP/s (best of
repeats, after a warm-up), the library's version and the kernels it reports. Nothing asserted.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

# (M, K, N) of C = A B: 4096^3, and ZF at 192 px per image (conv1, conv2, conv3, conv4 forward:
# outputs x (channels x kernel area) x positions)
SHAPES = [(4096, 4096, 4096), (96, 147, 9216), (256, 2400, 576), (384, 2304, 144), (384, 3456, 144)]


def describe(path: Path) -> str:
    """Version and kernels, by whatever the library offers (OpenBLAS's config, BLIS's arch)."""
    from tempregnet import blas
    dll = ctypes.CDLL(str(path))
    try:
        return blas.summary(blas.describe(path))
    except AttributeError:
        pass
    if hasattr(dll, "bli_arch_query_id"):
        dll.bli_info_get_version_str.restype = ctypes.c_char_p
        dll.bli_arch_string.restype = ctypes.c_char_p
        arch = dll.bli_arch_string(dll.bli_arch_query_id()).decode()
        return f"BLIS {dll.bli_info_get_version_str().decode()} ({path.name}), {arch} kernels"
    return path.name


def worker(library: str, repeats: int) -> None:
    import numpy as np
    from tempregnet import blas
    from tempregnet.benchmark import best_time
    if library in ("caffe", "numpy"):
        if library == "caffe":
            import caffe  # noqa: F401  (libcaffe and the OpenBLAS it links)
        path = blas.mapped(blas.CAFFE_BLAS if library == "caffe" else blas.NUMPY_BLAS)
    else:
        path = Path(library)
        ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
    sgemm = blas.sgemm(path)
    rng = np.random.default_rng(0)
    rates = []
    for m, k, n in SHAPES:
        a, b = rng.random((m, k), np.float32), rng.random((k, n), np.float32)
        c = np.empty((m, n), np.float32)
        sgemm(a, b, c)
        assert np.allclose(c, a.astype(np.float64) @ b, rtol=1e-4), f"{library}: wrong sgemm result"
        rates.append(2.0 * m * k * n / best_time(lambda: sgemm(a, b, c), repeats) / 1e9)
    print(json.dumps(dict(rates=rates, blas=describe(path))))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("libraries", nargs="*")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker, args.repeats)
        return 0
    if not args.libraries:
        p.error("name at least one library")
    threads = str(args.threads)
    env = dict(os.environ, OPENBLAS_NUM_THREADS=threads, BLIS_NUM_THREADS=threads, OMP_NUM_THREADS=threads,
               GLOG_minloglevel="2")
    print(f"{args.threads} threads; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}; "
          f"load average {os.getloadavg()[0]:.2f}; GFLOP/s, best of {args.repeats}")
    print("| library | " + " | ".join("x".join(map(str, s)) for s in SHAPES) + " |")
    print("|---|" + "---:|" * len(SHAPES))
    for library in args.libraries:
        out = subprocess.run([sys.executable, "-m", "tools.bench_blas", "--worker", library, "--repeats",
                              str(args.repeats)], env=env, capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent.parent)
        if out.returncode:
            print(f"| {library}: failed (exit {out.returncode}): {out.stderr.strip()[-300:]} |")
            continue
        res = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {res['blas']} | " + " | ".join(f"{r:.0f}" for r in res["rates"]) + " |", flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
