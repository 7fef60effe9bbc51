"""Detect ED and ES frames in new cine MRI: DICOM folders, NIfTI files or ACDC patient folders in.

    python -m tools.detect STUDY [STUDY ...] --out detections/          # the shipped model
    python -m tools.detect STUDY [STUDY ...] --run runs/demo_tempreg_foldall --out detections/
    python -m tools.detect case001/ --model m.caffemodel --deploy d.prototxt --size 72 --out det/ --plot

Without --run or --model it uses the model shipped in models/ (sha1-checked; docs/detection.md).
Cohorts on a Dask cluster, resumable after a kill: tools.cohort.
For every sequence (one slice of one cine series) found: ED and ES in the original frame
numbering, 0-based and 1-based, the DICOM InstanceNumber of those frames and a confidence in
[0, 1] (tempregnet.labels.decode_detail), written to <out>/detections.json and
<out>/detections.csv; --plot adds <out>/plots/<seq_id>.png (and a thumbnail), --report a review
page <out>/report.html listing every sequence least confident first with its plot.
--stack decodes the slices of one patient's cine stack (same frame count) together, as ED and ES
are phases of the whole stack (not the paper's protocol, which decodes each sequence alone).
Sequences are named by anonymous keys (data_prep.sequence.anonymous_key) and by the position of
their input on the command line: no names, IDs, dates or paths are written. A bad file or
sequence prints one line and the rest goes on; the exit status is 1 if anything failed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from data_prep.errors import InputError, problem_lines
from data_prep.keys import ensure_outside
from tempregnet.detection import (OUTPUT_CSV, OUTPUT_JSON, PLOT_DIR, CSV_COLUMNS,
                                  csv_rows, decode_input_stacks, detection_record, find_inputs,
                                  loaded_sequences, plot_detection, write_detection_report)
from tempregnet.report import REPORT_NAME
from tempregnet.inference import predict_sequence, quiet_caffe
from tempregnet.model_spec import (TTA_TEXT, add_net_arguments, decoding_from_args, load_spec, prior_of,
                                   spec_from_args)
from tempregnet.outputs import OutputExists, refuse_overwrite, write_csv_atomic, write_json_atomic


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("inputs", nargs="+", help="DICOM folders, NIfTI files, ACDC patient folders")
    p.add_argument("--source", choices=("auto", "dicom", "acdc", "nifti", "sunnybrook"),
                   default="auto", help="input type (default: guessed per input)")
    add_net_arguments(p)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--plot", action="store_true",
                   help="write a PNG per sequence (and its thumbnail under plots/thumbs/)")
    p.add_argument("--report", action="store_true",
                   help="also write report.html: every sequence least confident first, with its "
                        "plot (implies --plot; opens from disk; tempregnet.report)")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    from tqdm import tqdm
    quiet_caffe()
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    args.plot = args.plot or args.report
    try:
        refuse_overwrite([out / OUTPUT_JSON, out / OUTPUT_CSV]
                         + ([out / REPORT_NAME] if args.report else []), args.force)
        if args.plot and not args.force and (out / PLOT_DIR).is_dir() \
                and any((out / PLOT_DIR).iterdir()):
            raise OutputExists(f"{out / PLOT_DIR}: holds plots; pass --force to overwrite")
        ensure_outside(out)
        loaded = load_spec(spec_from_args(args))
        decoding = decoding_from_args(loaded, args)
        prior = prior_of(loaded, decoding.es_prior)
    except (InputError, OutputExists, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    records, causes, held_problems = [], [], []

    def problem(err):                   # said once the input is done: one line per file and cause
        held_problems.append(err)

    def say_problems():
        for line in problem_lines(held_problems):
            causes.append(line)
            tqdm.write(f"problem: {line}", file=sys.stderr)
        held_problems.clear()

    def report(index, seq, result):
        rec = detection_record(index, seq, result)
        records.append(rec)
        tqdm.write(f"input {index} sequence {seq.seq_id}: ED {rec['ed_0based']} / ES "
                   f"{rec['es_0based']} (0-based; 1-based {rec['ed_1based']} / "
                   f"{rec['es_1based']}) of {seq.n_frames} frames in {rec['time_s']:.2f} s")
        if args.plot:
            plot_detection(seq, result, out / PLOT_DIR / f"{seq.seq_id}.png", loaded.contract)

    bar = tqdm(args.inputs, desc="studies", unit="study", disable=args.quiet, file=sys.stderr)
    for index, path in enumerate(bar, 1):
        found, problems = find_inputs(path, args.source)
        for err in problems:
            problem(err)
        held = []       # --stack: this input's (sequence, result) until its stacks are decoded
        for item, seq, crop in loaded_sequences(found, loaded.contract, args.input_mm_per_px,
                                                problem):
            try:
                result = predict_sequence(loaded, seq, decoding.decoder, crop=crop,
                                          augment=decoding.augment, prior=prior)
            except InputError as err:       # named by its input file, not the anonymous key
                problem(InputError(item.where, err.problem))
                continue
            except ValueError as err:       # e.g. the net produced NaN: name the sequence
                problem(InputError(getattr(item, "path", path), f"sequence {item.seq_id}: {err}"))
                continue
            if args.stack:
                held.append((seq, result))
            else:                           # reported at once: no input's frames are kept
                report(index, seq, result)
        if held:                            # a stack never spans two inputs
            for seq, result in decode_input_stacks(held, loaded.contract.label, decoding, prior):
                report(index, seq, result)
        say_problems()
        bar.set_postfix(sequences=len(records), problems=len(causes))
    bar.close()

    write_csv_atomic(out / OUTPUT_CSV, csv_rows(records), CSV_COLUMNS)
    write_json_atomic(out / OUTPUT_JSON, {
        "frames": "original frame numbers: *_0based from 0, *_1based from 1; *_instance is the "
                  "DICOM InstanceNumber of that frame (empty for NIfTI)",
        "model": loaded.description, **decoding.describe(),
        "test_augmentation": TTA_TEXT if decoding.augment else "none",
        "decoding": "per stack (not the paper's)" if args.stack else "per sequence",
        "n_inputs": len(args.inputs), "n_sequences": len(records), "n_problems": len(causes),
        "sequences": records})
    if args.report:
        write_detection_report(out, records, causes, args.inputs, loaded.description, decoding.decoder,
                               args.stack)
    times = [r["time_s"] for r in records]
    print(f"{len(records)} sequences from {len(args.inputs)} inputs"
          + (f", {np.mean(times):.2f} s per sequence" if times else "")
          + f"; {len(causes)} problems; wrote {out / OUTPUT_JSON} and {out / OUTPUT_CSV}"
          + (f" and {out / REPORT_NAME}" if args.report else ""))
    return 1 if causes or not records else 0


if __name__ == "__main__":
    sys.exit(main())
