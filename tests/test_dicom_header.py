"""The lean header reader (data_prep.dicom_header) against pydicom: the scan's images equal on
every file it reads, and every file it declines goes through pydicom as before."""
from __future__ import annotations

import struct
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import (DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless)

from data_prep import dicom
from data_prep.dicom_header import WANTED, plain_header
from data_prep.errors import InputError
from data_prep.synthetic import write_dicom_cohort, write_dicom_series

SUNNYBROOK = Path(__file__).resolve().parents[2] / "shared" / "data" / "sunnybrook" / "dicoms"


def _scan(path):
    """scan_file's images, or the problem it raises."""
    try:
        return dicom.scan_file(path)
    except InputError as exc:
        return str(exc)


def lean_equals_pydicom(path, monkeypatch) -> bool:
    """Assert the lean reader's values equal pydicom's and the scan of path gives the same with
    and without it; return whether the lean reader read it."""
    header = plain_header(path)
    if header is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # pydicom warns on non-conformant UIDs
            ds = pydicom.dcmread(path, defer_size=1024)
            for keyword in WANTED:
                assert (keyword in header) == (keyword in ds), (path, keyword)
                value = ds.get(keyword)
                value = list(value) if isinstance(value, MultiValue) else value
                assert header.get(keyword) == value and type(header.get(keyword)) in (
                    type(value), *type(value).__bases__), (path, keyword, header[keyword], value)
    fast = _scan(path)
    with monkeypatch.context() as m:
        m.setattr(dicom, "plain_header", lambda p: None)
        slow = _scan(path)
    assert fast == slow, path
    return header is not None


def _series(folder, t=3, **kw) -> list[Path]:
    frames = np.random.default_rng(3).integers(0, 3000, (t, 12, 10)).astype(np.float64)
    return write_dicom_series(folder, frames, series_uid="1.2.3", slice_location=4.5, **kw)


def _rewrite(paths, change) -> None:
    for p in paths:
        ds = pydicom.dcmread(p)
        change(ds)
        ds.save_as(p)


def test_synthetic_cohort_files_all_read_lean(tmp_path, monkeypatch):
    write_dicom_cohort(tmp_path, 1, seed=2, size=48)
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "truth.json"]
    assert files and all(lean_equals_pydicom(p, monkeypatch) for p in files)


@pytest.mark.skipif(not SUNNYBROOK.is_dir(), reason="Sunnybrook data (../shared/data) not present")
def test_sunnybrook_files_read_lean_equal_pydicom(monkeypatch):
    """Real GE files: private tags, sequences, an empty per-frame functional groups item."""
    files = sorted(SUNNYBROOK.rglob("*.dcm"))
    assert files and all(lean_equals_pydicom(p, monkeypatch) for p in files)


def _implicit(ds):
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian


def _private_sequence(ds):
    """A private sequence of undefined length before the pixels: items of undefined and defined
    length, one holding a nested sequence of undefined length and a tag the scan wants."""
    inner = pydicom.Dataset()
    inner.is_undefined_length_sequence_item = True
    inner.add_new(0x00291010, "LO", "x")
    item = pydicom.Dataset()
    item.is_undefined_length_sequence_item = True
    item.add_new(0x00291011, "UI", "9.9")
    item.SliceLocation = "99.0"                   # nested: not the file's
    nested = pydicom.DataElement(0x00291012, "SQ", Sequence([inner]))
    nested.is_undefined_length = True
    item.add(nested)
    plain = pydicom.Dataset()
    plain.add_new(0x00291013, "SH", "y")
    ds.add_new(0x00290010, "LO", "TEMPREGNET TEST")
    element = pydicom.DataElement(0x00291020, "SQ", Sequence([item, plain]))
    element.is_undefined_length = True
    ds.add(element)


def _imager_spacing(ds):
    del ds.PixelSpacing
    ds.ImagerPixelSpacing = [0.7, 0.8]


def _empty_values(ds):
    ds.SliceLocation, ds.TriggerTime = None, None
    del ds.PatientID


def _empty_per_frame_items(ds):
    ds.PerFrameFunctionalGroupsSequence = Sequence([pydicom.Dataset()])


