"""DICOM cine reader: a folder of images in any naming and order -> one sequence per series and slice."""
from __future__ import annotations

import os
import struct
import warnings
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from data_prep.dicom_header import PLAIN_SYNTAXES, PlainHeader, plain_header
from data_prep.errors import InputError, Where
from data_prep.keys import public_order_key
from data_prep.rwave import RWAVE_KEY, trigger_rwave
from data_prep.scale import SPACING_KEY
from data_prep.sequence import CineSequence, anonymous_key

MIN_FRAMES = 2            # a cine needs at least two phases (labels.volume_label says why)
SLICE_TOLERANCE = 0.05    # mm: positions closer than this are one slice (float noise in IPP . normal)
IGNORED_NAMES = {"DICOMDIR", "labels.csv", "truth.json"}   # ED/ES sidecars (readers.py)
# What a broken file or an unusual pixel module raises inside pydicom.
READ_ERRORS = (InvalidDicomError, EOFError, OSError, ValueError, KeyError, IndexError,
               TypeError, AttributeError, struct.error, RuntimeError, NotImplementedError)


@dataclass(frozen=True)
class DicomImage:
    """One 2D image found by the scan: a file, or one frame of a multi-frame file."""
    path: str
    frame: int | None            # index inside a multi-frame file, None for a single-frame file
    series: str
    position: float | None       # along the slice normal (mm), else SliceLocation
    trigger: float | None        # ms after the R wave
    instance: int | None
    shape: tuple[int, int]
    patient: str                 # identifying: only ever hashed
    expected: int | None         # CardiacNumberOfImages, when the header says
    has_pixels: bool
    spacing: tuple[float, float] | None = None   # PixelSpacing (row, column) in mm
    raw: "RawPixels | None" = None               # where the pixels lie, for plain files


@dataclass(frozen=True)
class RawPixels:
    """Where a plain file's pixels lie and how to read them without parsing the file again:
    uncompressed little-endian, one frame, one sample, MONOCHROME1/2, no palette (raw_pixels)."""
    offset: int
    dtype: str                   # numpy dtype of the stored values
    bits_stored: int
    monochrome1: bool
    slope: float
    intercept: float


@dataclass
class DicomSequenceSource:
    """A sequence found by the scan; `load()` decodes it. Labels come from the caller."""
    images: list[DicomImage]
    seq_id: str
    group: str
    source: str = "dicom"
    ed: int | None = None
    es: int | None = None
    meta: dict = field(default_factory=dict)
    group_order: str = ""

    @property
    def path(self) -> str:
        """The folder the sequence's first image lies in (for messages)."""
        return os.path.dirname(self.images[0].path)

    @property
    def where(self) -> str:
        """The folder, series and slice, for messages (no patient data: a UID tail and a position)."""
        first = self.images[0]
        pos = "?" if first.position is None else f"{first.position:.1f} mm"
        return Where(f"{self.path} (series ...{first.series[-8:]}, slice at {pos})", self.path)

    def load(self) -> CineSequence:
        """Decode every phase; raises InputError naming the file at fault."""
        return CineSequence(frames=load_frames(self.images), seq_id=self.seq_id, group=self.group,
                            source=self.source, ed=self.ed, es=self.es,
                            instances=_instances(self.images),
                            meta=dict(self.meta, **{SPACING_KEY: _spacing(self.images),
                                                    RWAVE_KEY: trigger_rwave(
                                                        [im.trigger for im in self.images])}),
                            group_order=self.group_order)


# --- scanning ---------------------------------------------------------------------------------

def list_files(folder) -> list[str]:
    """Every regular file under folder (recursively, sorted, hidden files and DICOMDIR left out)."""
    if not os.path.isdir(folder):
        raise InputError(folder, "is not a folder")
    found = []
    for root, files in walk(folder):
        found += [os.path.join(root, f) for f in files if f not in IGNORED_NAMES]
    return found


def walk(folder):
    """(folder, sorted visible files) for folder and its subfolders, following links once each."""
    seen = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:                  # a link loop, or a folder linked twice
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        yield root, sorted(f for f in files if not f.startswith("."))


