"""The review page: one static HTML file listing every detection, least confident first.

`report.html` (tools.detect --report, tools.cohort --report) sits beside the plots it shows
(tempregnet.detection_plot: a thumbnail per row, a link to the full-size picture), opens from
disk without a server and loads its images lazily. One table row of a few hundred bytes per
sequence, no inline images; PAGE_ROWS rows a page (report.html the least confident, then
report-2.html, ...: a browser takes over half a minute to lay out a 35,000-row table, the seven
slices of 5,000 studies, and under a second for 1,000 rows). A summary on every page: counts,
a histogram of the confidences, the problems, links to the other pages. Only anonymous keys, frame numbers and
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
PAGE_ROWS = 1000          # rows per page: report.html the least confident, report-2.html next


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
                     "slice": _short(r.get("slice", "")), "n_frames": r["n_frames"],
                     "ed": r["ed_0based"], "es": r["es_0based"], "truth": truth,
                     "plot": paths[0] if paths else None, "thumb": paths[1] if paths else None})
    return rows


def _short(value):
    """A slice position in mm to one decimal; indices and text as they are."""
    return f"{value:.1f}" if isinstance(value, float) else value


def page_name(number: int) -> str:
    """report.html, report-2.html, report-3.html, ..."""
    return REPORT_NAME if number == 1 else f"{Path(REPORT_NAME).stem}-{number}.html"


def render_pages(records: list[dict], picture, title: str, counts: list[tuple[str, object]],
                 problems: list[str], about: str = "", page_rows_max: int = PAGE_ROWS) -> list[str]:
    """The pages as text (Jinja2, autoescaped): every page has the summary and links to the
    others; page k lists rows (k - 1) * page_rows_max + 1 ... in the least-confident-first order."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape
    from tempregnet.detection_plot import THUMB_HEIGHT, THUMB_WIDTH
    env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                      autoescape=select_autoescape(["html", "j2"]))
    template = env.get_template(TEMPLATE)
    rows = page_rows(records, picture)
    chunks = [rows[i:i + page_rows_max] for i in range(0, len(rows), page_rows_max)] or [[]]
    histogram = confidence_histogram([r["confidence"] for r in rows])
    pages = [{"name": page_name(k), "first": 1 + (k - 1) * page_rows_max,
              "last": (k - 1) * page_rows_max + len(chunk)}
             for k, chunk in enumerate(chunks, 1)]
    return [template.render(
        title=title, about=about, rows=chunk, n_rows=len(rows), counts=counts,
        problems=problems, max_problems=MAX_PROBLEMS, low=LOW_CONFIDENCE, histogram=histogram,
        with_truth=any(r["truth"] for r in rows), pages=pages, page=pages[k],
        thumb_width=THUMB_WIDTH, thumb_height=THUMB_HEIGHT)
        for k, chunk in enumerate(chunks)]


def write_report(out_dir, records: list[dict], picture, title: str, counts, problems,
                 about: str = "", page_rows_max: int = PAGE_ROWS) -> Path:
    """Write <out_dir>/report.html (and report-2.html, ... past page_rows_max rows) atomically;
    returns the first page's path. Pages of an earlier, longer report are removed."""
    out_dir = Path(out_dir)
    texts = render_pages(records, picture, title, counts, problems, about, page_rows_max)
    for k, text in enumerate(texts, 1):
        write_text_atomic(out_dir / page_name(k), text)
    k = len(texts) + 1
    while (out_dir / page_name(k)).is_file():
        (out_dir / page_name(k)).unlink()
        k += 1
    return out_dir / REPORT_NAME
