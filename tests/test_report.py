"""The review page (tools.detect --report, tools.cohort --report): what it lists, in which order,
that it names no patient, and that a real browser shows it whole (headless Debian chromium
driven by Playwright; skipped with the reason where neither can be had: `make browser`)."""
from __future__ import annotations

import csv
import json
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from cli import run_module

synthetic = pytest.importorskip("data_prep.synthetic")

PHANTOM_PX = 64
# planted in the DICOM headers by the generator, and the folder names of the studies
IDENTIFIERS = (synthetic.FAKE_PATIENT_NAME, synthetic.FAKE_PATIENT_ID, synthetic.FAKE_BIRTH_DATE,
               synthetic.FAKE_STUDY_DATE, "ZORBLAX", "QUENTINA", "case001", "case002",
               "Doe_Jane")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


class Page(HTMLParser):
    """The rows of report.html: per row its cells' text and its images and links."""

    def __init__(self):
        super().__init__()
        self.rows, self.images, self.links, self._row, self._in_body = [], [], [], None, False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self._row = {"cells": [], "images": [], "links": []}
        elif tag == "td" and self._row is not None:
            self._row["cells"].append("")
        elif tag == "img":
            self.images.append(a)
            if self._row is not None:
                self._row["images"].append(a)
        elif tag == "a":
            self.links.append(a.get("href"))
            if self._row is not None:
                self._row["links"].append(a.get("href"))

    def handle_endtag(self, tag):
        if tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._row is not None and self._row["cells"]:
            self._row["cells"][-1] += data.strip()


