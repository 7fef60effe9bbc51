"""ED/ES detection on new cine MRI: find the sequences of an input, decode them, write and plot rows.

Used by tools.detect. Sequences are named by anonymous keys (data_prep.sequence.anonymous_key) and
by the position of their input on the command line: no names, IDs, dates or paths are written.
"""
from __future__ import annotations

import os
from pathlib import Path

from data_prep.errors import InputError
from data_prep.rwave import RWAVE_KEY
from tempregnet.labels import written_confidence

OUTPUT_JSON, OUTPUT_CSV, PLOT_DIR = "detections.json", "detections.csv", "plots"
THUMB_DIR = "thumbs"          # under PLOT_DIR: the review page's row pictures
CSV_COLUMNS = ["input", "seq_id", "slice", "n_frames", "ed_0based", "es_0based", "ed_1based",
               "es_1based", "ed_instance", "es_instance", "ed_true_0based", "es_true_0based",
               "confidence", "input_mm_per_px_row", "input_mm_per_px_col", "pixel_size_from",
               "time_s"]
NIFTI_SUFFIXES = (".nii", ".nii.gz")


def guess_source(path) -> str:
    """'nifti' for a NIfTI file, 'acdc' for a folder with Info.cfg, 'nifti' for NIfTI-only
    folders, else 'dicom'."""
    p = Path(path)
    if p.is_file():
        return "nifti" if p.name.lower().endswith(NIFTI_SUFFIXES) else "dicom"
    if any(True for _ in p.rglob("Info.cfg")):
        return "acdc"
    if any(p.rglob("*.nii")) or any(p.rglob("*.nii.gz")):
        return "nifti"
    return "dicom"


def _nifti_file_sources(path):
    """Sequence sources of one 4-D NIfTI file (a sequence per slice)."""
    import nibabel as nib
    from data_prep.acdc import NiftiSequenceSource
    from data_prep.sequence import anonymous_key
    try:
        shape = nib.load(str(path)).shape
    except (OSError, ValueError, EOFError) as exc:
        return [], [InputError(path, f"not a readable NIfTI file ({type(exc).__name__})")]
    if len(shape) != 4:
        return [], [InputError(path, f"is {len(shape)}-D {tuple(shape)}; expected 4-D "
                                     "(x, y, slice, time)")]
    name = os.path.abspath(path)
    group = anonymous_key("nifti", "patient", name)
    return [NiftiSequenceSource(str(path), z, anonymous_key("nifti", name, z), group, "nifti")
            for z in range(shape[2])], []


def find_inputs(path, source: str):
    """(sequence sources with .load(), problems) for one command-line input."""
    from data_prep.readers import find_sequences
    if source == "auto":
        if not os.path.exists(path):
            return [], [InputError(path, "does not exist")]
        source = guess_source(path)
    if source == "nifti" and os.path.isfile(path):
        return _nifti_file_sources(path)
    if source == "dicom" and os.path.isfile(path):
        return [], [InputError(path, "a DICOM input must be a folder (one or more series)")]
    return find_sequences(source, path)


def _slice_of(seq) -> object:
    meta = seq.meta or {}
    for key in ("slice_index", "slice_position"):
        if meta.get(key) is not None:
            return meta[key]
    return ""


def detection_record(input_index: int, seq, result: dict) -> dict:
    """One output row: no identifiers beyond the anonymous seq_id."""
    ed, es = result["ed"], result["es"]
    inst = seq.instances if seq.instances is not None and len(seq.instances) == seq.n_frames \
        else None
    return {
        "input": input_index, "seq_id": seq.seq_id, "slice": _slice_of(seq),
        "n_frames": seq.n_frames, "ed_0based": ed, "es_0based": es,
        "ed_1based": ed + 1, "es_1based": es + 1,
        "ed_instance": "" if inst is None else inst[ed],
        "es_instance": "" if inst is None else inst[es],
        "ed_true_0based": "" if seq.ed is None else int(seq.ed),
        "es_true_0based": "" if seq.es is None else int(seq.es),
        "confidence": written_confidence(result["confidence"]),
        "time_s": round(float(result["time_s"]), 4),
        "curve_steps": [round(float(v), 5) for v in result["curve"]],
        **({"stack_size": result["stack_size"]} if "stack_size" in result else {}),
        **({"crop": result["crop"]} if "crop" in result else {}),
    }


