"""Prepare a dataset: cine MRI in, <OUT>/sequences.h5 + split lists out (python -m data_prep.prepare -h).

    python -m data_prep.prepare --recipe acdc ../shared/data/acdc data/prepared/acdc
    python -m data_prep.prepare --source dicom IN OUT --size 72 --roi 0.5 [--label paper]

With --recipe, the source, stored size, steps, label convention and ROI are the recipe's (its
sequence contract); without, they are given one by one. The contract goes into the provenance.
"""
from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from data_prep.errors import InputError, problem_lines
from data_prep.hdf5 import H5_NAME, SequenceWriter
from data_prep.physical import (CROPS_ABOUT, CROPS_NAME, CROPS_PLOT, crop_summary, plot_crops,
                                stack_steps)
from data_prep.preprocess import prepare_sequence, row_from_steps
from data_prep.pixel_size import ESTIMATE
from data_prep.scale import RESAMPLE
from data_prep.readers import SOURCES, find_sequences
from data_prep.splits import DEFAULT_FOLDS, DEFAULT_SEED, assign_folds, write_splits
from models.config import N_STEPS, ZF
from tempregnet.contract import SequenceContract
from tempregnet.labels import CONVENTIONS
from tempregnet.outputs import write_json_atomic

# Without --recipe: the paper's frames (the zf config's stored size), whole field of view, cycle labels.
PLAIN = dict(size=ZF.stored_size, roi=1.0, steps=N_STEPS, label="cycle", seed=DEFAULT_SEED)


class Stop(Exception):
    """--on-error stop met a problem (already printed)."""


def parse_args(argv=None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m data_prep.prepare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="input folder (acdc: the dataset root or one patient folder)")
    p.add_argument("out", help="output folder (created; refused if it exists, unless --force)")
    p.add_argument("--recipe", help="prepare the data of this recipe (recipes/<name>.toml): "
                                    "source, size, steps, label, ROI and split seed from it")
    p.add_argument("--test-data", action="store_true",
                   help="with --recipe: its test data ([test_data]) rather than its training data")
    p.add_argument("--source", choices=SOURCES)
    p.add_argument("--size", type=int, help=f"stored frame side S (default {PLAIN['size']})")
    p.add_argument("--roi", type=float,
                   help="keep this central fraction of the square field of view before resizing "
                        "(default 1: the whole frame, as the paper)")
    p.add_argument("--mm-per-px", type=float,
                   help="physical scale (docs/scale-and-crop.md): every stored pixel this many mm, "
                        "a square of MM_PER_PX x SIZE mm around the crop centre, on every scanner "
                        "(default: off, the scanner's own field of view, as the paper)")
    p.add_argument("--crop", choices=("lv", "image centre"),
                   help="with --mm-per-px: centre the square on the LV found in the images (lv, "
                        "the default) or on the image centre")
    p.add_argument("--input-mm-per-px", type=float,
                   help="with a physical scale: the input pixel size of sequences whose header "
                        "states none (no PixelSpacing, or NIfTI's 1 x 1 x 1 placeholder); "
                        "default: estimated from the images (docs/scale-and-crop.md)")
    p.add_argument("--plot-crops", action="store_true",
                   help=f"with --mm-per-px: draw every sequence's crop on its mean frame "
                        f"(OUT/{CROPS_PLOT})")
    p.add_argument("--steps", type=int, help=f"time steps per sequence (default {PLAIN['steps']})")
    p.add_argument("--label", choices=CONVENTIONS, help="Eq. 4 convention (default cycle)")
    p.add_argument("--folds", type=int, default=DEFAULT_FOLDS, help="patient-level folds")
    p.add_argument("--seed", type=int, help=f"split seed (default {DEFAULT_SEED})")
    p.add_argument("--labels", help="dicom: ED/ES CSV (series_uid,ed,es[,slice_position]); "
                                    "default INPUT/labels.csv when present")
    p.add_argument("--force", action="store_true", help="replace an existing OUT")
    p.add_argument("--on-error", choices=("skip", "stop"), default="skip",
                   help="a bad sequence is skipped (listed in the summary) or stops the run")
    p.add_argument("--strict", action="store_true", help="exit non-zero if anything was skipped")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="decoding processes (1: no pool)")
    args = p.parse_args(argv)
    given = [k for k in ("source", "size", "roi", "steps", "label", "seed", "mm_per_px", "crop")
             if getattr(args, k) is not None]
    if args.input_mm_per_px is not None and not args.input_mm_per_px > 0:
        p.error("--input-mm-per-px must be > 0")
    if args.recipe:
        if given:
            p.error(f"--recipe sets {', '.join('--' + k for k in given)}; give one or the other")
        from tempregnet.recipes import load_recipe
        try:
            recipe = load_recipe(args.recipe)
            which = "test_data" if args.test_data else "data"
            args.contract = recipe.contract(which)
        except (InputError, ValueError) as err:
            p.error(str(err))
        spec = getattr(recipe, which)
        # a synthetic cohort is written as DICOM (data_prep.synthetic)
        args.source = "dicom" if spec.source == "synthetic" else spec.source
        args.seed = spec.seed
    else:
        if args.test_data:
            p.error("--test-data needs --recipe")
        if args.source is None:
            p.error("give --recipe, or --source (and optionally --size, --roi, --steps, --label)")
        for key, value in PLAIN.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
        if args.size < 1 or args.steps < 2:
            p.error("--size must be >= 1 and --steps >= 2")
        if not 0 < args.roi <= 1:
            p.error("--roi must be in (0, 1]")
        if args.mm_per_px is None and args.crop:
            p.error("--crop needs --mm-per-px")
        crop = "centre square" if args.mm_per_px is None else (args.crop or "lv")
        try:
            args.contract = SequenceContract(steps=args.steps, stored_size=args.size,
                                             label=args.label, roi=args.roi, crop=crop,
                                             mm_per_px=args.mm_per_px)
        except ValueError as err:
            p.error(str(err))
    if args.plot_crops and not args.contract.physical:
        p.error("--plot-crops needs a physical scale (--mm-per-px, or a recipe with mm_per_px)")
    if args.input_mm_per_px is not None and not args.contract.physical:
        p.error("--input-mm-per-px needs a physical scale (--mm-per-px, or a recipe with "
                "mm_per_px)")
    return args