def parse(path) -> Page:
    page = Page()
    page.feed(Path(path).read_text())
    return page


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    pytest.importorskip("caffe")
    from trivial_net import write_run_dir
    return write_run_dir(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def detected(tmp_path_factory, run_dir):
    """tools.detect --report on two generated DICOM patients, one in a folder named like a
    patient, with a corrupt file (a problem on the page)."""
    root = tmp_path_factory.mktemp("dicom")
    synthetic.write_dicom_cohort(root / "Doe_Jane", 2, seed=5, size=PHANTOM_PX)
    studies = [root / "Doe_Jane" / "case001", root / "Doe_Jane" / "case002"]
    (studies[0] / "broken.dcm").write_bytes(b"\x00" * 64 + b"not a dicom file")
    out = tmp_path_factory.mktemp("det") / "out"
    res = run_module("tools.detect", *studies, "--run", run_dir, "--out", out, "--report",
                     "--quiet")
    return out, res, root


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_detect_report_lists_every_sequence_least_confident_first(detected):
    out, res, _ = detected
    assert res.returncode == 1 and "Traceback" not in res.stderr      # the corrupt file
    rows = read_csv(out / "detections.csv")
    page = parse(out / "report.html")
    assert len(page.rows) == len(rows) > 0
    conf = [float(r["cells"][1]) for r in page.rows]
    assert conf == sorted(conf)
    assert sorted(conf) == sorted(round(float(r["confidence"]), 2) for r in rows)
    by_seq = {r["seq_id"]: r for r in rows}
    for row in page.rows:
        seq = by_seq[row["cells"][3]]
        assert row["cells"][6:8] == [seq["ed_0based"], seq["es_0based"]]
        (img,) = row["images"]
        assert img["loading"] == "lazy" and not img["src"].startswith("data:")
        assert (out / img["src"]).is_file() and (out / row["links"][0]).is_file()
        assert row["links"][0] == f"plots/{seq['seq_id']}.png"
    text = (out / "report.html").read_text()
    assert "problems: <b>1</b>" in text and "data:" not in text
    assert (out / "report.html").stat().st_size < 2000 + 600 * len(rows)   # small per row


def test_report_and_plots_name_no_patient(detected):
    out, _, root = detected
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for ident in IDENTIFIERS + (str(root),):
                assert ident.encode() not in data, (path.name, ident)


def test_confidence_in_outputs_is_the_decoders(detected, run_dir):
    """The written confidence is decode_detail's on the written curve."""
    from tempregnet.labels import decode_detail
    out, _, _ = detected
    data = json.loads((out / "detections.json").read_text())
    for rec in data["sequences"]:
        d = decode_detail(rec["curve_steps"], rec["n_frames"], "cycle", data["decoder"])
        assert (d.ed, d.es) == (rec["ed_0based"], rec["es_0based"])
        assert rec["confidence"] == pytest.approx(d.confidence, abs=1e-3)


def test_cohort_report(tmp_path, run_dir):
    pytest.importorskip("distributed")
    synthetic.write_dicom_cohort(tmp_path / "Doe_Jane", 2, seed=6, size=PHANTOM_PX)
    studies = [tmp_path / "Doe_Jane" / "case001", tmp_path / "Doe_Jane" / "case002",
               tmp_path / "Doe_Jane" / "missing"]
    out = tmp_path / "out"
    res = run_module("tools.cohort", *studies, "--run", run_dir, "--out", out, "--workers", "1",
                     "--report", "--quiet")
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    rows = read_csv(out / "detections.csv")
    page = parse(out / "report.html")
    assert len(page.rows) == len(rows) > 0
    conf = [float(r["cells"][1]) for r in page.rows]
    assert conf == sorted(conf)
    for row in page.rows:
        assert (out / row["images"][0]["src"]).is_file() and (out / row["links"][0]).is_file()
        assert row["links"][0].startswith(f"plots/{row['cells'][2]}/")
    assert "problems</td><td><b>1</b>" in (out / "report.html").read_text()
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for ident in IDENTIFIERS + (str(tmp_path),):
                assert ident.encode() not in data, (path.name, ident)
    # a rerun with --report into a run without it is refused: its studies have no plots
    again = run_module("tools.cohort", *studies, "--run", run_dir, "--out", out, "--workers",
                       "1", "--quiet")
    assert again.returncode == 2 and "report" in again.stderr


# --- in a real browser ------------------------------------------------------------------------

def chromium_or_skip() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(path, os.X_OK):
        pytest.skip("Debian's chromium is not installed (`make browser` installs it as root)")
    return path


BROKEN_IMAGES = """() => Array.from(document.images)
    .filter(img => !(img.complete && img.naturalWidth > 0)).map(img => img.getAttribute('src'))"""


def load_every_image(page) -> None:
    """Scroll each lazy image into view and wait until the browser has finished with it."""
    for img in page.locator("img").all():
        img.scroll_into_view_if_needed()
        page.wait_for_function("el => el.complete", arg=img.element_handle(), timeout=10000)


def test_page_in_headless_chromium(detected, tmp_path):
    executable = chromium_or_skip()
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is not installed (requirements.lock)")
    out, _, _ = detected
    n_rows = len(read_csv(out / "detections.csv"))
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=executable, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 900})
        try:
            page = browser.new_page()
            errors = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: errors.append(f"failed: {r.url}"))
            page.goto((out / "report.html").as_uri())
            assert page.locator("#rows tbody tr").count() == n_rows
            load_every_image(page)
            assert page.evaluate(BROKEN_IMAGES) == []
            assert page.evaluate("document.images.length") == n_rows
            assert errors == []
            page.evaluate("window.scrollTo(0, 0)")
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10000
            # the check sees a broken image: a copy of the page whose first thumbnail is gone
            broken = tmp_path / "broken"
            shutil.copytree(out, broken)
            first = parse(broken / "report.html").rows[0]["images"][0]["src"]
            (broken / first).unlink()
            errors.clear()
            page.goto((broken / "report.html").as_uri())
            load_every_image(page)
            assert page.evaluate(BROKEN_IMAGES) == [first]
            assert errors, "a missing image is a console error / failed request"
        finally:
            browser.close()


def test_pages_split_the_rows_in_order_and_link_each_other(tmp_path):
    """Past PAGE_ROWS rows the listing goes on in report-2.html, ...; a shorter report later
    removes the pages it no longer has."""
    from tempregnet.report import write_report
    recs = [{"input": 1, "seq_id": f"s{i:02d}", "slice": i, "n_frames": 20, "ed_0based": 0,
             "es_0based": 8, "confidence": c}
            for i, c in enumerate([0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6, 0.05])]
    write_report(tmp_path, recs, lambda r: None, "t", [], [], page_rows_max=4)
    names = ["report.html", "report-2.html", "report-3.html"]
    assert sorted(p.name for p in tmp_path.glob("*.html")) == sorted(names)
    listed = []
    for name in names:
        page = parse(tmp_path / name)
        listed += [(int(r["cells"][0]), float(r["cells"][1])) for r in page.rows]
        assert set(page.links) == set(names) - {name}
    assert listed == list(enumerate(sorted(r["confidence"] for r in recs), 1))
    write_report(tmp_path, recs[:5], lambda r: None, "t", [], [], page_rows_max=4)
    assert sorted(p.name for p in tmp_path.glob("*.html")) == sorted(names[:2])
