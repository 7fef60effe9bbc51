"""Cohort detection on a dask.distributed cluster: one task per study, results kept per study.

Dask does the scheduling, the retries after a lost worker and the cluster (a LocalCluster here,
an existing scheduler, or dask-jobqueue on SLURM/PBS); this module adds what is ours:

- each worker process loads the net once (`worker_net`, warmed by `NetPlugin` when the worker
  joins) and keeps it; a lock serialises its forward passes when a worker runs several threads;
- the client writes `<out>/studies/<study>.json` atomically as each study finishes, so a kill of
  the client, the scheduler or a worker loses at most the studies in flight, and a rerun of the
  same command skips every study whose file is there;
- `<out>/manifest.json` (settings, every study's status) and the merged `detections.csv/.json`
  are rebuilt from those files, so they equal an uninterrupted run's byte for byte (timings live
  only in the per-study files).

Study keys are keyed hashes of the input's absolute path (data_prep.keys): no path, name, ID or
date is written. Messages about bad inputs print their paths on the console only.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import sys
import threading
import time
from pathlib import Path

from distributed import WorkerPlugin

from data_prep import keys
from data_prep.errors import InputError, problem_lines
from tempregnet import detection
from tempregnet.decoding import Decoding
from tempregnet.detection import OUTPUT_CSV, OUTPUT_JSON
from tempregnet.model_spec import ModelSpec, load_spec
from tempregnet.outputs import write_bytes_atomic, write_csv_atomic, write_json_atomic

FORMAT = "tempregnet cohort 1"
STUDIES_DIR, MANIFEST = "studies", "manifest.json"
# tools.detect's columns with the study's key, without the time (so a resumed run's files equal
# an uninterrupted run's)
CSV_COLUMNS = ["input", "study"] + [c for c in detection.CSV_COLUMNS if c not in ("input", "time_s")]
STAGES = ("read", "preprocess", "forward", "decode")
PICTURES = "pictures"      # a study task's plots (seq_id, PNG, thumbnail PNG), written as files
PLUGIN_NAME = "tempregnet-net"
# glibc's allocator in LocalCluster workers. Dask's default (MALLOC_TRIM_THRESHOLD_=65536, to
# hand freed memory back at once) also pins the mmap threshold at 128 KiB, so every frame-sized
# numpy array is mapped and page-faulted anew: a study took 1.8x the time (docs/scale-and-crop.md,
# issue 23). Arrays under 32 MiB come from the heap instead; up to 1 MiB free at its top is kept.
# Variables set in the environment win, as dask has it.
WORKER_MALLOC = {"MALLOC_MMAP_THRESHOLD_": 32 * 2 ** 20, "MALLOC_TRIM_THRESHOLD_": 2 ** 20}
LIST_COLUMN = "path"


class CohortError(Exception):
    """A problem that stops the whole cohort (bad list, other settings in --out, secret mismatch)."""


@dataclasses.dataclass(frozen=True)
class Study:
    """One input of the cohort: its position (1-based), path and keyed name."""
    input: int
    path: str
    key: str


@dataclasses.dataclass(frozen=True)
class Options:
    """What decides a study's result besides its input; a rerun must match it."""
    spec: ModelSpec
    source: str = "auto"
    decoding: Decoding = Decoding()           # decoder, test-time views, stack weights, prior
    stack: bool = False
    input_mm_per_px: float | None = None     # override for headers without a pixel size
    report: bool = False                      # plots per sequence and report.html (tempregnet.report)


# --- the study list ---------------------------------------------------------------------------

