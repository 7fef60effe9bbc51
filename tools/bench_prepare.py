"""Benchmark DICOM -> HDF5 preparation: N synthetic 256 x 256, 20-frame series, sequences per second.

    python tools/bench_prepare.py --sequences 200 [--workers 2] [--keep DIR]

Only the `data_prep.prepare` run is timed (scan, decode, preprocess, HDF5, splits), not the writing
of the DICOM files. The figure depends on the machine's load: rerun it on an idle machine.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from data_prep import prepare
from data_prep.synthetic import write_dicom_series
from models.config import N_STEPS

SIDE = 256                       # the paper's frame size
SLICES_PER_PATIENT = 10


def write_cohort(folder: Path, n_sequences: int, seed: int) -> None:
    """n_sequences single-slice series (a pulsing disc on noise) with random file names."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIDE, :SIDE]
    r2 = (yy - SIDE / 2) ** 2 + (xx - SIDE / 2) ** 2
    for s in range(n_sequences):
        patient, slice_index = divmod(s, SLICES_PER_PATIENT)
        radius = 30 + 10 * np.cos(2 * np.pi * np.arange(N_STEPS) / N_STEPS)
        frames = [200.0 * (r2 <= r * r) + rng.normal(100, 20, (SIDE, SIDE)) for r in radius]
        write_dicom_series(folder / f"p{patient:03d}", frames,
                           series_uid=f"1.2.826.0.1.3680043.10.511.{seed}.{s + 1}",
                           slice_location=float(slice_index * 8), patient_id=f"BENCH{patient:04d}",
                           rng=rng)


def time_prepare(sequences: int, workers: int, seed: int = 0, work: Path | None = None) -> float:
    """Seconds of one `data_prep.prepare` run over `sequences` synthetic series (written first, untimed)."""
    folder = work or Path(tempfile.mkdtemp(prefix="bench_prepare."))
    try:
        dicom = folder / "dicom"
        if not dicom.exists():
            tic = time.perf_counter()
            write_cohort(dicom, sequences, seed)
            print(f"wrote {sequences} x {N_STEPS} DICOM files in {time.perf_counter() - tic:.1f} s")
        tic = time.perf_counter()
        code = prepare.main(["--source", "dicom", str(dicom), str(folder / "prepared"), "--force",
                             "--folds", "2", "--workers", str(workers)])
        seconds = time.perf_counter() - tic
        if code:
            raise RuntimeError(f"data_prep.prepare failed (exit {code})")
        return seconds
    finally:
        if work is None:
            shutil.rmtree(folder, ignore_errors=True)


def main(argv=None) -> int:
    """Write the cohort, time one prepare run, print sequences/s."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sequences", type=int, default=200)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temp folder)")
    args = p.parse_args(argv)
    seconds = time_prepare(args.sequences, args.workers, args.seed, args.keep)
    rate = args.sequences / seconds
    print(f"DICOM -> HDF5: {args.sequences} sequences of {N_STEPS} x {SIDE} x {SIDE} in "
          f"{seconds:.2f} s = {rate:.1f} sequences/s ({args.workers} workers, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