def _prepare_one(job):
    """Worker: [(index in job, row or (path, problem), crop record or None)] for one job's items.

    A plain job is one sequence; a physical one (contract.mm_per_px) one patient's stack, whose
    LV crops are found together. InputErrors come back as (path, problem, file): they do not
    pickle.
    """
    items, contract, input_mm_per_px = job
    if not contract.physical:
        item = items[0]
        try:
            row = prepare_sequence(item.load(), contract, where=item.where)
        except InputError as exc:
            row = exc.as_tuple()
        return [(0, row, None)]
    out, seqs, wheres, index = [], [], [], {}
    for k, item in enumerate(items):
        try:
            seqs.append(item.load())
            wheres.append(item.where)
            index[id(seqs[-1])] = k
        except InputError as exc:
            out.append((k, exc.as_tuple(), None))
    for seq, steps_or_error, record in stack_steps(seqs, contract, input_mm_per_px, wheres):
        if isinstance(steps_or_error, InputError):
            k = index[id(seq)] if seq is not None else _index_of(items, steps_or_error)
            out.append((k, steps_or_error.as_tuple(), None))
            continue
        k = index[id(seq)]
        try:
            out.append((k, row_from_steps(seq, steps_or_error, contract, items[k].where), record))
        except InputError as exc:
            out.append((k, exc.as_tuple(), None))
    return sorted(out, key=lambda r: r[0])


def _index_of(items, exc: InputError) -> int:
    """The item an error of the spacing pass names (by its where text)."""
    return next((k for k, item in enumerate(items) if item.where == exc.path), 0)


