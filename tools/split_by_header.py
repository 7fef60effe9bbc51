"""aFD split by where each sequence's pixel size came from (header, override, estimated).

    python -m tools.split_by_header --eval results/eval --data data/prepared/acdc_mm [--eval ...]

Reads an evaluation's afd_per_sequence.csv (tools.evaluate_afd, per sequence or --stack) and the
prepared data's crops.json (data_prep.prepare: each row's pixel-size source), and prints ED / ES
aFD (Eq. 5, the mean absolute frame difference) per source, as docs/scale-and-crop.md's table.
Pairs of --eval / --data are taken in order (one --data for all is allowed).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from data_prep.physical import CROPS_NAME


def split(eval_dir, data_dir) -> dict:
    """{source: {"n": sequences, "patients": ..., "ed": aFD, "es": aFD}} for one evaluation."""
    crops = json.loads((Path(data_dir) / CROPS_NAME).read_text())["sequences"]
    source = {c["seq_id"]: c["spacing_from"] for c in crops}
    with open(Path(eval_dir) / "afd_per_sequence.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    missing = [r["seq_id"] for r in rows if r["seq_id"] not in source]
    if missing:
        raise SystemExit(f"{data_dir}: {len(missing)} evaluated sequences are not in {CROPS_NAME}")
    out: dict = {}
    for r in rows:
        g = out.setdefault(source[r["seq_id"]], {"n": 0, "ed": 0.0, "es": 0.0})
        g["n"] += 1
        g["ed"] += float(r["ed_abs_diff"])
        g["es"] += float(r["es_abs_diff"])
    for g in out.values():
        g["ed"] /= g["n"]
        g["es"] /= g["n"]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.split_by_header",
                                description=__doc__.splitlines()[0])
    p.add_argument("--eval", action="append", required=True, help="tools.evaluate_afd --out folder")
    p.add_argument("--data", action="append", required=True, help="prepared data (crops.json)")
    args = p.parse_args(argv)
    data = args.data * len(args.eval) if len(args.data) == 1 else args.data
    if len(data) != len(args.eval):
        p.error("give one --data, or one per --eval")
    print("| evaluation | pixel size from | sequences | ED aFD | ES aFD |")
    print("|---|---|---:|---:|---:|")
    for e, d in zip(args.eval, data):
        for source, g in sorted(split(e, d).items()):
            print(f"| {Path(e).name} | {source} | {g['n']} | {g['ed']:.2f} | {g['es']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
