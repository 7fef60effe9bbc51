"""`make demo`: synthetic cohort -> prepared HDF5 -> Table 1 (4-fold CV) -> results/.

The embedded default the project runs with no data at hand. Generated data and finished training
runs are reused when their parameters match (they are keyed by them); results always go to a new
`results/demo-<time>/`, with `results/latest` pointing at it, so nothing is overwritten.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from data_prep import prepare, synthetic
from models.config import get_config
from tools import table1

# A CPU-sized run of the small configuration (not the paper's model: see models/config.py).
DEFAULTS = dict(patients=24, seed=0, config="small", iters=3000, roi=0.5)


def banner(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.demo", description=__doc__.splitlines()[0])
    p.add_argument("--patients", type=int, default=DEFAULTS["patients"], help="synthetic patients")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    p.add_argument("--config", default=DEFAULTS["config"], help="net config (models/config.py)")
    p.add_argument("--iters", type=int, default=DEFAULTS["iters"], help="iterations per training run")
    p.add_argument("--roi", type=float, default=DEFAULTS["roi"],
                   help="central field-of-view fraction kept (the phantom heart is ~1/5 of the "
                        "frame; at the small net's 64 px the whole frame would show it a few px wide)")
    p.add_argument("--work", type=Path, default=Path("data/demo"), help="generated data")
    p.add_argument("--runs", type=Path, default=Path("runs/demo"), help="training runs")
    p.add_argument("--results", type=Path, default=Path("results"))
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cfg = get_config(args.config)
    started = time.time()
    key = f"p{args.patients}-s{args.seed}"
    cohort = args.work / f"cohort-{key}"
    prepared = args.work / f"prepared-{key}-{cfg.stored_size}px-roi{args.roi:g}"

    banner(f"1/3 synthetic cine MRI cohort: {args.patients} patients (seed {args.seed}) -> {cohort}")
    if (cohort / "truth.json").is_file():
        print("reusing the cohort already there")
    else:
        code = synthetic.main([str(cohort), "--patients", str(args.patients),
                               "--seed", str(args.seed), "--format", "dicom"])
        if code:
            return code

    banner(f"2/3 prepare DICOM -> HDF5 at {cfg.stored_size} px, central {args.roi:g} of the "
           f"field of view -> {prepared}")
    if (prepared / "sequences.h5").is_file():
        print("reusing the prepared data already there")
    else:
        code = prepare.main(["--source", "dicom", str(cohort), str(prepared),
                             "--size", str(cfg.stored_size), "--roi", str(args.roi),
                             "--seed", str(args.seed)])
        if code:
            return code

    out = args.results / time.strftime("demo-%Y%m%d-%H%M%S")
    banner(f"3/3 Table 1: train cnn_reg, tempreg_notsc, tempreg on 4 folds ({args.config} config, "
           f"{args.iters} iterations each), baselines, evaluation -> {out}")
    code = table1.main(["--data", str(prepared), "--config", args.config,
                        "--iters", str(args.iters), "--runs", str(args.runs),
                        "--seed", str(args.seed), "--out", str(out)])
    if code:
        return code
    latest = args.results / "latest"
    if latest.is_symlink() or not latest.exists():
        latest.unlink(missing_ok=True)
        latest.symlink_to(out.name)

    banner("Table 1 on the synthetic cohort")
    print((out / "table1.md").read_text())
    print(f"results: {out}/ (table1.md, table1.json, table1_per_sequence.csv, test_curves.png, "
          f"training_curves/); also {latest}")
    print(f"demo took {(time.time() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