def read_list(path) -> list[str]:
    """Study paths from a list file: a CSV with a 'path' column, else one path per line;
    relative paths are relative to the list file's folder."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise CohortError(f"{path}: cannot read the study list ({exc.strerror})") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if lines and LIST_COLUMN in [c.strip() for c in next(csv.reader([lines[0]]))]:
        rows = csv.DictReader(lines)
        entries = [(row.get(LIST_COLUMN) or "").strip() for row in rows]
    else:
        entries = [line.strip() for line in lines if not line.lstrip().startswith("#")]
    entries = [e for e in entries if e]
    if not entries:
        raise CohortError(f"{path}: the study list is empty")
    return [e if os.path.isabs(e) else str(path.parent / e) for e in entries]


def make_studies(paths) -> list[Study]:
    """Numbered, keyed studies; the same path twice is an error."""
    studies, seen = [], {}
    for i, p in enumerate(paths, 1):
        absolute = os.path.abspath(p)
        if absolute in seen:
            raise CohortError(f"{p}: listed twice (inputs {seen[absolute]} and {i})")
        seen[absolute] = i
        studies.append(Study(i, str(p), keys.keyed_key("study", absolute)))
    return studies


# --- on the worker ----------------------------------------------------------------------------

_NETS: dict = {}                 # ModelSpec -> (LoadedNet, lock), one per worker process
_NETS_LOCK = threading.Lock()


def worker_net(spec: ModelSpec):
    """(net, lock) of this process, loaded at the first call and kept."""
    with _NETS_LOCK:
        if spec not in _NETS:
            _NETS[spec] = (load_spec(spec), threading.Lock())
        return _NETS[spec]


class NetPlugin(WorkerPlugin):
    """Dask worker plugin: loads the net when a worker joins (restarted ones too), so a model
    that cannot load fails at registration, not in the middle of the cohort."""
    idempotent = False

    def __init__(self, spec: ModelSpec, fingerprint: str):
        self.spec, self.fingerprint = spec, fingerprint

    def setup(self, worker=None):
        check_secret(self.fingerprint)
        try:
            worker_net(self.spec)
        except (InputError, ValueError) as exc:      # InputError does not survive pickling
            raise CohortError(str(exc)) from None


def check_secret(fingerprint: str) -> None:
    """CohortError unless this process keys identities with the client's secret."""
    mine = keys.fingerprint()
    if mine != fingerprint:
        raise CohortError(f"this worker's identity secret ({keys.secret_path()}, fingerprint "
                          f"{mine}) is not the client's ({fingerprint}): point "
                          f"{keys.SECRET_ENV} at one shared copy on every machine")


def _scrub(text: str) -> str:
    from data_prep.prepare import _scrub as scrub_paths
    return scrub_paths(text)


def detect_study(study: Study, options: Options, fingerprint: str) -> dict:
    """Task: every sequence of one study -> its result (detections, problems, stage times).

    Problems with the input (corrupt file, bad sequence) are part of the result, one line per
    file and cause; the console line keeps the path, the written cause has paths scrubbed."""
    from tempregnet.detection import (decode_input_stacks, detection_record, find_inputs,
                                      loaded_sequences)
    from tempregnet.inference import predict_sequence
    from tempregnet.model_spec import prior_of
    check_secret(fingerprint)
    loaded, lock = worker_net(options.spec)
    decoding = options.decoding
    prior = prior_of(loaded, decoding.es_prior)
    times = dict.fromkeys(STAGES, 0.0)
    records, problems = [], []
    tic = time.perf_counter()
    found, scan_problems = find_inputs(study.path, options.source)
    times["read"] += time.perf_counter() - tic
    problems += scan_problems
    done = []
    sequences = loaded_sequences(found, loaded.contract, options.input_mm_per_px,
                                 problems.append)
    while True:
        tic = time.perf_counter()
        item_seq_crop = next(sequences, None)     # reading (and the LV crops of a stack)
        times["read"] += time.perf_counter() - tic
        if item_seq_crop is None:
            break
        item, seq, crop = item_seq_crop
        try:
            with lock:
                result = predict_sequence(loaded, seq, decoding.decoder, crop=crop,
                                          augment=decoding.augment, prior=prior)
        except InputError as err:            # named by its input file, not the anonymous key
            problems.append(InputError(item.where, err.problem))
            continue
        except ValueError as err:            # e.g. the net produced NaN: name the sequence
            problems.append(InputError(getattr(item, "path", study.path),
                                       f"sequence {item.seq_id}: {err}"))
            continue
        for stage, seconds in result["stage_s"].items():
            times[stage] += seconds
        done.append((seq, result))
    if options.stack and done:
        done = decode_input_stacks(done, loaded.contract.label, decoding, prior)
    pictures = []
    for seq, result in done:
        rec = detection_record(study.input, seq, result)
        rec.pop("time_s")
        records.append({"input": study.input, "study": study.key, **rec})
        if options.report:                   # drawn here, where the frames are; written by the client
            from tempregnet.detection_plot import render_detection
            pictures.append((seq.seq_id, *render_detection(seq, result, loaded.contract)))
    status = "ok" if not problems else ("partial" if records else "failed")
    return {"study": study.key, "input": study.input, "status": status,
            "n_sequences": len(records), "problems": problem_lines(problems), "sequences": records,
            "times_s": times, **({PICTURES: pictures} if options.report else {})}


# --- on the client ----------------------------------------------------------------------------

def settings_of(options: Options, studies: list[Study], description: dict) -> dict:
    """What a rerun must share with the run in --out: the net (sha1), decoding, the studies."""
    listing = hashlib.sha256("\n".join(s.key for s in studies).encode()).hexdigest()[:16]
    return {"format": FORMAT, "model": description, "sha1": options.spec.sha1,
            "roi": options.spec.roi, "input_mm_per_px": options.input_mm_per_px,
            "test_augmentation": options.decoding.augment,
            "source": options.source, "decoder": options.decoding.decoder,
            "decoding": "per stack (not the paper's)" if options.stack else "per sequence",
            "n_studies": len(studies), "studies_digest": listing,
            "secret_fingerprint": keys.fingerprint(),
            **({"report": True} if options.report else {}),
            **({"es_prior": options.decoding.es_prior} if options.decoding.es_prior else {}),
            **({"stack_weights": options.decoding.stack_weights}
               if options.stack and options.decoding.stack_weights != "equal" else {})}


