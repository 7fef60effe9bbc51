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

import numpy as np

from data_prep import pixel_size as ps
from data_prep.errors import InputError
from data_prep.heart_crop import find_stack
from data_prep.readers import SOURCES, find_sequences
from data_prep.scale import header_spacing
from tempregnet.outputs import write_json_atomic

SIDE_MM = 128.0          # the recipes' crop side (irrelevant to the radius; crops need one)


def stacks_with_header(source: str, path) -> list[tuple[float, list[np.ndarray]]]:
    """[(header pixel size (row), [frames of each slice])] per patient whose header states one."""
    found, _ = find_sequences(source, path)
    by_group: dict = {}
    for item in found:
        by_group.setdefault(item.group_order or item.group, []).append(item)
    stacks = []
    for key in sorted(by_group):
        try:
            seqs = [item.load() for item in by_group[key]]
        except InputError:
            continue
        spacing = header_spacing(seqs[0])
        if spacing is not None:
            stacks.append((spacing[0], [s.frames for s in seqs]))
    return stacks


def _errors(estimates, truth) -> dict:
    e = 100.0 * (np.asarray(estimates) / np.asarray(truth) - 1.0)
    return {"median_abs_pct": float(np.median(np.abs(e))), "mean_abs_pct": float(np.mean(np.abs(e))),
            "p90_abs_pct": float(np.percentile(np.abs(e), 90)), "max_abs_pct": float(np.abs(e).max()),
            "bias_pct": float(np.mean(e))}


def calibrate(stacks) -> dict:
    """Leave-one-out errors of the estimator (1 and 2 passes) and of the constant reference."""
    truth = np.array([s for s, _ in stacks])
    n = len(stacks)
    r1 = np.array([ps.stack_outer_radius_px(
        frames, find_stack([(f, (ps.NOMINAL_MM,) * 2) for f in frames], SIDE_MM), ps.NOMINAL_MM)[0]
        for _, frames in stacks])
    others = lambda v, i: np.delete(v, i)  # noqa: E731
    est1 = np.array([np.median(others(r1 * truth, i)) / r1[i] for i in range(n)])
    # second pass: the finder again at the first (leave-one-out) estimate, radius measured again
    r2 = np.array([ps.stack_outer_radius_px(
        frames, find_stack([(f, (est1[i],) * 2) for f in frames], SIDE_MM), est1[i])[0]
        for i, (_, frames) in enumerate(stacks)])
    est2 = np.array([np.median(others(r2 * truth, i)) / r2[i] for i in range(n)])
    const = np.array([np.median(others(truth, i)) for i in range(n)])
    return {"patients": n, "header_mm": {"min": float(truth.min()), "median": float(np.median(truth)),
                                         "max": float(truth.max())},
            "outer_radius_mm_all": {"one_pass": float(np.median(r1 * truth)),
                                    "two_passes": float(np.median(r2 * truth)),
                                    "cv_pct_one_pass": float(100 * np.std(r1 * truth)
                                                            / np.mean(r1 * truth))},
            "loo": {"one_pass": _errors(est1, truth), "two_passes": _errors(est2, truth),
                    "constant_median_of_others": _errors(const, truth)},
            "per_patient": [{"row": i + 1, "header_mm": float(truth[i]), "estimate_mm": float(est1[i]),
                             "error_pct": float(100 * (est1[i] / truth[i] - 1))} for i in range(n)]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.calibrate_pixel_size",
                                description=__doc__.splitlines()[0])
    p.add_argument("input", help="dataset folder (e.g. ../shared/data/acdc)")
    p.add_argument("--source", choices=SOURCES, default="acdc")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)
    tic = time.perf_counter()
    stacks = stacks_with_header(args.source, args.input)
    if len(stacks) < 3:
        print(f"{args.input}: {len(stacks)} patients state a pixel size; need at least 3",
              file=sys.stderr)
        return 1
    out = calibrate(stacks)
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