def scan_file(path) -> list[DicomImage]:
    """The images one file holds (header only; pixel data is read by `load_frames`)."""
    header = plain_header(path)       # the common case, without pydicom (data_prep.dicom_header)
    if header is not None:
        return _scan_file(path, header)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # pydicom warns on every non-conformant UID it reads
        return _scan_file(path, _read_header(path))


def _scan_file(path, ds) -> list[DicomImage]:
    if "Rows" not in ds or "Columns" not in ds:
        if "PixelData" not in ds:
            raise InputError(path, "no pixel data (not an image)")
        raise InputError(path, "no Rows/Columns in the header")
    has_pixels = any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
    shape = (int(ds.get("Rows")), int(ds.get("Columns")))
    series = str(ds.get("SeriesInstanceUID", ""))
    patient = str(ds.get("PatientID", "")) or str(ds.get("StudyInstanceUID", "")) or series
    expected = _int(ds.get("CardiacNumberOfImages"))
    n_frames = _int(ds.get("NumberOfFrames")) or 1
    if not _is_multiframe(ds):
        return [DicomImage(str(path), None, series, _position(ds), _float(ds.get("TriggerTime")),
                           _int(ds.get("InstanceNumber")), shape, patient, expected, has_pixels,
                           _pixel_spacing(ds), raw_pixels(ds, shape))]
    images = []
    for k in range(n_frames):
        plane = _frame_item(ds, k, "PlanePositionSequence")
        orient = _frame_item(ds, k, "PlaneOrientationSequence")
        cardiac = _frame_item(ds, k, "CardiacSynchronizationSequence")
        content = _frame_item(ds, k, "FrameContentSequence")
        position = _position(ds, plane, orient)
        trigger = _float(cardiac.get("NominalCardiacTriggerDelayTime")) if cardiac else None
        order = _int(content.get("TemporalPositionIndex")) if content else None
        # a plain multi-frame file (no functional groups) is one cine in frame order
        measures = _frame_item(ds, k, "PixelMeasuresSequence")
        images.append(DicomImage(str(path), k, series, position, trigger,
                                 order if order is not None else k + 1, shape, patient,
                                 expected, has_pixels, _pixel_spacing(measures or ds)))
    return images


def _read_header(path):
    """pydicom's Dataset of the file's header (big values such as the pixels left unread)."""
    try:
        return pydicom.dcmread(path, defer_size=1024)
    except InvalidDicomError:
        raise InputError(path, "not a DICOM file") from None
    except READ_ERRORS as exc:
        raise InputError(path, f"unreadable DICOM header ({_short(exc)})") from None


def _pixel_location(ds) -> tuple[str, int, int] | None:
    """(transfer syntax, offset, length) of the pixel data element's value as the scan found
    it, or None where it was not read as a plain little-endian element."""
    if isinstance(ds, PlainHeader):
        return ds.syntax, ds.pixel_offset, ds.pixel_length
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    element = ds.get_item(0x7FE00010, keep_deferred=True)
    if (not isinstance(element, pydicom.dataelem.RawDataElement) or element.value_tell is None
            or not element.is_little_endian):
        return None
    return syntax, int(element.value_tell), element.length


def raw_pixels(ds, shape) -> RawPixels | None:
    """RawPixels of a single-frame file as the scan read it (a pydicom Dataset or a
    PlainHeader), or None where pydicom must decode it (compressed, big endian, colour,
    palette, signed with unused high bits, odd layouts)."""
    try:
        where = _pixel_location(ds)
        if where is None:
            return None
        syntax, offset, length = where
        bits = int(ds.get("BitsAllocated", 0))
        stored = int(ds.get("BitsStored", bits))
        signed = int(ds.get("PixelRepresentation", 0)) == 1
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
        nbytes = shape[0] * shape[1] * bits // 8
        if (syntax not in PLAIN_SYNTAXES or length not in (nbytes, nbytes + 1)
                or bits not in (8, 16, 32)
                or int(ds.get("SamplesPerPixel", 1)) != 1
                or photometric not in ("MONOCHROME1", "MONOCHROME2")
                or not 1 <= stored <= bits or (signed and stored != bits)):
            return None
        slope = _float(ds.get("RescaleSlope")) or 1.0
        intercept = _float(ds.get("RescaleIntercept")) or 0.0
        return RawPixels(offset, f"<{'i' if signed else 'u'}{bits // 8}", stored,
                         photometric == "MONOCHROME1", slope, intercept)
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


