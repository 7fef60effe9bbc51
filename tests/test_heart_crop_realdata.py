"""The automatic LV crop and the physical scale on the real ACDC and Sunnybrook copies (../shared)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from data_prep import prepare
from data_prep.hdf5 import load_prepared
from data_prep.physical import CROPS_NAME
from data_prep.readers import find_sequences, read_any
from data_prep.sunnybrook import read_contour, read_links

pytestmark = pytest.mark.realdata

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ACDC, SUNNYBROOK = DATA / "acdc", DATA / "sunnybrook"
SIZE, MM_PER_PX = "96", repr(128 / 96)
ACDC_FALLBACK_MM = "1.40625"   # median in-plane pixdim of the ACDC copy's 29 patients that state one
# ACDC: share of the ED-to-ES signal drop the crop holds, median and worst slice (measured
# 2026-12-01: 0.977 and 0.42; the drop also lies on the RV and the window's edges, see docs)
CHANGE_INSIDE_MEDIAN, CHANGE_INSIDE_MIN = 0.95, 0.35


def need(folder: Path):
    if not folder.is_dir():
        pytest.skip(f"{folder} not present")


def _prepare(tmp_path, source, folder, *extra):
    out = tmp_path / source
    code = prepare.main(["--source", source, str(folder), str(out), "--size", SIZE,
                         "--mm-per-px", MM_PER_PX, "--workers", "1", *extra])
    return code, out


def test_sunnybrook_crop_holds_every_endocardial_contour(tmp_path):
    """Every i-contour point of every contoured slice lies inside its sequence's crop square."""
    need(SUNNYBROOK)
    code, out = _prepare(tmp_path, "sunnybrook", SUNNYBROOK, "--folds", "1")
    assert code == 0
    crops = {c["seq_id"]: c for c in json.loads((out / CROPS_NAME).read_text())["sequences"]}
    found, _ = find_sequences("sunnybrook", SUNNYBROOK)
    links = read_links(SUNNYBROOK)
    checked_slices = checked_contours = 0
    for src in found:
        crop = crops[src.seq_id]
        patient = os.path.basename(os.path.dirname(src.images[0].path))
        folder = SUNNYBROOK / "contourfiles" / links[patient] / "i-contours"
        contours = [folder / f"IM-0001-{int(Path(im.path).stem):04d}-icontour-manual.txt"
                    for im in src.images]
        contours = [c for c in contours if c.is_file()]
        for path in contours:
            xy = read_contour(path)
            offset_mm = (xy[:, ::-1] - np.array(crop["centre_px"])) * crop["input_mm_per_px"]
            assert np.abs(offset_mm).max() <= crop["side_mm"] / 2, (src.seq_id, path.name)
            checked_contours += 1
        checked_slices += bool(contours)
    assert checked_slices >= 18 and checked_contours == 2 * checked_slices   # ED and ES each


def test_acdc_placeholder_spacing_is_estimated_and_said(tmp_path):
    """Patients whose pixdim is the 1 x 1 x 1 placeholder are read with no flag: one pixel size
    per patient, estimated from the images (said per row); the others at their header's."""
    need(ACDC)
    code, out = _prepare(tmp_path, "acdc", ACDC)
    assert code == 0
    counts = load_prepared(out)["provenance"]["counts"]
    # the copy's one bad slice (a constant frame) is the only one skipped
    assert list(counts["skipped_reasons"]) == ["constant image: frame 16 has a single value"]
    seqs = {s.seq_id: s for s in read_any("acdc", ACDC)}
    unknown = {k for k, s in seqs.items() if s.meta["pixel_spacing_mm"] is None}
    assert len({seqs[k].group for k in unknown}) == 21
    crops = json.loads((out / CROPS_NAME).read_text())["sequences"]
    assert len(crops) == counts["written"] == len(seqs) - counts["skipped"]
    written_unknown = sum(c["seq_id"] in unknown for c in crops)
    assert counts["input_spacing_from"] == {"header": len(crops) - written_unknown,
                                            "estimated": written_unknown}
    per_patient = {}
    for crop in crops:
        seq = seqs[crop["seq_id"]]
        if crop["seq_id"] in unknown:
            assert crop["spacing_from"] == "estimated"
            per_patient.setdefault(seq.group, set()).add(tuple(crop["input_mm_per_px"]))
        else:
            assert crop["spacing_from"] == "header"
            assert crop["input_mm_per_px"] == pytest.approx(seq.meta["pixel_spacing_mm"], abs=1e-5)
    assert all(len(v) == 1 for v in per_patient.values())          # one size per patient
    sizes = [next(iter(v))[0] for v in per_patient.values()]
    assert all(0.9 <= s <= 2.5 for s in sizes), sorted(sizes)       # cine MRI pixels


def test_pixel_size_estimator_against_the_headers_that_state_one():
    """Leave one patient out on the 29 header patients: the estimate is within 12 % of the
    header's value for the median patient and 50 % for every one (measured: docs/scale-and-crop.md),
    and the estimator's constant is the one this calibration gives on all of them."""
    need(ACDC)
    from data_prep.pixel_size import OUTER_RADIUS_MM, calibrate, stacks_with_header
    out = calibrate(stacks_with_header("acdc", ACDC))
    assert out["patients"] == 29
    assert out["loo"]["one_pass"]["median_abs_pct"] <= 12.0, out["loo"]
    assert out["loo"]["one_pass"]["max_abs_pct"] <= 50.0, out["loo"]
    assert OUTER_RADIUS_MM == pytest.approx(out["outer_radius_mm_all"]["one_pass"], abs=0.05)


def test_acdc_crop_holds_the_signal_that_changes_from_ed_to_es(tmp_path):
    """The copy ships no segmentation: instead the crop holds the signal lost from the ED to
    the ES frame (blood replaced by myocardium as the ventricles contract; the labels, not the
    crop finder, choose those frames): most of it on the median slice, a good part on every one."""
    need(ACDC)
    code, out = _prepare(tmp_path, "acdc", ACDC, "--input-mm-per-px", ACDC_FALLBACK_MM)
    assert code == 0
    data = load_prepared(out)
    crops = json.loads((out / CROPS_NAME).read_text())["sequences"]
    assert len(crops) == len(data["seq_id"]) == data["provenance"]["counts"]["written"]
    seqs = {s.seq_id: s for s in read_any("acdc", ACDC)}
    shares = []
    for crop in crops:
        seq = seqs[crop["seq_id"]]
        drop = np.clip(seq.frames[seq.ed] - seq.frames[seq.es], 0, None)
        drop = np.where(drop > 0.2 * drop.max(), drop, 0.0)
        rows, cols = np.mgrid[0:drop.shape[0], 0:drop.shape[1]]
        inside = ((np.abs(rows - crop["centre_px"][0]) * crop["input_mm_per_px"][0]
                   <= crop["side_mm"] / 2)
                  & (np.abs(cols - crop["centre_px"][1]) * crop["input_mm_per_px"][1]
                     <= crop["side_mm"] / 2))
        shares.append(drop[inside].sum() / max(drop.sum(), 1e-9))
    assert np.median(shares) >= CHANGE_INSIDE_MEDIAN, np.median(shares)
    assert min(shares) >= CHANGE_INSIDE_MIN, sorted(shares)[:5]
