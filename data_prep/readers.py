"""One entry point for every source: find the sequences under a path, then load them one by one."""
from __future__ import annotations

import csv
import os

from data_prep.acdc import find_nifti_sequences
from data_prep.dicom import POSITION_DECIMALS, find_dicom_sequences
from data_prep.errors import InputError
from data_prep.sequence import CineSequence
from data_prep.sunnybrook import find_sunnybrook_sequences

SOURCES = ("dicom", "acdc", "sunnybrook", "nifti")
LABELS_FILE = "labels.csv"     # optional DICOM sidecar: series_uid,ed,es[,slice_position], 0-based


def read_dicom_labels(path) -> dict:
    """{series_uid or (series_uid, slice_position): (ed, es)} from a labels CSV (0-based frames)."""
    labels = {}
    try:
        with open(path, newline="") as f:
            for line_no, row in enumerate(csv.DictReader(f), 2):
                try:
                    ed, es = int(row["ed"]), int(row["es"])
                except (KeyError, TypeError, ValueError):
                    raise InputError(path, f"line {line_no}: expected integer ed and es columns") from None
                uid = (row.get("series_uid") or "").strip()
                if not uid:
                    raise InputError(path, f"line {line_no}: no series_uid")
                pos = (row.get("slice_position") or "").strip()
                key = (uid, round(float(pos), POSITION_DECIMALS)) if pos else uid
                labels[key] = (ed, es)
    except OSError as exc:
        raise InputError(path, f"cannot read labels ({exc.strerror})") from None
    return labels


def find_sequences(source: str, path, labels_file=None):
    """(sequence sources with .load(), problems as InputErrors) for a source type and input path."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; expected one of {SOURCES}")
    if not os.path.exists(path):
        return [], [InputError(path, "does not exist")]
    try:
        if source == "dicom":
            default = os.path.join(path, LABELS_FILE)
            labels_file = labels_file or (default if os.path.isfile(default) else None)
            labels = read_dicom_labels(labels_file) if labels_file else None
            return find_dicom_sequences(path, labels=labels)
        if source == "sunnybrook":
            return find_sunnybrook_sequences(path)
        return find_nifti_sequences(path, source)
    except InputError as exc:
        return [], [exc]


def read_any(source: str, path, labels_file=None) -> list[CineSequence]:
    """Every sequence under path, loaded; raises the first InputError met."""
    found, problems = find_sequences(source, path, labels_file)
    if problems:
        raise problems[0]
    return [item.load() for item in found]
