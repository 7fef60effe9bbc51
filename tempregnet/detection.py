"""ED/ES detection on new cine MRI: find the sequences of an input, decode them, write and plot rows.

Used by tools.detect. Sequences are named by anonymous keys (data_prep.sequence.anonymous_key) and
by the position of their input on the command line: no names, IDs, dates or paths are written.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from data_prep.errors import InputError
from tempregnet.labels import step_positions, steps_to_frames
from tempregnet.outputs import save_figure_atomic

OUTPUT_JSON, OUTPUT_CSV, PLOT_DIR = "detections.json", "detections.csv", "plots"
CSV_COLUMNS = ["input", "seq_id", "slice", "n_frames", "ed_0based", "es_0based", "ed_1based",
               "es_1based", "ed_instance", "es_instance", "ed_true_0based", "es_true_0based",
               "input_mm_per_px_row", "input_mm_per_px_col", "pixel_size_from",
               "time_s"]
NIFTI_SUFFIXES = (".nii", ".nii.gz")
THUMBNAIL_PX = 48


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
    """PNG: the predicted curve on the original frames, ED/ES marked, over a strip of the frames
    (grey values mapped as the contract maps them)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from data_prep.preprocess import resize_frames, squash, squash_range
    n = seq.n_frames
    curve = result["curve"]
    ed, es = result["ed"], result["es"]
    square = _square(seq.frames)
    lo, hi = squash_range(square, contract.squash_percentiles, contract.percentile_stride)
    thumbs = resize_frames(squash(square, lo, hi).astype(np.float32), THUMBNAIL_PX) / 255.0
    fig = plt.figure(figsize=(max(8.0, 0.45 * n), 4.2))
    ax = fig.add_axes([0.08, 0.42, 0.9, 0.52])
    ax.plot(np.arange(n), steps_to_frames(curve, n), "-", color="tab:blue",
            label="prediction on original frames")
    ax.plot(step_positions(n, curve.size), curve, ".", color="tab:blue", alpha=0.5,
            label="network steps")
    ax.axvline(ed, color="tab:red", ls="--", label=f"ED = frame {ed} (0-based)")
    ax.axvline(es, color="tab:green", ls="--", label=f"ES = frame {es} (0-based)")
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_xticks(range(0, n, max(1, n // 12)))
    ax.set_ylabel("volume-like output")
    ax.set_title(f"sequence {seq.seq_id}: {n} frames")
    ax.legend(fontsize=7, loc="upper right")
    if "crop" in result:                   # where the LV crop was taken, on the mean frame
        ax.set_position([0.08, 0.42, 0.68, 0.52])
        inset = fig.add_axes([0.79, 0.42, 0.19, 0.52])
        c = result["crop"]
        (r, col), (sr, sc) = c["centre_px"], c["input_mm_per_px"]
        hr, hc = c["side_mm"] / sr / 2, c["side_mm"] / sc / 2
        inset.imshow(np.asarray(seq.frames).mean(axis=0), cmap="gray")
        inset.plot([col - hc, col + hc, col + hc, col - hc, col - hc],
                   [r - hr, r - hr, r + hr, r + hr, r - hr], "y-", lw=1)
        inset.set_title(f"{c['side_mm']:g} mm crop", fontsize=7)
        inset.set_axis_off()
    strip = fig.add_axes([0.08, 0.03, 0.9, 0.3])
    tiles = [np.pad(t, 2, constant_values=1.0 if k == ed else 0.5 if k == es else 0.0)
             for k, t in enumerate(thumbs)]
    strip.imshow(np.concatenate(tiles, axis=1), cmap="gray", vmin=0, vmax=1,
                 extent=(-0.5, n - 0.5, 0, 1), aspect="auto")
    strip.set_axis_off()
    save_figure_atomic(fig, path, dpi=90)
    plt.close(fig)


def decode_input_stacks(done, convention: str, decoder: str):
    """(sequence, result) pairs with ED/ES decoded per patient stack (inference.decode_stacks)."""
    from tempregnet.inference import decode_stacks
    records = [{"group": seq.group, "n_frames": seq.n_frames, "curve": result["curve"],
                "time_s": result["time_s"]} for seq, result in done]
    stacked = decode_stacks(records, convention, decoder)
    return [(seq, {**result, "ed": rec["ed_pred"], "es": rec["es_pred"], "time_s": rec["time_s"],
                   "stack_size": rec["stack_size"]})
            for (seq, result), rec in zip(done, stacked)]


def _square(frames):
    from data_prep.preprocess import centre_square
    return centre_square(np.asarray(frames, dtype=np.float32))
