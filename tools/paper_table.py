"""The README's Table 1 as the paper prints it: the paper's five methods as rows, the paper's aFD
beside ours from several Table 1 runs (tools.table1's table1.json), one column each.

    python -m tools.paper_table "ZF, ACDC=results/paper_zf_cpu-X/table1.json" \\
        "small, ACDC=results/acdc_mm-Y/table1.json" \\
        "small, demo=results/demo-Z/table1.json,results/demo-Z1/table1.json,results/demo-Z2/table1.json"

Each cell is the pooled aFD ED / ES with its STD below it (Eq. 5 and the population STD of the
same differences, as table1.md), and the spread over the test folds: the standard deviation of
the folds' aFD, so a reader can tell which differences are larger than one draw. A column of
several tables (the same recipe trained with other seeds, comma-separated) shows the mean over
them of the pooled aFD and of its STD, and the spread over the draws: their standard deviation.
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


def cell(summaries: list[dict]) -> str:
    """'aFD ED / ES<br>STD ...<br>folds (or seeds) +- ...' for one method of one column's tables,
    '-' if it has none."""
    if not summaries:
        return "-"
    pooled = [s[POOLED] for s in summaries]
    afd = " / ".join(f"{np.mean([q[p]['afd'] for q in pooled]):.2f}" for p in PHASES)
    std = " / ".join(f"{np.mean([q[p]['std'] for q in pooled]):.2f}" for p in PHASES)
    text = f"**{afd}**<br>STD {std}"
    if len(summaries) > 1:
        spread = [np.std([q[p]["afd"] for q in pooled]) for p in PHASES]
        return text + f"<br>{len(summaries)} seeds ±" + " / ".join(f"{s:.2f}" for s in spread)
    folds = list(summaries[0]["folds"].values())
    if len(folds) > 1:
        spread = [np.std([f[p]["afd"] for f in folds]) for p in PHASES]
        text += "<br>folds ±" + " / ".join(f"{s:.2f}" for s in spread)
    return text


def paper_table(columns: list[tuple[str, list[Path]]]) -> str:
    """Markdown: one row per paper method, the paper's column then one per (title, table1.json
    files)."""
    tables = [(title, [read_summary(path) for path in paths]) for title, paths in columns]
    lines = ["| method | paper (Kong et al.) | " + " | ".join(t for t, _ in tables) + " |",
             "|---|---:|" + "---:|" * len(tables)]
    for method in PAPER_ROWS:
        p = PAPER[method]
        paper = f"**{p['afd'][0]:.2f} / {p['afd'][1]:.2f}**<br>STD {p['std'][0]:.2f} / {p['std'][1]:.2f}"
        cells = [cell([s[method] for s in summaries if method in s]) for _, summaries in tables]
        lines.append(f"| {METHOD_NAMES[method]} | {paper} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse_column(text: str) -> tuple[str, list[Path]]:
    title, sep, paths = text.rpartition("=")
    if not sep or not title or not all(paths.split(",")):
        raise argparse.ArgumentTypeError(f"expected TITLE=PATH[,PATH...], got {text!r}")
    return title, [Path(p) for p in paths.split(",")]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("columns", nargs="+", type=parse_column, metavar="TITLE=TABLE1_JSON[,...]")
    args = p.parse_args(argv)
    try:
        sys.stdout.write(paper_table(args.columns))
    except InputError as err:
        print(f"paper_table: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
