"""Calibrate and check the pixel-size estimator (data_prep.pixel_size) on scans whose headers state one.

    python -m tools.calibrate_pixel_size ../shared/data/acdc [--source acdc] [--json out.json]

For every patient whose header states a pixel size, the estimator runs as if it did not (the LV
finder at the nominal size, the outer LV radius in pixels). OUTER_RADIUS_MM is the median over
patients of radius_px x header size; each patient's estimate is checked against its header with
that median taken over the other patients only (leave one patient out), for one pass (the
finder at the nominal size: what data_prep.pixel_size uses) and two (the finder again at the
first estimate, radius measured again; the second pass's leave-one-out uses the first pass's
leave-one-out estimate for its finder). The
constant reference beside it: every patient read at the median header size of the others.
Prints the table in docs/scale-and-crop.md; no patient identifiers are printed (rows are numbered).
"""
from __future__ import annotations

import argparse
import sys
import time

from data_prep import pixel_size as ps
from data_prep.readers import SOURCES
from tempregnet.outputs import write_json_atomic

def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.calibrate_pixel_size",
                                description=__doc__.splitlines()[0])
    p.add_argument("input", help="dataset folder (e.g. ../shared/data/acdc)")
    p.add_argument("--source", choices=SOURCES, default="acdc")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)
    tic = time.perf_counter()
    stacks = ps.stacks_with_header(args.source, args.input)
    if len(stacks) < 3:
        print(f"{args.input}: {len(stacks)} patients state a pixel size; need at least 3",
              file=sys.stderr)
        return 1
    out = ps.calibrate(stacks)
    h = out["header_mm"]
    print(f"{out['patients']} patients with a header pixel size ({h['min']:.3f}-{h['max']:.3f} mm, "
          f"median {h['median']:.3f}); {time.perf_counter() - tic:.0f} s")
    r = out["outer_radius_mm_all"]
    print(f"outer LV radius on all of them: {r['one_pass']:.1f} mm (one pass; two passes "
          f"{r['two_passes']:.1f} mm), coefficient of variation {r['cv_pct_one_pass']:.1f} %  "
          f"[data_prep.pixel_size.OUTER_RADIUS_MM = {ps.OUTER_RADIUS_MM}]")
    print("\n| leave one patient out | median abs error | mean | 90th pct | max | bias |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, e in out["loo"].items():
        print(f"| {name.replace('_', ' ')} | {e['median_abs_pct']:.1f} % | {e['mean_abs_pct']:.1f} % "
              f"| {e['p90_abs_pct']:.1f} % | {e['max_abs_pct']:.1f} % | {e['bias_pct']:+.1f} % |")
    if args.json:
        write_json_atomic(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
