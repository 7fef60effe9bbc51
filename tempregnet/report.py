"""The review page: one static HTML file listing every detection, least confident first.

`report.html` (tools.detect --report, tools.cohort --report) sits beside the plots it shows
(tempregnet.detection_plot: a thumbnail per row, a link to the full-size picture), opens from
disk without a server and loads its images lazily, so a cohort of thousands of studies stays one
small page (one table row of a few hundred bytes per sequence, no inline images). A summary on
top: counts, a histogram of the confidences, the problems. Only anonymous keys, frame numbers and
scrubbed problem causes are written: no names, IDs, dates or paths.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tempregnet.outputs import write_text_atomic

REPORT_NAME = "report.html"
TEMPLATE = "report.html.j2"
HIST_BINS = 10
HIST_HEIGHT_PX = 100
LOW_CONFIDENCE = 0.5      # drawn in red on the page (display only)
MAX_PROBLEMS = 200        # listed on the page; all of them are in detections.json


def confidence_histogram(confidences, bins: int = HIST_BINS) -> list[dict]:
    """Counts of confidences in [0, 0.1), ..., [0.9, 1.0] with bar heights for the page."""
    counts, edges = np.histogram(np.asarray(confidences, dtype=np.float64), bins=bins,
                                 range=(0.0, 1.0))
    top = max(int(counts.max()), 1) if counts.size else 1
    return [{"count": int(c), "low": f"{lo:.1f}", "label": f"{lo:.1f}-{hi:.1f}",
             "height": max(1, round(HIST_HEIGHT_PX * int(c) / top)) if c else 0}
            for c, lo, hi in zip(counts, edges[:-1], edges[1:])]


def page_rows(records: list[dict], picture) -> list[dict]:
    """Rows of the page from detection records (tempregnet.detection.detection_record, with a
    'study' key in a cohort), sorted least confident first (ties keep the records' order).
    picture(record) -> (full-size path, thumbnail path) relative to the page, or None."""
    order = sorted(range(len(records)), key=lambda i: records[i]["confidence"])
    rows = []
    for i in order:
        r = records[i]
        paths = picture(r)
        truth = "" if r.get("ed_true_0based", "") == "" else \
            f"{r['ed_true_0based']} / {r['es_true_0based']}"
        rows.append({"confidence": float(r["confidence"]),
                     "study": r.get("study", f"input {r['input']}"), "seq_id": r["seq_id"],
                     "slice": r.get("slice", ""), "n_frames": r["n_frames"],
                     "ed": r["ed_0based"], "es": r["es_0based"], "truth": truth,
                     "plot": paths[0] if paths else None, "thumb": paths[1] if paths else None})
    return rows


def render(records: list[dict], picture, title: str, counts: list[tuple[str, object]],
           problems: list[str], about: str = "") -> str:
    """The page as text (Jinja2, autoescaped)."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape
    from tempregnet.detection_plot import THUMB_HEIGHT, THUMB_WIDTH
    env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                      autoescape=select_autoescape(["html", "j2"]), trim_blocks=False)
    rows = page_rows(records, picture)
    return env.get_template(TEMPLATE).render(
        title=title, about=about, rows=rows, n_rows=len(rows), counts=counts,
        problems=problems, max_problems=MAX_PROBLEMS, low=LOW_CONFIDENCE,
        histogram=confidence_histogram([r["confidence"] for r in rows]),
        with_truth=any(r["truth"] for r in rows),
        thumb_width=THUMB_WIDTH, thumb_height=THUMB_HEIGHT)


def write_report(out_dir, records: list[dict], picture, title: str, counts, problems,
                 about: str = "") -> Path:
    """Write <out_dir>/report.html atomically; returns its path."""
    path = Path(out_dir) / REPORT_NAME
    write_text_atomic(path, render(records, picture, title, counts, problems, about))
    return path
