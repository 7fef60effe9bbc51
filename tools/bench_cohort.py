"""Cohort throughput: studies/s and sequences/s on a LocalCluster of 1 and 2 workers, and where
the time goes (reading DICOM, preprocessing, forward pass, decoding).

    python -m tools.bench_cohort                        # 8 synthetic DICOM patients, shipped model
    python -m tools.bench_cohort --cohort data/demo/cohort-p24-s0 --workers 1 2 4

Each run starts from an empty output folder; the clock starts once the workers hold the net
(cluster start-up and net loading are printed apart) and stops when the last study is written.
Stage times are summed over the studies inside the workers: their total over the wall time is
how busy the workers were.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tempregnet import cohort as engine
from tempregnet.decoding import VIEWS, decoding_of
from tempregnet.inference import quiet_caffe
from tempregnet.model_spec import load_spec, model_spec


def bench(studies, spec, decoding, workers: int, out: Path) -> dict:
    """One timed cohort run on a new LocalCluster of `workers` single-thread processes."""
    options = engine.Options(spec, decoding=decoding)
    description = load_spec(spec).description
    tic = time.perf_counter()
    client = engine.start_client(None, workers, 1)
    try:
        client.register_plugin(engine.NetPlugin(spec, engine.keys.fingerprint()),
                               name=engine.PLUGIN_NAME)
        startup = time.perf_counter() - tic
        counts = engine.run_cohort(client, studies, options, out, description, progress=False)
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()
    results = counts["results"].values()
    stages = {s: sum(r["times_s"][s] for r in results) for s in engine.STAGES}
    return {"workers": workers, "startup_s": startup, "seconds": counts["seconds"],
            "studies": counts["n_studies"], "sequences": counts["n_sequences"],
            "problems": counts["n_problems"], "stages": stages}


def _commit() -> str:
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                              text=True, cwd=Path(__file__).parent, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.bench_cohort",
                                description=__doc__.splitlines()[0])
    p.add_argument("--cohort", help="a DICOM cohort folder of case*/ studies (default: generate)")
    p.add_argument("--patients", type=int, default=8, help="synthetic patients to generate")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--run", help="training run or model folder (default: the shipped model)")
    p.add_argument("--roi", type=float, default=None)
    p.add_argument("--views", choices=VIEWS, default=None,
                   help="one forward pass per sequence, or the mean over the test-time views "
                        "(default: the model's recipe's decoding, as tools.cohort runs it)")
    args = p.parse_args(argv)
    quiet_caffe()
    spec = model_spec(run=args.run, roi=args.roi)
    decoding = decoding_of(load_spec(spec).description, views=args.views)
    with tempfile.TemporaryDirectory(prefix="bench-cohort-") as tmp:
        cohort = Path(args.cohort) if args.cohort else Path(tmp) / "cohort"
        if not args.cohort:
            from data_prep.synthetic import write_dicom_cohort
            print(f"writing {args.patients} synthetic DICOM patients ...", flush=True)
            write_dicom_cohort(cohort, args.patients, seed=0)
        studies = engine.make_studies(sorted(str(c) for c in cohort.glob("case*") if c.is_dir()))
        files = sum(1 for f in cohort.rglob("*") if f.is_file())
        print(f"cohort: {len(studies)} studies, {files} files; model: {Path(spec.folder or spec.weights).name}; "
              f"decoding {decoding.describe()}; commit {_commit()}; "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
        rows = [bench(studies, spec, decoding, w, Path(tmp) / f"out-{w}") for w in args.workers]
    print("\n| workers | studies/s | sequences/s | wall s | start-up s | read | preprocess "
          "| forward | decode | workers busy |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        busy = sum(r["stages"].values())
        share = {s: 100 * v / busy if busy else 0.0 for s, v in r["stages"].items()}
        print(f"| {r['workers']} | {r['studies'] / r['seconds']:.2f} | "
              f"{r['sequences'] / r['seconds']:.1f} | {r['seconds']:.1f} | {r['startup_s']:.1f} | "
              + " | ".join(f"{share[s]:.0f} %" for s in engine.STAGES)
              + f" | {100 * busy / (r['seconds'] * r['workers']):.0f} % |")
    print("\nstage shares: of the time the workers spent inside studies; read = scanning and "
          "decoding the DICOM files; workers busy = stage time / (wall time x workers)")
    if any(r["problems"] for r in rows):
        print("warning: some studies had problems", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
