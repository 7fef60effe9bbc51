"""Sunnybrook reader: DICOM cines with ED/ES taken from the phases that carry endocardial contours."""
from __future__ import annotations

import csv
import os
import re
from collections import Counter

import numpy as np

from data_prep.dicom import find_dicom_sequences
from data_prep.errors import InputError

CONTOUR_NAME = re.compile(r"IM-\d+-(\d+)-icontour-manual\.txt$")


def polygon_area(points: np.ndarray) -> float:
    """Area enclosed by a closed polygon of (x, y) points (shoelace formula)."""
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def read_contour(path) -> np.ndarray:
    """An 'x y' per line contour file as an N x 2 array."""
    try:
        points = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as exc:
        raise InputError(path, f"unreadable contour file ({exc})") from None
    if points.shape[0] < 3 or points.shape[1] != 2:
        raise InputError(path, f"a contour needs >= 3 'x y' lines, got shape {points.shape}")
    return points


def read_links(root) -> dict[str, str]:
    """link.csv: DICOM folder name -> contour folder name."""
    path = os.path.join(root, "link.csv")
    try:
        with open(path, newline="") as f:
            return {row["patient_id"]: row["original_id"] for row in csv.DictReader(f)}
    except (OSError, KeyError) as exc:
        raise InputError(path, f"cannot read patient_id,original_id links ({exc})") from None


def patient_phases(sources, contour_dir) -> tuple[int, int]:
    """The (ED, ES) phase indices of one patient: larger / smaller contoured LV area, by vote."""
    where = {}            # image number (n of n.dcm) -> (slice, phase)
    for s, src in enumerate(sources):
        for phase, im in enumerate(src.images):
            stem = os.path.splitext(os.path.basename(im.path))[0]
            if stem.isdigit():
                where[int(stem)] = (s, phase)
    by_slice: dict[int, list[tuple[float, int]]] = {}
    for name in sorted(os.listdir(contour_dir)):
        match = CONTOUR_NAME.match(name)
        if match and int(match.group(1)) in where:
            s, phase = where[int(match.group(1))]
            area = polygon_area(read_contour(os.path.join(contour_dir, name)))
            by_slice.setdefault(s, []).append((area, phase))
    votes = Counter()
    for contours in by_slice.values():
        if len(contours) == 2 and contours[0][1] != contours[1][1]:
            (_, es), (_, ed) = sorted(contours)
            votes[(ed, es)] += 1
    if not votes:
        raise InputError(contour_dir, "no slice with two contoured phases (ED and ES)")
    return votes.most_common(1)[0][0]


def find_sunnybrook_sequences(root, workers: int = 1):
    """(sequence sources, problems): every slice of every patient, labelled from the contours."""
    if not os.path.isdir(os.path.join(root, "dicoms")):
        raise InputError(root, "not a Sunnybrook folder (expected dicoms/, contourfiles/, link.csv)")
    links = read_links(root)
    sources, problems = [], []
    for patient in sorted(links):
        folder = os.path.join(root, "dicoms", patient)
        found, trouble = find_dicom_sequences(folder, source="sunnybrook", workers=workers)
        problems += trouble
        contour_dir = os.path.join(root, "contourfiles", links[patient], "i-contours")
        try:
            if not os.path.isdir(contour_dir):
                raise InputError(contour_dir, "missing endocardial contour folder")
            ed, es = patient_phases(found, contour_dir)
        except InputError as exc:
            problems.append(exc)
            continue
        for src in found:
            if max(ed, es) >= len(src.images):
                problems.append(InputError(src.path, f"ED/ES phase {max(ed, es)} beyond "
                                                     f"{len(src.images)} frames of a slice"))
                continue
            src.ed, src.es = ed, es
            sources.append(src)
    return sources, problems
