"""ACDC-style NIfTI reader: 4D (x, y, slice, time), 1-based ED/ES in Info.cfg, a sequence per slice."""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field

import numpy as np

from data_prep.dicom import walk
from data_prep.errors import InputError, Where
from data_prep.keys import public_order_key
from data_prep.scale import SPACING_KEY, SPACING_NOTE_KEY
from data_prep.sequence import CineSequence, anonymous_key

INFO_FILE = "Info.cfg"
NIFTI_PATTERNS = ("*_4d.nii.gz", "*_4d.nii", "*.nii.gz", "*.nii")


@dataclass
class NiftiSequenceSource:
    """One slice of a 4D NIfTI; `load()` reads it."""
    path: str
    slice_index: int
    seq_id: str
    group: str
    source: str
    ed: int | None = None
    es: int | None = None
    meta: dict = field(default_factory=dict)
    group_order: str = ""

    @property
    def where(self) -> str:
        """The file and slice, for messages."""
        return Where(f"{self.path} (slice {self.slice_index + 1} of the 4D volume)", self.path)

    def load(self) -> CineSequence:
        """T x H x W frames of the slice (H = NIfTI y, W = NIfTI x)."""
        volume = _volume(self.path)
        frames = np.ascontiguousarray(volume[:, :, self.slice_index, :].transpose(2, 1, 0))
        spacing, note = nifti_spacing(self.path)
        return CineSequence(frames=frames.astype(np.float32), seq_id=self.seq_id,
                            group=self.group, source=self.source, ed=self.ed, es=self.es,
                            meta=dict(self.meta, slice_index=self.slice_index,
                                      **{SPACING_KEY: spacing, SPACING_NOTE_KEY: note}),
                            group_order=self.group_order)


def nifti_spacing(path) -> tuple[tuple[float, float] | None, str | None]:
    """((row, column) mm per pixel, None) from pixdim; (None, why) where the header has none.

    Frames are H = NIfTI y, W = NIfTI x, so rows are pixdim[2] apart and columns pixdim[1].
    pixdim 1 x 1 x 1 with unknown spatial units is the placeholder converters write when they
    know no spacing (about 40% of the ACDC copy): it counts as none.
    """
    import nibabel as nib
    header = nib.load(path).header
    zooms = [float(z) for z in header.get_zooms()[:3]]
    units = header.get_xyzt_units()[0]
    if units == "unknown" and zooms == [1.0, 1.0, 1.0]:
        return None, "NIfTI pixdim is the 1 x 1 x 1 placeholder with unknown units"
    scale = {"mm": 1.0, "meter": 1000.0, "micron": 0.001}.get(units, 1.0)  # unknown: mm (ACDC)
    return (zooms[1] * scale, zooms[0] * scale), None


_LAST_VOLUME: dict = {}


def _volume(path) -> np.ndarray:
    """The 4D array, cached for the file last read (a slice at a time would re-inflate the .gz)."""
    import nibabel as nib
    if path not in _LAST_VOLUME:
        _LAST_VOLUME.clear()
        try:
            _LAST_VOLUME[path] = nib.load(path).get_fdata(dtype=np.float32)
        except (OSError, ValueError, EOFError) as exc:
            raise InputError(path, f"unreadable NIfTI data ({type(exc).__name__}: {exc})") from None
    return _LAST_VOLUME[path]


def read_info(path) -> dict:
    """Info.cfg as a dict of strings ('ED: 1' lines)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise InputError(path, f"cannot read ({exc.strerror})") from None
    info = {}
    for line in lines:
        if ":" in line:
            key, value = line.split(":", 1)
            info[key.strip()] = value.strip()
    return info


def labels_from_info(path, n_frames: int) -> tuple[int, int]:
    """0-based (ED, ES) from a 1-based Info.cfg, checked against the time axis."""
    info = read_info(path)
    labels = []
    for name in ("ED", "ES"):
        if name not in info:
            raise InputError(path, f"no {name} line (expected '{name}: <1-based frame>')")
        try:
            value = int(float(info[name]))
        except ValueError:
            raise InputError(path, f"{name} is not a frame number: {info[name]!r}") from None
        if not 1 <= value <= n_frames:
            raise InputError(path, f"{name} {value} is out of range 1..{n_frames} "
                                   f"(1-based, frames on the time axis)")
        labels.append(value - 1)
    if labels[0] == labels[1]:
        raise InputError(path, f"ED and ES are the same frame ({labels[0] + 1})")
    return labels[0], labels[1]


def check_frame_count(info_path, nii, n_frames: int) -> None:
    """InputError unless Info.cfg's NbFrame (when it has one) is the volume's time axis."""
    value = read_info(info_path).get("NbFrame")
    if value is None:
        return
    try:
        stated = int(float(value))
    except ValueError:
        raise InputError(info_path, f"NbFrame is not a frame count: {value!r}") from None
    if stated != n_frames:
        raise InputError(info_path, f"NbFrame {stated} contradicts {os.path.basename(nii)}, "
                                    f"whose time axis has {n_frames} frames")


def _nifti_file(folder) -> str | None:
    for pattern in NIFTI_PATTERNS:
        hits = sorted(p for p in glob.glob(os.path.join(folder, pattern)) if "_gt" not in p)
        if hits:
            return hits[0]
    return None


def _case_folders(path, require_info: bool) -> list[str]:
    """The folders holding one case: path itself, or its subfolders (any depth)."""
    if not os.path.isdir(path):
        raise InputError(path, "is not a folder")
    marker = (lambda d: os.path.isfile(os.path.join(d, INFO_FILE))) if require_info \
        else (lambda d: _nifti_file(d) is not None)
    return [root for root, _ in walk(path) if marker(root)]


def find_nifti_sequences(path, source: str = "acdc"):
    """(sequence sources, problems) for ACDC ('acdc': Info.cfg required) or plain 4D NIfTI."""
    require_info = source == "acdc"
    cases = _case_folders(path, require_info)
    if not cases:
        what = f"no patient folders with {INFO_FILE}" if require_info else "no NIfTI files"
        return [], [InputError(path, f"empty input: {what}")]
    sources, problems = [], []
    for case in cases:
        try:
            sources += _case_sequences(case, source)
        except InputError as exc:
            problems.append(exc)
    return sources, problems


def _case_sequences(case, source: str) -> list[NiftiSequenceSource]:
    import nibabel as nib
    nii = _nifti_file(case)
    if nii is None:
        raise InputError(case, "no 4D NIfTI (*_4d.nii.gz) in the patient folder")
    try:
        shape = nib.load(nii).shape
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(nii, f"not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    if len(shape) != 4:
        raise InputError(nii, f"is {len(shape)}-D {tuple(shape)}; expected 4-D (x, y, slice, time)")
    n_frames = shape[3]
    info = os.path.join(case, INFO_FILE)
    ed = es = None
    if os.path.isfile(info) or source == "acdc":
        check_frame_count(info, nii, n_frames)
        ed, es = labels_from_info(info, n_frames)
    name = os.path.basename(os.path.normpath(case))
    group = anonymous_key(source, "patient", name)
    order = public_order_key(source, "patient", name)
    return [NiftiSequenceSource(nii, z, anonymous_key(source, name, z), group, source, ed, es,
                                group_order=order) for z in range(shape[2])]
