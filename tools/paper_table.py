"""The README's Table 1 as the paper prints it: the paper's five methods as rows, the paper's aFD
beside ours from several Table 1 runs (tools.table1's table1.json), one column each.

    python -m tools.paper_table "ZF, ACDC=results/paper_zf_cpu-X/table1.json" \\
        "small, ACDC=results/acdc_mm-Y/table1.json" "small, demo=results/demo-Z/table1.json"

Each cell is the pooled aFD ED / ES with its STD below it (Eq. 5 and the population STD of the
same differences, as table1.md), and the spread over the test folds: the standard deviation of
the folds' aFD, so a reader can tell which differences are larger than one draw.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from data_prep.errors import InputError
from tempregnet.evaluation import PHASES, POOLED
from tempregnet.table1 import METHOD_NAMES, PAPER

PAPER_ROWS = ("level_set", "graph_cut", "cnn_reg", "tempreg_notsc", "tempreg")


def read_summary(path: Path) -> dict:
    """table1.json's per-method summaries."""
    try:
        return json.loads(Path(path).read_text())["summary"]
    except FileNotFoundError:
        raise InputError(path, "no such table1.json") from None
    except (json.JSONDecodeError, KeyError):
        raise InputError(path, "not a table1.json written by tools.table1") from None


def cell(summary: dict | None) -> str:
    """'aFD ED / ES<br>STD ... , folds +- ...' for one method of one table, '-' if absent."""
    if summary is None:
        return "-"
    pooled = summary[POOLED]
    folds = list(summary["folds"].values())
    spread = [np.std([f[p]["afd"] for f in folds]) if len(folds) > 1 else None for p in PHASES]
    afd = " / ".join(f"{pooled[p]['afd']:.2f}" for p in PHASES)
    std = " / ".join(f"{pooled[p]['std']:.2f}" for p in PHASES)
    text = f"**{afd}**<br>STD {std}"
    if spread[0] is not None:
        text += "<br>folds ±" + " / ".join(f"{s:.2f}" for s in spread)
    return text


def paper_table(columns: list[tuple[str, Path]]) -> str:
    """Markdown: one row per paper method, the paper's column then one per (title, table1.json)."""
    tables = [(title, read_summary(path)) for title, path in columns]
    lines = ["| method | paper (Kong et al.) | " + " | ".join(t for t, _ in tables) + " |",
             "|---|---:|" + "---:|" * len(tables)]
    for method in PAPER_ROWS:
        p = PAPER[method]
        paper = f"**{p['afd'][0]:.2f} / {p['afd'][1]:.2f}**<br>STD {p['std'][0]:.2f} / {p['std'][1]:.2f}"
        cells = [cell(summary.get(method)) for _, summary in tables]
        lines.append(f"| {METHOD_NAMES[method]} | {paper} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse_column(text: str) -> tuple[str, Path]:
    title, sep, path = text.rpartition("=")
    if not sep or not title:
        raise argparse.ArgumentTypeError(f"expected TITLE=PATH, got {text!r}")
    return title, Path(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("columns", nargs="+", type=parse_column, metavar="TITLE=TABLE1_JSON")
    args = p.parse_args(argv)
    try:
        sys.stdout.write(paper_table(args.columns))
    except InputError as err:
        print(f"paper_table: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
