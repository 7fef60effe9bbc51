"""Frame-difference metrics: the paper's aFD (Eq. 5) and STD, per fold and pooled, in original frames.

STD is the *population* standard deviation (ddof = 0) of the absolute frame differences
|N_hat - N| whose mean is aFD; the paper does not say which, this is the spread of the same
numbers aFD averages. The cyclic difference min(|d|, T - |d|) is reported beside them and is
NOT the paper's metric: it forgives a prediction one frame "before" frame 0 landing on T - 1.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np

PHASES = ("ed", "es")
STD_DDOF = 0                 # population STD (see module docstring)
POOLED = "pooled"


def frame_differences(true, pred) -> np.ndarray:
    """Absolute frame differences |N_hat - N| (Eq. 5's summand)."""
    t = np.asarray(true, dtype=np.int64)
    p = np.asarray(pred, dtype=np.int64)
    if t.shape != p.shape:
        raise ValueError(f"true and predicted frames differ in shape: {t.shape} vs {p.shape}")
    return np.abs(p - t)


def cyclic_differences(true, pred, n_frames) -> np.ndarray:
    """min(|d|, T - |d|): the frame difference on the cardiac cycle (not the paper's metric)."""
    d = frame_differences(true, pred)
    n = np.asarray(n_frames, dtype=np.int64)
    if np.any(d >= n):
        raise ValueError("a frame difference is not smaller than its sequence length")
    return np.minimum(d, n - d)


def afd(true, pred) -> float:
    """Eq. 5: mean absolute frame difference over the M sequences."""
    d = frame_differences(true, pred)
    if d.size == 0:
        raise ValueError("aFD of no sequences")
    return float(d.mean())


def afd_std(true, pred, ddof: int = STD_DDOF) -> float:
    """Standard deviation of the absolute frame differences (population by default)."""
    d = frame_differences(true, pred)
    if d.size <= ddof:
        return math.nan
    return float(d.std(ddof=ddof))


def _stats(records: list[dict]) -> dict:
    out = {"n_sequences": len(records)}
    n = [r["n_frames"] for r in records]
    for phase in PHASES:
        t = [r[f"{phase}_true"] for r in records]
        p = [r[f"{phase}_pred"] for r in records]
        cyc = cyclic_differences(t, p, n)
        out[phase] = {
            "afd": afd(t, p),
            "std": afd_std(t, p),
            "exact_fraction": float(np.mean(frame_differences(t, p) == 0)),
            "cyclic_afd_not_paper": float(cyc.mean()),
            "cyclic_std_not_paper": float(cyc.std(ddof=STD_DDOF)),
        }
    times = [r["time_s"] for r in records if r.get("time_s") is not None]
    out["time_per_sequence_s"] = float(np.mean(times)) if times else None
    return out


def summarise(records: list[dict]) -> dict:
    """Per-fold and pooled metrics of per-sequence records.

    A record has n_frames, ed_true, es_true, ed_pred, es_pred (0-based original frames), and
    optionally fold and time_s. Pooled means over all sequences of all folds (not the mean of
    the fold means).
    """
    if not records:
        raise ValueError("no sequences to evaluate")
    folds: "OrderedDict[str, list]" = OrderedDict()
    for r in records:
        folds.setdefault(str(r.get("fold", "all")), []).append(r)
    summary = {"std": f"population (ddof={STD_DDOF}) STD of |pred - true|",
               "frames": "original frames, 0-based", "folds": OrderedDict()}
    for name in sorted(folds):
        summary["folds"][name] = _stats(folds[name])
    summary[POOLED] = _stats(records)
    return summary


def _fmt(x, digits=2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def markdown_table(summary: dict, title: str | None = None) -> str:
    """The summary as a markdown table, one row per fold plus the pooled row."""
    head = ("| fold | sequences | aFD ED | STD ED | aFD ES | STD ES | time/seq (s) "
            "| cyclic aFD ED* | cyclic aFD ES* |")
    lines = [f"## {title}", ""] if title else []
    lines += [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    rows = list(summary["folds"].items())
    if len(rows) > 1 or POOLED not in dict(rows):
        rows.append((POOLED, summary[POOLED]))
    for name, s in rows:
        lines.append(
            f"| {name} | {s['n_sequences']} | {_fmt(s['ed']['afd'])} | {_fmt(s['ed']['std'])} "
            f"| {_fmt(s['es']['afd'])} | {_fmt(s['es']['std'])} "
            f"| {_fmt(s['time_per_sequence_s'], 3)} "
            f"| {_fmt(s['ed']['cyclic_afd_not_paper'])} | {_fmt(s['es']['cyclic_afd_not_paper'])} |")
    lines += ["", "aFD = Eq. 5, mean |predicted - true| in original frames; STD = population "
              "standard deviation of the same differences (the paper does not say which).",
              "\\* cyclic difference min(|d|, T - |d|): not the paper's metric, shown for "
              "comparison with later work.", ""]
    return "\n".join(lines)