def csv_rows(records: list[dict]) -> list[dict]:
    """Records as CSV rows: a fixed-mm model's input pixel size and where it came from (header,
    override, estimated) lifted out of each record's crop; empty for other models."""
    rows = []
    for rec in records:
        crop = rec.get("crop") or {}
        size = crop.get("input_mm_per_px") or ("", "")
        rows.append({**rec, "input_mm_per_px_row": size[0], "input_mm_per_px_col": size[1],
                     "pixel_size_from": crop.get("spacing_from", "")})
    return rows


def loaded_sequences(found, contract, input_mm_per_px, problem):
    """(item, sequence, crop) per found sequence; crop = (spacing, HeartCrop, spacing source)
    for a physical contract (LV crops found per patient stack, as prepare does), else None."""
    if not contract.physical:
        for item in found:
            try:
                yield item, item.load(), None
            except InputError as err:
                problem(err)
        return
    from data_prep.physical import stack_crops
    by_group: dict = {}
    for item in found:
        by_group.setdefault(item.group, []).append(item)
    for items in by_group.values():
        pairs = []
        for item in items:
            try:
                pairs.append((item, item.load()))
            except InputError as err:
                problem(err)
        placed, problems = stack_crops([q for _, q in pairs], contract, input_mm_per_px,
                                       [i.where for i, _ in pairs])
        for err in problems:
            problem(err)
        by_seq = {id(seq): (sp, crop, how) for seq, sp, how, crop, _ in placed}
        for item, seq in pairs:
            if id(seq) in by_seq:
                yield item, seq, by_seq[id(seq)]


def plot_detection(seq, result: dict, path, contract) -> None:
    """PNG of one detection at path and its thumbnail under THUMB_DIR beside it
    (tempregnet.detection_plot: the net's curve, the fitted curve, ED/ES and their frames)."""
    from tempregnet.detection_plot import render_detection
    from tempregnet.outputs import write_bytes_atomic
    full, thumb = render_detection(seq, result, contract)
    path = Path(path)
    write_bytes_atomic(path.parent / THUMB_DIR / path.name, thumb)
    write_bytes_atomic(path, full)


def decode_input_stacks(done, convention: str, decoding, prior=None):
    """(sequence, result) pairs with ED/ES decoded per patient stack (inference.decode_stacks) as
    decoding (tempregnet.decoding.Decoding) says; prior: model_spec.prior_of its es_prior."""
    from tempregnet.inference import decode_stacks
    records = [{"group": seq.group, "n_frames": seq.n_frames, "curve": result["curve"],
                "time_s": result["time_s"], "rwave": float((seq.meta or {}).get(RWAVE_KEY) or 0.0)}
               for seq, result in done]
    stacked = decode_stacks(records, convention, decoding.decoder, detail=True,
                            weights=decoding.stack_weights, prior=prior)
    return [(seq, {**result, "ed": rec["ed_pred"], "es": rec["es_pred"], "time_s": rec["time_s"],
                   "confidence": rec["confidence"], "decoded": rec["decoded"],
                   "stack_curve": rec["stack_curve"], "stack_curves": rec["stack_curves"],
                   "stack_size": rec["stack_size"]})
            for (seq, result), rec in zip(done, stacked)]


def page_problems(problems, inputs) -> list[str]:
    """Problem causes for the review page: each input's path (and the paths any cause quotes)
    replaced, so no folder or file name reaches it."""
    import re
    from data_prep.prepare import _scrub
    out = []
    for text in problems:
        for k, path in sorted(enumerate(inputs, 1), key=lambda kp: -len(str(kp[1]))):
            for form in sorted({str(path), os.path.abspath(path)}, key=len, reverse=True):
                text = re.sub(re.escape(form) + r"[^\s:]*", f"(input {k})", text)
        out.append(_scrub(text))
    return out


def write_detection_report(out, records, problems, inputs, description, decoder, stack) -> Path:
    """tools.detect's report.html: its records, with plots/<seq_id>.png and their thumbnails."""
    from tempregnet.report import write_report

    def picture(rec):
        name = f"{rec['seq_id']}.png"
        if not (Path(out) / PLOT_DIR / name).is_file():
            return None
        return f"{PLOT_DIR}/{name}", f"{PLOT_DIR}/{THUMB_DIR}/{name}"

    counts = [("inputs", len(inputs)), ("sequences", len(records)), ("problems", len(problems)),
              ("model", description.get("recipe") or description.get("weights", "")),
              ("decoder", decoder), ("decoding", "per stack" if stack else "per sequence")]
    return write_report(out, records, picture, "ED / ES detections", counts,
                        page_problems(problems, inputs))