@pytest.mark.parametrize("change, write", [
    (None, dict()),
    (_implicit, dict()),
    (_private_sequence, dict()),
    (_private_sequence, dict(tags={"PhotometricInterpretation": "MONOCHROME1"})),
    (lambda ds: (_implicit(ds), _private_sequence(ds)), dict()),
    (None, dict(omit=("PixelSpacing",))),
    (_imager_spacing, dict()),
    (None, dict(tags={"PhotometricInterpretation": "MONOCHROME1"})),
    (None, dict(dtype="uint16", rescale=(2.0, -100.0))),
    (None, dict(rescale=(0.5, 3.25))),
    (_empty_values, dict()),
    (_empty_per_frame_items, dict()),
    (None, dict(omit=("ImagePositionPatient", "ImageOrientationPatient"))),
    (None, dict(tags={"NumberOfFrames": 1})),
], ids=["as-written", "implicit", "private-sequence", "private-sequence-monochrome1",
        "implicit-private-sequence", "no-spacing", "imager-spacing", "monochrome1", "rescale",
        "fractional-rescale", "empty-values", "empty-per-frame-item", "no-position",
        "one-frame"])
def test_lean_reader_reads_and_equals_pydicom(tmp_path, monkeypatch, change, write):
    paths = _series(tmp_path, **write)
    if change:
        _rewrite(paths, change)
    assert all(lean_equals_pydicom(p, monkeypatch) for p in paths)
    found, problems = dicom.find_dicom_sequences(tmp_path)
    assert not problems and len(found) == 1
    pixels = np.stack([pydicom.dcmread(p).pixel_array for p in paths]).astype(np.float64)
    ds = pydicom.dcmread(paths[0])
    if ds.PhotometricInterpretation == "MONOCHROME1":
        pixels = (2 ** ds.BitsStored - 1 if ds.PixelRepresentation == 0
                  else -1) - pixels          # lo + hi - x, signed: -2^(b-1) + 2^(b-1) - 1
    expected = pixels * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(found[0].load().frames, expected.astype(np.float32))


def _multiframe(ds):
    ds.NumberOfFrames = 2
    ds.PixelData = ds.PixelData * 2


def _per_frame_content(ds):
    item = pydicom.Dataset()
    item.FrameContentSequence = Sequence([pydicom.Dataset()])
    item.FrameContentSequence[0].TemporalPositionIndex = 1
    ds.PerFrameFunctionalGroupsSequence = Sequence([item])


def _latin1_patient(ds):
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientID = "P\u00e9"


def _two_patient_ids(ds):
    ds.PatientID = "A\\B"


def _odd_number(ds):
    ds["TriggerTime"] = pydicom.DataElement(0x00181060, "DS", "1.5\\2.5")


def _wrong_vr(ds):
    ds["Rows"] = pydicom.DataElement(0x00280010, "SS", ds.Rows)


def _deflated(ds):
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian


def _rle(ds):
    ds.compress(RLELossless)


@pytest.mark.parametrize("change", [_multiframe, _per_frame_content, _latin1_patient,
                                    _two_patient_ids, _odd_number, _wrong_vr, _deflated, _rle],
                         ids=["multi-frame", "per-frame-groups", "latin1-patient", "two-patient-ids",
                              "two-triggers",
                              "wrong-vr", "deflated", "rle"])
def test_other_files_declined_to_pydicom(tmp_path, monkeypatch, change):
    paths = _series(tmp_path, t=2)
    _rewrite(paths, change)
    assert not any(lean_equals_pydicom(p, monkeypatch) for p in paths)


def test_big_endian_truncated_and_not_dicom_declined(tmp_path, monkeypatch):
    paths = _series(tmp_path, t=3)
    ds = pydicom.dcmread(paths[0])
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRBigEndian
    ds.PixelData = ds.pixel_array.astype(">i2").tobytes()
    pydicom.dcmwrite(paths[0], ds, little_endian=False, implicit_vr=False)
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[:data.index(struct.pack("<HH", 0x0028, 0x0010)) + 5])
    paths[2].write_bytes(b"not a DICOM file at all")
    assert not any(lean_equals_pydicom(p, monkeypatch) for p in paths)
    assert "not a DICOM file" in _scan(paths[2]) and str(paths[1]) in _scan(paths[1])


def test_slice_position_is_numpys_cross_and_dot():
    """_position's scalar arithmetic gives numpy's IPP . (row x col) to the last bit."""
    rng = np.random.default_rng(5)
    for _ in range(2000):
        iop, ipp = (rng.normal(size=6) * rng.choice([1e-3, 1.0, 100.0])).tolist(), \
            (rng.normal(size=3) * 300).tolist()
        reference = float(np.dot(np.cross(np.asarray(iop[:3]), np.asarray(iop[3:])), ipp))
        assert dicom._position({"ImagePositionPatient": ipp,
                                "ImageOrientationPatient": iop}) == reference
