"""Plot the training curves of a Caffe log: python -m tools.plot_training LOG [--out PNG] [--title T] [--force]."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_prep.errors import InputError
from tempregnet.training_log import parse_log, plot_curves


def main(argv=None) -> int:
    """CLI: plot_training LOG [--out PNG] [--title T] [--force]."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("log", type=Path, help="Caffe training log")
    parser.add_argument("--out", type=Path, help="output PNG (default: LOG with .png)")
    parser.add_argument("--title", default="")
    parser.add_argument("--force", action="store_true", help="overwrite an existing PNG")
    args = parser.parse_args(argv)
    out = args.out or args.log.with_suffix(".png")
    try:
        if out.exists() and not args.force:
            raise InputError(out, "exists; pass --force to overwrite")
        curves = parse_log(args.log)
        if not curves["train"]:
            raise InputError(args.log, "no 'Iteration N ..., loss = X' lines: not a Caffe training log?")
        plot_curves(curves, out, args.title or args.log.parent.name)
    except InputError as err:
        print(f"plot_training: {err}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