def group_images(images: list[DicomImage]) -> tuple[list[list[DicomImage]], list[InputError]]:
    """Group by (series, slice position), order the phases, and check each group is a cine."""
    by_series = defaultdict(list)
    for im in images:
        by_series[im.series].append(im)
    groups = {}
    for series, members in by_series.items():
        # one slice per run of positions with gaps <= SLICE_TOLERANCE (robust to float noise)
        pos = np.unique([im.position for im in members if im.position is not None])
        starts = pos[np.r_[True, np.diff(pos) > SLICE_TOLERANCE]] if pos.size else pos
        for im in members:
            index = -1 if im.position is None else int(np.searchsorted(starts, im.position, "right")) - 1
            groups.setdefault((series, index), []).append(im)
    sequences, problems = [], []
    for key in sorted(groups):
        try:
            sequences.append(_ordered_cine(groups[key]))
        except InputError as exc:
            problems.append(exc)
    return sequences, problems


def _ordered_cine(group: list[DicomImage]) -> list[DicomImage]:
    """One slice's images in phase order, or InputError when they cannot form a cine."""
    first = group[0]
    if len(group) < MIN_FRAMES:
        raise InputError(first.path, f"a series of {len(group)} frame at this slice; "
                                     f"a cine needs at least {MIN_FRAMES}")
    if all(im.trigger is not None for im in group):
        key = lambda im: (im.trigger, im.instance if im.instance is not None else 0)  # noqa: E731
    elif all(im.instance is not None for im in group):
        key = lambda im: (im.instance,)  # noqa: E731
    else:
        bad = next(im for im in group if im.trigger is None and im.instance is None)
        raise InputError(_where(bad), "no TriggerTime or InstanceNumber to order the phases by")
    ordered = sorted(group, key=key)
    for a, b in zip(ordered, ordered[1:]):
        if key(a) == key(b):
            raise InputError(_where(b), f"duplicate phase: same TriggerTime/InstanceNumber as "
                                        f"another image of this slice ({_where(a)})")
    for im in ordered:
        if im.shape != first.shape:
            raise InputError(_where(im), f"frame size {im.shape[0]}x{im.shape[1]} differs from "
                                         f"{first.shape[0]}x{first.shape[1]} in the same series")
    expected = {im.expected for im in ordered} - {None}
    folder, series = os.path.dirname(first.path), f"series ...{first.series[-8:]}"
    if len(expected) > 1:
        raise InputError(folder, f"contradictory CardiacNumberOfImages {sorted(expected)} among "
                                 f"the images of one slice of {series}")
    n = expected.pop() if expected else None
    if n is not None and n > len(ordered):
        raise InputError(folder, f"missing frame: {len(ordered)} of {n} phases "
                                 f"(CardiacNumberOfImages) in {series}")
    if n is not None and n < len(ordered):
        raise InputError(folder, f"{len(ordered)} phases found where CardiacNumberOfImages says "
                                 f"{n} in {series}")
    return ordered


def _scan_or_problem(path):
    try:
        return scan_file(path)
    except InputError as exc:
        return exc.path, exc.problem      # InputError does not survive pickling


def _map(function, items, workers: int):
    """map() in a process pool of `workers` (1: in this process), order kept."""
    if workers <= 1 or len(items) < 64:
        return list(map(function, items))
    import multiprocessing
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return pool.map(function, items, chunksize=64)


def find_dicom_sequences(folder, labels=None, source: str = "dicom", workers: int = 1):
    """Scan a folder: (sequence sources, problems). labels: [(series_uid, position or None, ed, es)]."""
    files = list_files(folder)
    images, problems = [], []
    for found in _map(_scan_or_problem, files, workers):
        if isinstance(found, tuple):
            problems.append(InputError(*found))
        else:
            images += found
    if not images:
        what = "no DICOM images" if files else "empty folder: no files"
        problems.append(InputError(folder, what))
        return [], problems
    groups, group_problems = group_images(images)
    sources = []
    for ims in groups:
        first = ims[0]
        group = anonymous_key(source, "patient", first.patient)
        pos = None if first.position is None else round(first.position, 1)
        seq_id = anonymous_key(source, first.patient, first.series, pos)
        ed, es = _lookup(labels, first)
        sources.append(DicomSequenceSource(ims, seq_id, group, source, ed, es,
                                           meta={"slice_position": first.position},
                                           group_order=public_order_key(source, "patient",
                                                                        first.patient)))
    return sources, problems + group_problems


