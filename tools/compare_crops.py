"""Compare the LV crop finder with an earlier version of it on the same inputs (issue 23).

    git show 49253e1:data_prep/heart_crop.py > /tmp/old_heart_crop.py
    python -m tools.compare_crops --old /tmp/old_heart_crop.py [--data ../shared/data]

Prints, for the old and this tree's data_prep.heart_crop: the synthetic phantoms' centre errors
(the stacks of tests/test_heart_crop.py's noisy test) and find_stack time; on ACDC (headerless
patients at 1.40625 mm) the share of the ED-to-ES signal drop inside each 128 mm crop and how far
each centre moved; on Sunnybrook the farthest endocardial contour point from the crop centre.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from data_prep import heart_crop as new
from data_prep.readers import find_sequences
from data_prep.scale import header_spacing
from data_prep.sunnybrook import read_contour, read_links
from data_prep.synthetic import generate_patient

SIDE_MM, ACDC_FALLBACK_MM = 128.0, 1.40625


def _module(path):
    spec = importlib.util.spec_from_file_location("old_heart_crop", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_heart_crop"] = module
    spec.loader.exec_module(module)
    return module


def _stacks(source, folder):
    found, _ = find_sequences(source, folder)
    by: dict = {}
    for item in found:
        by.setdefault(item.group, []).append(item)
    return by


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.compare_crops",
                                description=__doc__.splitlines()[0])
    p.add_argument("--old", required=True, help="an earlier data_prep/heart_crop.py")
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    args = p.parse_args(argv)
    finders = {"old": _module(args.old), "new": new}
    out = {name: {} for name in finders}
    for name, mod in finders.items():
        errs, seconds = [], 0.0
        for index in range(4):
            for kw in (dict(), dict(shift_mm=(-30.0, 30.0), rotation_deg=-120.0),
                       dict(shift_mm=(25.0, -20.0), rotation_deg=160.0)):
                ph = generate_patient(np.random.default_rng([7, index]), index, n_slices=3, **kw)
                tic = time.perf_counter()
                crops = mod.find_stack([(f, (ph.pixel_spacing,) * 2) for f in ph.slices], SIDE_MM)
                seconds += time.perf_counter() - tic
                errs += [float(np.hypot(*(np.array(c.centre_mm)
                                          - ph.lv_center[i].mean(axis=0) * ph.pixel_spacing)))
                         for i, c in enumerate(crops)]
        out[name]["phantom_centre_error_mm"] = {"median": float(np.median(errs)),
                                                "max": float(np.max(errs)), "slices": len(errs)}
        out[name]["phantom_find_stack_s"] = seconds
    acdc = {name: {} for name in finders}
    for items in _stacks("acdc", Path(args.data) / "acdc").values():
        seqs = [i.load() for i in items]
        sp = header_spacing(seqs[0]) or (ACDC_FALLBACK_MM,) * 2
        for name, mod in finders.items():
            for s, c in zip(seqs, mod.find_stack([(q.frames, sp) for q in seqs], SIDE_MM)):
                drop = np.clip(s.frames[s.ed] - s.frames[s.es], 0, None)
                drop = np.where(drop > 0.2 * drop.max(), drop, 0.0)
                rows, cols = np.mgrid[0:drop.shape[0], 0:drop.shape[1]]
                inside = ((np.abs(rows - c.centre_px[0]) * sp[0] <= SIDE_MM / 2)
                          & (np.abs(cols - c.centre_px[1]) * sp[1] <= SIDE_MM / 2))
                acdc[name][s.seq_id] = (c.centre_px, sp[0],
                                        float(drop[inside].sum() / max(drop.sum(), 1e-9)))
    for name in finders:
        shares = [v[2] for v in acdc[name].values()]
        out[name]["acdc_drop_share"] = {"median": float(np.median(shares)),
                                        "min": float(np.min(shares))}
    moved = np.array([np.hypot(*np.subtract(acdc["new"][k][0], acdc["old"][k][0])) * acdc["new"][k][1]
                      for k in acdc["old"]])
    out["acdc_centre_moved_mm"] = {"median": float(np.median(moved)),
                                   "p90": float(np.percentile(moved, 90)),
                                   "max": float(moved.max()), "over_10mm": int((moved > 10).sum()),
                                   "slices": len(moved)}
    sb = Path(args.data) / "sunnybrook"
    links = read_links(sb)
    for name, mod in finders.items():
        far = 0.0
        for items in _stacks("sunnybrook", sb).values():
            seqs = [i.load() for i in items]
            crops = mod.find_stack([(q.frames, header_spacing(q)) for q in seqs], SIDE_MM)
            for it, s, c in zip(items, seqs, crops):
                folder = sb / "contourfiles" / links[os.path.basename(os.path.dirname(
                    it.images[0].path))] / "i-contours"
                for im in it.images:
                    path = folder / f"IM-0001-{int(Path(im.path).stem):04d}-icontour-manual.txt"
                    if path.is_file():
                        offset = (read_contour(path)[:, ::-1] - np.array(c.centre_px))
                        far = max(far, float(np.abs(offset * header_spacing(s)).max()))
        out[name]["sunnybrook_farthest_contour_mm"] = far
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