def _batches(found, contract) -> list[list[int]]:
    """Indices of `found` per job: one sequence each, or (physical) one patient's stack each."""
    if not contract.physical:
        return [[k] for k in range(len(found))]
    by_group: dict = {}
    for k, item in enumerate(found):
        by_group.setdefault(item.group, []).append(k)
    return list(by_group.values())


def _scrub(problem: str) -> str:
    """A problem without the paths some messages quote (paths may hold patient names)."""
    return re.sub(r"\S*[/\\]\S*", "<path>", problem)


def _code_version() -> str:
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                             text=True, timeout=10, cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _library_versions() -> dict:
    import cv2
    import h5py
    import nibabel
    import pydicom
    return {"python": sys.version.split()[0], "numpy": np.__version__, "h5py": h5py.__version__,
            "pydicom": pydicom.__version__, "nibabel": nibabel.__version__, "opencv": cv2.__version__}


@contextlib.contextmanager
def _results(jobs, workers: int):
    """Prepared rows (or (path, problem)) in job order, from a process pool when workers > 1."""
    if workers <= 1 or len(jobs) < 2:
        yield map(_prepare_one, jobs)
        return
    with multiprocessing.get_context("fork").Pool(min(workers, len(jobs))) as pool:
        yield pool.imap(_prepare_one, jobs, chunksize=4)


def run(args) -> int:
    """Prepare into a temporary folder beside OUT, then rename it to OUT; returns the exit code."""
    from tqdm import tqdm
    out = Path(args.out)
    if out.exists() and not args.force:
        print(f"{out}: exists; pass --force to replace it", file=sys.stderr)
        return 1
    tic = time.perf_counter()
    problems: list[InputError] = []

    def problem(exc: InputError):
        problems.append(exc)
        if args.on_error == "stop":
            tqdm.write(f"error: {exc}", file=sys.stderr)
            raise Stop

    def say_problems():              # one line per file and cause (errors.problem_lines)
        for line in problem_lines(problems):
            print(f"skipped: {line}", file=sys.stderr)

    found, scan_problems = find_sequences(args.source, args.input, args.labels, args.workers)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{out.name}.tmp-", dir=out.parent))
    writer = None
    try:
        for exc in scan_problems:
            problem(exc)
        if not found:
            say_problems()
            print(f"{args.input}: no sequences to write", file=sys.stderr)
            return 1
        contract = args.contract
        batches = _batches(found, contract)
        jobs = [([found[k] for k in batch], contract, args.input_mm_per_px) for batch in batches]
        groups, seen, resampled, unlabelled = [], set(), Counter(), 0
        crops, spacing_from = [], Counter()
        order = {}                  # group -> fold order key (data_prep.keys; never written)
        bar = tqdm(total=len(found), unit="seq", desc="prepare", file=sys.stderr)
        with _results(jobs, args.workers) as results:       # fork the pool before opening HDF5
            writer = SequenceWriter(tmp / H5_NAME, contract)
            for batch, job_results in zip(batches, results):
                for k, result, crop in job_results:
                    bar.update(1)
                    item = found[batch[k]]
                    if isinstance(result, tuple):
                        problem(InputError(*result))
                        continue
                    if result.seq_id in seen:
                        problem(InputError(item.where, "duplicate sequence: same series and "
                                                       "slice as one already written"))
                        continue
                    seen.add(result.seq_id)
                    writer.append(result)
                    groups.append(result.group)
                    order[result.group] = result.group_order
                    unlabelled += result.ed < 0
                    if result.n_frames != contract.steps:
                        resampled[result.n_frames] += 1
                    if crop is not None:
                        crops.append(dict(crop, row=len(groups) - 1))
                        spacing_from[crop["spacing_from"]] += 1
        bar.close()
        say_problems()
        if not groups:
            print(f"{args.input}: every sequence was skipped; nothing written", file=sys.stderr)
            return 1
        splits = _splits(tmp, groups, order, args)
        summary = {
            "written": len(groups), "patients": len(set(groups)), "unlabelled": unlabelled,
            "skipped": len(problems), "problem_lines": len(problem_lines(problems)),
            "skipped_reasons": dict(Counter(_scrub(p.problem) for p in problems)),
            "resampled_from_frames": {str(k): v for k, v in sorted(resampled.items())},
        }
        if contract.physical:
            summary["input_spacing_from"] = dict(spacing_from)
            summary.update(crop_summary(crops))
            write_json_atomic(tmp / CROPS_NAME, {"about": CROPS_ABOUT, "sequences": crops})
            if args.plot_crops:
                plot_crops(found, batches, crops, contract, tmp / CROPS_PLOT)
        writer.close(_provenance(args, summary, splits))
        writer = None
        _publish(tmp, out)
    except Stop:
        return 1
    except KeyboardInterrupt:
        print("interrupted: nothing written", file=sys.stderr)
        return 130
    finally:
        if writer is not None:
            writer.abort()
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    _print_summary(out, summary, splits, args, time.perf_counter() - tic)
    return 1 if (args.strict and problems) else 0