def _lookup(labels, image: DicomImage):
    """(ed, es) of the label row for this series and slice (position within tolerance), else None."""
    for uid, position, ed, es in labels or ():
        if uid != image.series:
            continue
        if position is None or (image.position is not None
                                and abs(position - image.position) <= SLICE_TOLERANCE):
            return ed, es
    return None, None


# --- pixel decoding ---------------------------------------------------------------------------

def load_frames(images: list[DicomImage]) -> np.ndarray:
    """T x H x W float32 in scanner units (rescale applied, MONOCHROME1 inverted, RGB to grey)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _load_frames(images)


def _load_frames(images: list[DicomImage]) -> np.ndarray:
    cache = {}
    frames = np.empty((len(images),) + images[0].shape, np.float32)   # one sequence: one size
    buffers = {}                          # stored values, one buffer per dtype, reused
    for k, im in enumerate(images):
        if im.raw is not None and _read_raw(im, frames[k], buffers):
            continue                      # the plain-file path: no second parse of the file
        if im.path not in cache:
            cache = {im.path: _read_pixels(im.path)}    # keep only the current file in memory
        ds, pixels = cache[im.path]
        frames[k] = _to_grey_units(ds, pixels if im.frame is None else pixels[im.frame], im)
    return frames


def _read_raw(im: DicomImage, into: np.ndarray, buffers: dict) -> bool:
    """Write the frame of a plain file (RawPixels) into `into` (float32) in scanner units as
    _to_grey_units gives them; False where it must be decoded by pydicom (unreadable, short,
    values beyond BitsStored). buffers: {(dtype, shape): array} to read the stored values into."""
    raw = im.raw
    values = buffers.get((raw.dtype, im.shape))
    if values is None:
        values = buffers[raw.dtype, im.shape] = np.empty(im.shape, raw.dtype)
    try:
        with open(im.path, "rb") as f:
            f.seek(raw.offset)
            if f.readinto(memoryview(values).cast("B")) != values.nbytes:
                return False              # short
    except (OSError, ValueError):
        return False
    bits = values.itemsize * 8
    if raw.bits_stored < bits and int(values.max()) >= 1 << raw.bits_stored:
        return False                      # unused high bits set: pydicom knows what to do
    if not raw.monochrome1 and raw.slope == 1.0 and raw.intercept == 0.0:
        into[...] = values                # what x * 1.0 + 0.0 in float64 rounds to
        return True
    x = values.astype(np.float64)
    if raw.monochrome1:                   # as _to_grey_units: flip within the stored range
        lo, hi = (-(2 ** (raw.bits_stored - 1)), 2 ** (raw.bits_stored - 1) - 1) \
            if raw.dtype.startswith("<i") else (0, 2 ** raw.bits_stored - 1)
        x = lo + hi - x
    into[...] = x * raw.slope + raw.intercept
    return True


def _read_pixels(path):
    try:
        ds = pydicom.dcmread(path)
    except READ_ERRORS as exc:
        raise InputError(path, f"unreadable DICOM file ({_short(exc)})") from None
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise InputError(path, "no pixel data")
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    try:
        pixels = ds.pixel_array
    except READ_ERRORS as exc:
        if ts is not None and ts.is_compressed:
            raise InputError(path, _codec_problem(ts)) from None
        raise InputError(path, f"pixel data unreadable, truncated file? ({_short(exc)})") from None
    n_frames = _int(ds.get("NumberOfFrames")) or 1
    rgb = int(ds.get("SamplesPerPixel", 1)) == 3
    want = (ds.Rows, ds.Columns) + ((3,) if rgb else ())
    if _is_multiframe(ds):
        want = (n_frames,) + want
        if n_frames == 1:
            pixels = pixels[None]       # pydicom drops the frame axis of a 1-frame file
    if pixels.shape != want:
        raise InputError(path, f"pixel data of shape {pixels.shape}, header says {want}")
    return ds, pixels


def _codec_problem(ts) -> str:
    from pydicom.pixels import get_decoder
    try:
        missing = get_decoder(ts).missing_dependencies
    except NotImplementedError:
        missing = []
    packages = " or ".join(m.split(" - ")[0] for m in missing) or "a codec plugin"
    hint = "; ".join(m.split(" - ")[1] for m in missing if " - " in m)
    return (f"pixel data compressed as {ts.name} ({ts}) cannot be decoded here: "
            f"install {packages}" + (f" ({hint})" if hint else ""))


def _to_grey_units(ds, frame: np.ndarray, im: DicomImage) -> np.ndarray:
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    x = frame.astype(np.float64)
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut
        x = apply_color_lut(frame, ds).astype(np.float64)
    if x.ndim == 3:                               # RGB (pydicom already converted YBR to RGB)
        x = x @ np.array([0.299, 0.587, 0.114])   # ITU-R BT.601 luma
    if photometric == "MONOCHROME1":              # 0 is white: flip within the stored range
        bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
        signed = int(ds.get("PixelRepresentation", 0)) == 1
        lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
        x = lo + hi - x
    k = 0 if im.frame is None else im.frame
    transform = _frame_item(ds, k, "PixelValueTransformationSequence") or ds
    slope = _float(transform.get("RescaleSlope", ds.get("RescaleSlope"))) or 1.0
    intercept = _float(transform.get("RescaleIntercept", ds.get("RescaleIntercept"))) or 0.0
    return x * slope + intercept


# --- header helpers ---------------------------------------------------------------------------

def _is_multiframe(ds) -> bool:
    """Frames addressed by index: NumberOfFrames > 1 or per-frame functional groups present."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    # some exporters (OsiriX) leave an empty per-frame item in single-frame files
    return (_int(ds.get("NumberOfFrames")) or 1) > 1 or any(len(item) for item in per_frame)


