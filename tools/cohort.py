"""Detect ED/ES in a cohort on a Dask cluster; a rerun after a kill finishes only what is missing.

    python -m tools.cohort STUDY [STUDY ...] --out cohort-out/            # LocalCluster, 2 workers
    python -m tools.cohort --list studies.csv --out cohort-out/ --workers 8
    python -m tools.cohort --list studies.csv --out cohort-out/ --scheduler tcp://HOST:8786

A study is one input as tools.detect takes it (a DICOM folder, a NIfTI file, an ACDC patient
folder); --list reads a CSV with a 'path' column or one path per line. The net options are
tools.detect's (the shipped model by default). Writes <out>/studies/<key>.json as each study
finishes, <out>/manifest.json, and when every study is done <out>/detections.csv and .json;
--report adds plots/<study>/<sequence>.png and report.html, the review page (least confident
first). Every detection has a confidence in [0, 1] (tempregnet.labels.decode_detail).
Exit status: 0 all studies clean; 1 some study had a problem (each printed on one line, the
cohort went on); 2 nothing ran (bad options, a model that does not load, another run in --out);
3 the scheduler was lost (rerun the same command to finish).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_prep.errors import InputError

DEFAULT_WORKERS = 2


def build_parser() -> argparse.ArgumentParser:
    from tempregnet.model_spec import add_net_arguments
    p = argparse.ArgumentParser(prog="python -m tools.cohort", description=__doc__.splitlines()[0])
    p.add_argument("inputs", nargs="*", help="studies: DICOM folders, NIfTI files, ACDC patients")
    p.add_argument("--list", help="file of studies: CSV with a 'path' column, or a path per line")
    p.add_argument("--source", choices=("auto", "dicom", "acdc", "nifti", "sunnybrook"),
                   default="auto", help="input type (default: guessed per study)")
    add_net_arguments(p)
    p.add_argument("--out", required=True, help="output folder (reused by a rerun)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--scheduler", help="address of a running Dask scheduler, e.g. "
                                           "tcp://HOST:8786 (default: a LocalCluster here)")
    where.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                       help=f"LocalCluster worker processes (default {DEFAULT_WORKERS})")
    p.add_argument("--threads-per-worker", type=int, default=1,
                   help="LocalCluster threads per worker (the net's forward passes take turns)")
    p.add_argument("--retry-failed", action="store_true",
                   help="run again the studies that had problems (default: they count as done)")
    p.add_argument("--report", action="store_true",
                   help="plot every sequence (on the workers) and write report.html, the review "
                        "page: every sequence least confident first (tempregnet.report)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    from tempregnet import cohort as engine
    from tempregnet.inference import quiet_caffe
    from tempregnet.model_spec import decoding_from_args, load_spec, prior_of, spec_from_args
    quiet_caffe()
    args = build_parser().parse_args(argv)
    try:
        paths = list(args.inputs) + (engine.read_list(args.list) if args.list else [])
        if not paths:
            raise engine.CohortError("no studies: give paths or --list FILE")
        if args.workers < 1 or args.threads_per_worker < 1:
            raise ValueError("--workers and --threads-per-worker must be >= 1")
        studies = engine.make_studies(paths)
        spec = spec_from_args(args)
        loaded = load_spec(spec)                            # fails here, before any cluster
        description = loaded.description
        options = engine.Options(spec, args.source, decoding_from_args(loaded, args), args.stack,
                                 args.input_mm_per_px, args.report)
        prior_of(loaded, options.decoding.es_prior)         # refused here if the model cannot
        del loaded
        engine.check_out(Path(args.out), engine.settings_of(options, studies, description))
    except (engine.CohortError, InputError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    client = None
    try:
        client = engine.start_client(args.scheduler, args.workers, args.threads_per_worker)
        counts = engine.run_cohort(client, studies, options, args.out, description,
                                   retry_failed=args.retry_failed, progress=not args.quiet)
    except (engine.CohortError, InputError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        if client is not None:
            _close(client)
    print(f"{counts['n_studies']} studies: {counts['skipped_done']} done before, "
          f"{counts['ran']} run now in {counts['seconds']:.1f} s, {counts['missing']} missing")
    if counts["missing"]:
        print("the scheduler was lost: rerun the same command to finish the missing studies",
              file=sys.stderr)
        return 3
    print(f"{counts['n_sequences']} sequences; {counts['n_problems']} problems in "
          f"{counts['n_failed_studies']} studies; wrote {args.out}/detections.csv and .json"
          + (f" and {args.out}/report.html" if args.report else ""))
    return 1 if counts["n_problems"] else 0


def _close(client) -> None:
    """Close the client and, for a LocalCluster, the cluster it started."""
    cluster = client.cluster
    try:
        client.close(timeout=10)
    finally:
        if cluster is not None:
            cluster.close(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