def _splits(folder: Path, groups: list[str], order: dict[str, str], args) -> dict:
    try:
        assign_folds(groups, args.folds, args.seed, order)
    except ValueError as exc:          # too few patients: all.txt only, said in the summary
        (folder / "all.txt").write_text("".join(f"{H5_NAME} {r}\n" for r in range(len(groups))))
        return {"k": 0, "note": f"no folds: {exc}"}
    return write_splits(folder, groups, H5_NAME, args.folds, args.seed, order)


def _provenance(args, summary: dict, splits: dict) -> dict:
    return {
        "source": args.source,
        "input": os.path.basename(os.path.normpath(args.input)),   # basename only: paths may hold names
        "recipe": args.recipe,          # the sequence contract itself is added by the writer
        "parameters": {"folds": args.folds, "seed": args.seed, "on_error": args.on_error,
                       **({"input_mm_per_px": args.input_mm_per_px, "resample": RESAMPLE,
                           "pixel_size_estimate": ESTIMATE}
                          if args.contract.physical else {})},
        "counts": summary,
        "splits": {k: v for k, v in splits.items() if k != "folds"},
        "code_version": _code_version(),
        "libraries": _library_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _publish(tmp: Path, out: Path) -> None:
    """Rename the finished folder onto OUT; an old OUT (--force) is moved aside first, then removed."""
    old = None
    if out.exists():
        old = out.with_name(f"{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()


def _print_summary(out: Path, s: dict, splits: dict, args, seconds: float) -> None:
    print(f"wrote {s['written']} sequences of {s['patients']} patients to {out / H5_NAME} "
          f"in {seconds:.1f} s ({s['written'] / max(seconds, 1e-9):.1f} sequences/s)")
    if s["unlabelled"]:
        print(f"  {s['unlabelled']} sequences have no ED/ES (ed = es = -1, label NaN)")
    for n, count in s["resampled_from_frames"].items():
        print(f"  resampled {n} -> {args.contract.steps} frames: {count} sequences")
    c = args.contract
    if c.physical:
        print(f"  {c.crop} crop of {c.field_mm:g} mm at {c.stored_size} px ({c.mm_per_px:.4g} mm "
              f"per stored pixel); input pixel size from "
              + ", ".join(f"{k}: {v}" for k, v in sorted(s["input_spacing_from"].items()))
              + f"; LV radius found (mm) {s['lv_radius_mm_found']}; per row in {CROPS_NAME}")
    print(f"  skipped {s['skipped']}" + (":" if s["skipped"] else ""))
    for reason, count in sorted(s["skipped_reasons"].items()):
        print(f"    {count} x {reason}")
    if splits.get("k"):
        print(f"  {splits['k']} patient-level folds (seed {splits['seed']}): fold<k>_train.txt, "
              f"fold<k>_test.txt, all.txt, splits.json")
    else:
        print(f"  {splits['note']}; wrote all.txt only")


def main(argv=None) -> int:
    """Entry point."""
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