def _frame_item(ds, k: int, name: str):
    """The functional-group item `name` of frame k (per-frame first, then shared), or None."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", k),
                          ("SharedFunctionalGroupsSequence", 0)):
        seq = ds.get(groups)
        if seq is not None and len(seq) > index and name in seq[index]:
            items = seq[index][name].value
            if len(items):
                return items[0]
    return None


def _position(ds, plane=None, orient=None) -> float | None:
    """Slice position along the slice normal (IPP . (row x col)), else SliceLocation."""
    ipp = (plane or ds).get("ImagePositionPatient")
    iop = (orient or ds).get("ImageOrientationPatient")
    if ipp is not None and iop is not None and len(ipp) == 3 and len(iop) == 6:
        (r0, r1, r2, c0, c1, c2), (x, y, z) = map(float, iop), map(float, ipp)
        # the cross product and dot product as numpy computes them, without its overhead
        return (r1 * c2 - r2 * c1) * x + (r2 * c0 - r0 * c2) * y + (r0 * c1 - r1 * c0) * z
    return _float(ds.get("SliceLocation"))


def _pixel_spacing(ds) -> tuple[float, float] | None:
    """PixelSpacing (row, column) in mm, else ImagerPixelSpacing, else None."""
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(key)
        try:
            if value is not None and len(value) == 2:
                return float(value[0]), float(value[1])
        except (TypeError, ValueError):
            return None
    return None


def _spacing(images: list[DicomImage]) -> tuple[float, float] | None:
    """The one pixel spacing of a slice's images; InputError when they contradict each other."""
    found = {im.spacing for im in images}
    if len(found) > 1:
        known = sorted(s for s in found if s is not None)
        raise InputError(_where(images[0]), f"contradictory PixelSpacing within one slice: {known}"
                                            + (" and missing in some images" if None in found else ""))
    return found.pop()


def _instances(images: list[DicomImage]):
    if any(im.frame is not None for im in images):
        return None           # frames of a multi-frame file share one InstanceNumber
    return [im.instance for im in images]


def _where(im: DicomImage) -> str:
    return im.path if im.frame is None else f"{im.path} (frame {im.frame + 1})"


def _float(value):
    try:
        return None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None


def _int(value):
    try:
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:120]}" if text else type(exc).__name__
