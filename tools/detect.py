"""Detect ED and ES frames in new cine MRI: DICOM folders, NIfTI files or ACDC patient folders in.

    python -m tools.detect STUDY [STUDY ...] --run runs/small_tempreg_foldall --out detections/
    python -m tools.detect case001/ --model m.caffemodel --deploy d.prototxt --size 72 --out det/ --plot

For every sequence (one slice of one cine series) found: ED and ES in the original frame
numbering, 0-based and 1-based, and the DICOM InstanceNumber of those frames, written to
<out>/detections.json and <out>/detections.csv; --plot adds <out>/plots/<seq_id>.png.
--stack decodes the slices of one patient's cine stack (same frame count) together, as ED and ES
are phases of the whole stack (not the paper's protocol, which decodes each sequence alone).
Sequences are named by anonymous keys (data_prep.sequence.anonymous_key) and by the position of
their input on the command line: no names, IDs, dates or paths are written. A bad file or
sequence prints one line and the rest goes on; the exit status is 1 if anything failed.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import numpy as np

from data_prep.errors import InputError
from data_prep.labels import CONVENTIONS, DECODERS, step_positions, steps_to_frames
from data_prep.physical import crop_record
from tools.outputs import (OutputExists, refuse_overwrite, save_figure_atomic, write_csv_atomic,
                           write_json_atomic)

OUTPUT_JSON, OUTPUT_CSV, PLOT_DIR = "detections.json", "detections.csv", "plots"
CSV_COLUMNS = ["input", "seq_id", "slice", "n_frames", "ed_0based", "es_0based", "ed_1based",
               "es_1based", "ed_instance", "es_instance", "ed_true_0based", "es_true_0based",
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


def plot_detection(seq, result: dict, path) -> None:
    """PNG: the predicted curve on the original frames, ED/ES marked, over a strip of the frames."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from data_prep.preprocess import resize_frames, squash, squash_range
    n = seq.n_frames
    curve = result["curve"]
    ed, es = result["ed"], result["es"]
    square = _square(seq.frames)
    thumbs = resize_frames(squash(square, *squash_range(square)).astype(np.float32),
                           THUMBNAIL_PX) / 255.0
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
    """(sequence, result) pairs with ED/ES decoded per patient stack (tools.predict.decode_stacks)."""
    from tools.predict import decode_stacks
    records = [{"group": seq.group, "n_frames": seq.n_frames, "curve": result["curve"],
                "time_s": result["time_s"]} for seq, result in done]
    stacked = decode_stacks(records, convention, decoder)
    return [(seq, {**result, "ed": rec["ed_pred"], "es": rec["es_pred"], "time_s": rec["time_s"],
                   "stack_size": rec["stack_size"]})
            for (seq, result), rec in zip(done, stacked)]


def _square(frames):
    from data_prep.preprocess import centre_square
    return centre_square(np.asarray(frames, dtype=np.float32))


def _loaded(found, loaded, fallback_mm, problem):
    """(item, sequence, crop) per found sequence; crop = (spacing, HeartCrop, spacing source)
    for a model trained on fixed-mm frames (LV crops found per patient stack), else None."""
    if not loaded.physical:
        for item in found:
            try:
                yield item, item.load(), None
            except InputError as err:
                problem(err)
        return
    from data_prep.physical import stack_crops
    params = dict(loaded.scale, input_mm_per_px_fallback=fallback_mm)
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
        placed, problems = stack_crops([q for _, q in pairs], params, [i.where for i, _ in pairs])
        for err in problems:
            problem(err)
        by_seq = {id(seq): (sp, crop, how) for seq, sp, how, crop, _ in placed}
        for item, seq in pairs:
            if id(seq) in by_seq:
                yield item, seq, by_seq[id(seq)]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("inputs", nargs="+", help="DICOM folders, NIfTI files, ACDC patient folders")
    p.add_argument("--source", choices=("auto", "dicom", "acdc", "nifti", "sunnybrook"),
                   default="auto", help="input type (default: guessed per input)")
    net = p.add_mutually_exclusive_group(required=True)
    net.add_argument("--run", help="training run directory (tools/train.py)")
    net.add_argument("--model", help="caffemodel (with --deploy)")
    p.add_argument("--deploy", help="deploy prototxt (with --model)")
    p.add_argument("--size", type=int, help="stored frame side the model was trained on (--model)")
    p.add_argument("--roi", type=float,
                   help="central field-of-view fraction to keep: by default what the run's "
                        "training data kept (1.0 with --model); set it when this data's field of "
                        "view differs (e.g. 0.4 for full 350 mm frames and a model trained on "
                        "heart-cropped ACDC)")
    p.add_argument("--crop", type=int, help="net input side (--model; default: from the deploy)")
    p.add_argument("--mm-per-px", type=float,
                   help="input pixel size for sequences whose header states none, when the model "
                        "was trained on fixed-mm frames (prepare --field-mm)")
    p.add_argument("--label", choices=CONVENTIONS, default="cycle",
                   help="label convention the model was trained with (--model)")
    p.add_argument("--decoder", choices=DECODERS, default="fit")
    p.add_argument("--stack", action="store_true",
                   help="one ED/ES per patient stack: the standardised curves of its slices "
                        "(same frame count) averaged and decoded once (not the paper's protocol)")
    p.add_argument("--gpu", type=int, default=None, help="GPU id (default CPU)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--plot", action="store_true", help="write a PNG per sequence")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _load_model(args):
    from tools import predict
    if args.roi is not None and not 0 < args.roi <= 1:
        raise ValueError("--roi must be in (0, 1]")
    if args.run:
        loaded = predict.load_run(args.run, gpu=args.gpu)
        return loaded if args.roi is None else dataclasses.replace(loaded, roi=args.roi)
    if not args.deploy or not args.size:
        raise ValueError("--model needs --deploy and --size (the stored frame side it was "
                         "trained on, e.g. 72 for config small, 224 for zf)")
    return predict.load_net(args.deploy, args.model, crop=args.crop, convention=args.label,
                            stored_size=args.size, roi=args.roi or 1.0, gpu=args.gpu)