def _written(result: dict) -> dict:
    """A result as written: causes without paths."""
    return {**result, "problems": [_scrub(p) for p in result["problems"]]}


def study_file(out: Path, study: Study) -> Path:
    return out / STUDIES_DIR / f"{study.key}.json"


def load_done(out: Path, studies: list[Study]) -> dict[str, dict]:
    """Results already written (a file that does not parse is treated as missing)."""
    done = {}
    for s in studies:
        path = study_file(out, s)
        if path.is_file():
            try:
                done[s.key] = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
    return done


def write_manifest(out: Path, settings: dict, studies: list[Study], done: dict) -> None:
    """manifest.json: the settings and each study's status (missing until its file is there)."""
    write_json_atomic(out / MANIFEST, {
        **settings,
        "n_done": len(done), "n_missing": len(studies) - len(done),
        "studies": [{"input": s.input, "study": s.key,
                     "status": done[s.key]["status"] if s.key in done else "missing",
                     "n_sequences": done[s.key]["n_sequences"] if s.key in done else 0}
                    for s in studies]})


def check_out(out: Path, settings: dict) -> None:
    """CohortError if --out holds a cohort run with other settings."""
    path = out / MANIFEST
    if not path.is_file():
        if out.is_dir() and any(out.iterdir()) and not (out / STUDIES_DIR).is_dir():
            raise CohortError(f"{out}: exists and is not a cohort output; choose another --out")
        return
    try:
        before = json.loads(path.read_text())
    except ValueError:
        return                                # rebuilt from the study files
    keys_ = ("format", "sha1", "roi", "input_mm_per_px", "test_augmentation", "source",
             "decoder", "decoding", "studies_digest", "secret_fingerprint", "report", "es_prior",
             "stack_weights")
    differ = [k for k in keys_ if before.get(k) != settings.get(k)]
    if differ:
        raise CohortError(f"{out}: holds a cohort run with other {', '.join(differ)}; rerun "
                          "with the same studies and options, or choose another --out")


def merge(out: Path, settings: dict, studies: list[Study], done: dict) -> dict:
    """detections.csv/.json from the study files, in input order (timings left out)."""
    sequences, summary = [], []
    for s in studies:
        r = done[s.key]
        sequences += r["sequences"]
        summary.append({"input": s.input, "study": s.key, "status": r["status"],
                        "n_sequences": r["n_sequences"], "problems": r["problems"]})
    n_problems = sum(len(r["problems"]) for r in summary)
    write_csv_atomic(out / OUTPUT_CSV, detection.csv_rows(sequences), CSV_COLUMNS)
    write_json_atomic(out / OUTPUT_JSON, {
        "frames": "original frame numbers: *_0based from 0, *_1based from 1; *_instance is the "
                  "DICOM InstanceNumber of that frame (empty for NIfTI)",
        **{k: v for k, v in settings.items() if k != "secret_fingerprint"},
        "n_sequences": len(sequences), "n_problems": n_problems,
        "studies": summary, "sequences": sequences})
    return {"n_sequences": len(sequences), "n_problems": n_problems,
            "n_failed_studies": sum(r["status"] != "ok" for r in summary)}


def start_client(scheduler: str | None, workers: int, threads: int):
    """A distributed.Client: on an existing scheduler, or on a new LocalCluster of processes."""
    import logging
    from distributed import Client, LocalCluster
    # distributed logs a traceback for a lost scheduler; run_cohort says it in one line
    logging.getLogger("distributed.client").setLevel(logging.CRITICAL)
    if scheduler:
        return Client(scheduler, timeout="30s")
    import dask
    with dask.config.set({f"distributed.nanny.pre-spawn-environ.{k}": v
                          for k, v in WORKER_MALLOC.items()}):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR)
    return Client(cluster)


