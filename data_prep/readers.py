"""One entry point for every source: find the sequences under a path, then load them one by one."""
from __future__ import annotations

import csv
import json
import os

from data_prep.acdc import find_nifti_sequences
from data_prep.dicom import find_dicom_sequences
from data_prep.errors import InputError
from data_prep.sequence import CineSequence
from data_prep.sunnybrook import find_sunnybrook_sequences

SOURCES = ("dicom", "acdc", "sunnybrook", "nifti")
LABELS_FILE = "labels.csv"     # optional DICOM sidecar: series_uid,ed,es[,slice_position], 0-based
TRUTH_FILE = "truth.json"      # the synthetic cohort's sidecar (data_prep.synthetic)


def read_dicom_labels(path) -> list[tuple]:
    """[(series_uid, slice position or None, ed, es)] from labels.csv or a synthetic truth.json (0-based)."""
    try:
        if str(path).endswith(".json"):
            with open(path) as f:
                rows = json.load(f).get("sequences", [])
        else:
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
    except (OSError, ValueError, AttributeError) as exc:
        raise InputError(path, f"cannot read ED/ES labels ({exc})") from None
    labels = []
    for n, row in enumerate(rows, 1):
        try:
            uid = str(row["series_uid"]).strip()
            pos = row.get("slice_position", row.get("slice_location"))
            pos = None if pos in (None, "") else float(pos)
            labels.append((uid, pos, int(row["ed"]), int(row["es"])))
        except (KeyError, TypeError, ValueError):
            raise InputError(path, f"entry {n}: expected series_uid, ed, es "
                                   f"(and optionally slice_position)") from None
    return labels


def _default_labels(path):
    for name in (LABELS_FILE, TRUTH_FILE):
        if os.path.isfile(os.path.join(path, name)):
            return os.path.join(path, name)
    return None


def find_sequences(source: str, path, labels_file=None, workers: int = 1):
    """(sequence sources with .load(), problems as InputErrors) for a source type and input path."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; expected one of {SOURCES}")
    if not os.path.exists(path):
        return [], [InputError(path, "does not exist")]
    try:
        if source == "dicom":
            labels_file = labels_file or _default_labels(path)
            labels = read_dicom_labels(labels_file) if labels_file else None
            return find_dicom_sequences(path, labels=labels, workers=workers)
        if source == "sunnybrook":
            return find_sunnybrook_sequences(path, workers=workers)
        return find_nifti_sequences(path, source)
    except InputError as exc:
        return [], [exc]


def read_any(source: str, path, labels_file=None) -> list[CineSequence]:
    """Every sequence under path, loaded; raises the first InputError met."""
    found, problems = find_sequences(source, path, labels_file)
    if problems:
        raise problems[0]
    return [item.load() for item in found]