def main(argv=None) -> int:
    from tqdm import tqdm
    from tools import predict
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    try:
        refuse_overwrite([out / OUTPUT_JSON, out / OUTPUT_CSV], args.force)
        if args.plot and not args.force and (out / PLOT_DIR).is_dir() \
                and any((out / PLOT_DIR).iterdir()):
            raise OutputExists(f"{out / PLOT_DIR}: holds plots; pass --force to overwrite")
        loaded = _load_model(args)
    except (InputError, OutputExists, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    records, n_problems = [], 0

    def problem(err):
        nonlocal n_problems
        n_problems += 1
        tqdm.write(f"problem: {err}", file=sys.stderr)

    def report(index, seq, result):
        rec = detection_record(index, seq, result)
        records.append(rec)
        tqdm.write(f"input {index} sequence {seq.seq_id}: ED {rec['ed_0based']} / ES "
                   f"{rec['es_0based']} (0-based; 1-based {rec['ed_1based']} / "
                   f"{rec['es_1based']}) of {seq.n_frames} frames in {rec['time_s']:.2f} s")
        if args.plot:
            plot_detection(seq, result, out / PLOT_DIR / f"{seq.seq_id}.png")

    bar = tqdm(args.inputs, desc="studies", unit="study", disable=args.quiet, file=sys.stderr)
    for index, path in enumerate(bar, 1):
        found, problems = find_inputs(path, args.source)
        for err in problems:
            problem(err)
        held = []       # --stack: this input's (sequence, result) until its stacks are decoded
        for item, seq, crop in _loaded(found, loaded, args.mm_per_px, problem):
            try:
                result = predict.predict_sequence(loaded, seq, args.decoder, crop=crop)
            except InputError as err:
                problem(err)
                continue
            except ValueError as err:       # e.g. the net produced NaN: name the sequence
                problem(InputError(getattr(item, "path", path), f"sequence {item.seq_id}: {err}"))
                continue
            if crop is not None:
                result["crop"] = crop_record(seq.seq_id, crop[0], crop[2], crop[1])
            if args.stack:
                held.append((seq, result))
            else:                           # reported at once: no input's frames are kept
                report(index, seq, result)
        if held:                            # a stack never spans two inputs
            for seq, result in decode_input_stacks(held, loaded.convention, args.decoder):
                report(index, seq, result)
        bar.set_postfix(sequences=len(records), problems=n_problems)
    bar.close()

    write_csv_atomic(out / OUTPUT_CSV, records, CSV_COLUMNS)
    write_json_atomic(out / OUTPUT_JSON, {
        "frames": "original frame numbers: *_0based from 0, *_1based from 1; *_instance is the "
                  "DICOM InstanceNumber of that frame (empty for NIfTI)",
        "model": loaded.description, "decoder": args.decoder,
        "decoding": "per stack (not the paper's)" if args.stack else "per sequence",
        "n_inputs": len(args.inputs), "n_sequences": len(records), "n_problems": n_problems,
        "sequences": records})
    times = [r["time_s"] for r in records]
    print(f"{len(records)} sequences from {len(args.inputs)} inputs"
          + (f", {np.mean(times):.2f} s per sequence" if times else "")
          + f"; {n_problems} problems; wrote {out / OUTPUT_JSON} and {out / OUTPUT_CSV}")
    return 1 if n_problems or not records else 0


if __name__ == "__main__":
    sys.exit(main())