def run_cohort(client, studies: list[Study], options: Options, out, description: dict,
               retry_failed: bool = False, progress: bool = True, log=None) -> dict:
    """Run the missing studies on the client's cluster; returns counts and the results done.

    Raises CohortError for a problem that stops everything; a lost scheduler ends the loop
    with the studies finished so far written (the caller says to rerun)."""
    from concurrent.futures import CancelledError

    import dask
    from distributed import KilledWorker, as_completed
    from tqdm import tqdm
    log = log or (lambda text: tqdm.write(text, file=sys.stderr))
    out = Path(out)
    keys.ensure_outside(out)
    settings = settings_of(options, studies, description)
    check_out(out, settings)
    (out / STUDIES_DIR).mkdir(parents=True, exist_ok=True)
    done = load_done(out, studies)
    if retry_failed:
        done = {k: r for k, r in done.items() if r["status"] == "ok"}
    todo = [s for s in studies if s.key not in done]
    skipped = len(studies) - len(todo)
    write_manifest(out, settings, studies, done)
    fingerprint = keys.fingerprint()
    if todo:
        try:
            client.register_plugin(NetPlugin(options.spec, fingerprint), name=PLUGIN_NAME)
        except (CohortError, InputError, ValueError) as exc:
            raise CohortError(f"worker set-up failed: {exc}") from None
    tic, lost, last_manifest = time.perf_counter(), None, time.monotonic()
    by_key = {s.key: s for s in todo}
    futures = [client.submit(detect_study, s, options, fingerprint, key=f"study-{s.key}",
                             pure=False) for s in todo]
    bar = tqdm(total=len(studies), initial=skipped, desc="studies", unit="study",
               disable=not progress, file=sys.stderr)
    try:
        for future in as_completed(futures):
            study = by_key[future.key[len("study-"):]]
            try:
                result = future.result()
            except CohortError:
                raise
            except Exception as exc:                     # noqa: BLE001 (any task failure)
                if isinstance(exc, CancelledError) or future.status != "error":
                    lost = exc                           # not the study's fault: the scheduler
                    break                                # or the connection is gone
                cause = (f"{study.path}: the study killed its worker "
                         f"{dask.config.get('distributed.scheduler.allowed-failures') + 1} times"
                         if isinstance(exc, KilledWorker)
                         else f"{study.path}: {type(exc).__name__}: {exc}")
                result = {"study": study.key, "input": study.input, "status": "failed",
                          "n_sequences": 0, "problems": [cause], "sequences": [],
                          "times_s": dict.fromkeys(STAGES, 0.0)}
            if result["problems"]:                     # one line per study, every cause
                log(f"problem: input {study.input}: {' | '.join(result['problems'])}")
            write_pictures(out, study, result.pop(PICTURES, []))   # before the study's file
            write_json_atomic(study_file(out, study), _written(result))
            done[study.key] = json.loads(study_file(out, study).read_text())
            future.release()
            bar.update(1)
            if time.monotonic() - last_manifest > 10:
                write_manifest(out, settings, studies, done)
                last_manifest = time.monotonic()
    finally:
        bar.close()
        write_manifest(out, settings, studies, done)
    seconds = time.perf_counter() - tic
    counts = {"n_studies": len(studies), "skipped_done": skipped,
              "ran": len(done) - skipped, "missing": len(studies) - len(done),
              "seconds": seconds, "lost_scheduler": lost is not None}
    if counts["missing"] == 0:
        counts.update(merge(out, settings, studies, done))
        if options.report:
            write_cohort_report(out, settings, studies, done)
    counts["results"] = done
    return counts


# --- the review page --------------------------------------------------------------------------

def picture_paths(study_key: str, seq_id: str) -> tuple[str, str]:
    """(full-size, thumbnail) of a sequence's plot, relative to --out."""
    from tempregnet.detection import PLOT_DIR, THUMB_DIR
    return (f"{PLOT_DIR}/{study_key}/{seq_id}.png",
            f"{PLOT_DIR}/{study_key}/{THUMB_DIR}/{seq_id}.png")


def write_pictures(out: Path, study: Study, pictures) -> None:
    """A study's plots under plots/<study>/ (thumbnails in its thumbs/), atomically."""
    for seq_id, full, thumb in pictures:
        full_path, thumb_path = picture_paths(study.key, seq_id)
        write_bytes_atomic(out / thumb_path, thumb)
        write_bytes_atomic(out / full_path, full)


def write_cohort_report(out: Path, settings: dict, studies: list[Study], done: dict) -> Path:
    """report.html from the study files (every sequence, least confident first)."""
    from tempregnet.report import write_report
    records = [rec for s in studies for rec in done[s.key]["sequences"]]
    problems = [f"input {s.input}: {p}" for s in studies for p in done[s.key]["problems"]]

    def picture(rec):
        paths = picture_paths(rec["study"], rec["seq_id"])
        return paths if (out / paths[0]).is_file() else None

    statuses = [done[s.key]["status"] for s in studies]
    counts = [("studies", len(studies)), ("sequences", len(records)),
              ("studies with problems", sum(st != "ok" for st in statuses)),
              ("problems", len(problems)),
              ("model", settings["model"].get("recipe") or settings["model"].get("weights", "")),
              ("decoder", settings["decoder"]), ("decoding", settings["decoding"])]
    return write_report(out, records, picture, "ED / ES detections of a cohort", counts, problems,
                        "Study keys are keyed hashes (docs/detection.md).")

