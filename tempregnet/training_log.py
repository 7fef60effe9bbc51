"""Training curves from a Caffe log: parse train/test loss lines and plot them (matplotlib, Agg)."""
from __future__ import annotations

import io
import re
from pathlib import Path

from data_prep.errors import InputError
from tempregnet.outputs import write_bytes_atomic

NUMBER = r"([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf|-nan))"
ITER_LOSS = re.compile(r"Iteration (\d+)(?: \([^)]*\))?, loss = " + NUMBER)
TESTING = re.compile(r"Iteration (\d+), Testing net")
OUTPUT = re.compile(r"(Train|Test) net output #\d+: (\S+) = " + NUMBER)
LEARNING_RATE = re.compile(r"Iteration (\d+), lr = " + NUMBER)


def parse_log(path) -> dict:
    """{'train': {name: [(iter, value)]}, 'test': {...}, 'lr': [(iter, lr)]}; 'loss' is the solver's total."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "log file not found")
    curves = {"train": {}, "test": {}, "lr": []}
    train_iter = test_iter = None
    for line in path.read_text(errors="replace").splitlines():
        if m := ITER_LOSS.search(line):
            train_iter = int(m.group(1))
            curves["train"].setdefault("loss", []).append((train_iter, float(m.group(2))))
        elif m := TESTING.search(line):
            test_iter = int(m.group(1))
        elif m := LEARNING_RATE.search(line):
            curves["lr"].append((int(m.group(1)), float(m.group(2))))
        elif m := OUTPUT.search(line):
            phase, name, value = m.group(1).lower(), m.group(2), float(m.group(3))
            at = train_iter if phase == "train" else test_iter
            if at is not None:
                curves[phase].setdefault(name, []).append((at, value))
    return curves


def plot_curves(curves: dict, out_png, title: str = "") -> Path:
    """Write the train/test loss curves to out_png (atomically) and return its path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_png = Path(out_png)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for phase, style in (("train", "-"), ("test", "o--")):
        for name, points in sorted(curves[phase].items()):
            if points:
                iters, values = zip(*points)
                ax.plot(iters, values, style, label=f"{phase} {name}", markersize=3)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.set_title(title)
    if ax.lines:
        ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return write_bytes_atomic(out_png, buf.getvalue())
