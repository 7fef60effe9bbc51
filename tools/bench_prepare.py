"""Benchmark DICOM -> HDF5 preparation: N synthetic 256 x 256, 20-frame series, sequences per second.

    python tools/bench_prepare.py --sequences 200 [--workers 2] [--keep DIR]

Only the `data_prep.prepare` run is timed (scan, decode, preprocess, HDF5, splits), not the writing
of the DICOM files. The figure depends on the machine's load: rerun it on an idle machine.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from models.config import N_STEPS
from tempregnet.benchmark import SIDE, time_prepare

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
