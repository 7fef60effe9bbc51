"""Readers (DICOM grouping, ordering, pixels; ACDC; Sunnybrook) against values the test wrote."""
from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGLosslessSV1, RLELossless, generate_uid

from data_prep.errors import InputError
from data_prep.readers import find_sequences, read_any
from data_prep.synthetic import write_dicom_series, write_nifti_cohort

MR = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"


def frames_of(t: int, h: int = 12, w: int = 10, seed: int = 0) -> np.ndarray:
    """Distinct integer frames: frame k has k * 1000 added, so order is visible."""
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 500, (t, h, w)) + 1000 * np.arange(t)[:, None, None]).astype(np.float64)


def bare_dataset(rows: int, cols: int, sop_class: str = MR) -> pydicom.Dataset:
    """A minimal image dataset with file meta, for cases the synthetic writer does not cover."""
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, ds.file_meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID, ds.PatientID = "1.2.3.4", "P1"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    return ds


def test_dicom_any_naming_and_order(tmp_path):
    """Random names, nested folders, names sorting against time: phases come back in TriggerTime order."""
    frames = frames_of(9)
    order = np.random.default_rng(1).permutation(9)
    names = [f"IMG{int(order[k]):04d}" for k in range(9)]   # name order != phase order
    write_dicom_series(tmp_path, frames, series_uid="1.2.3", slice_location=5.0, file_names=names,
                       subfolders=["a/b", "c", "."], rng=np.random.default_rng(2))
    (seq,) = read_any("dicom", tmp_path)
    np.testing.assert_array_equal(seq.frames, frames.astype(np.float32))
    assert seq.instances == list(range(1, 10))
    assert seq.ed is None and seq.es is None and seq.frames.dtype == np.float32


def test_trigger_time_then_instance_number(tmp_path):
    """TriggerTime decides; InstanceNumber breaks ties; without TriggerTime, InstanceNumber orders."""
    frames = frames_of(4)
    write_dicom_series(tmp_path / "a", frames, series_uid="1.1", slice_location=0.0,
                       trigger_times=[30, 0, 0, 10], instance_numbers=[1, 9, 2, 5])
    (seq,) = read_any("dicom", tmp_path / "a")
    # keys (trigger, instance): (30,1) (0,9) (0,2) (10,5) -> order 2, 1, 3, 0
    np.testing.assert_array_equal(seq.frames, frames[[2, 1, 3, 0]])
    write_dicom_series(tmp_path / "b", frames, series_uid="1.2", slice_location=0.0,
                       instance_numbers=[4, 2, 3, 1], omit=("TriggerTime",))
    (seq,) = read_any("dicom", tmp_path / "b")
    np.testing.assert_array_equal(seq.frames, frames[[3, 1, 2, 0]])


def test_series_and_slices_grouped(tmp_path):
    """Two slices in one series (told apart by position) and a second series: three sequences."""
    a, b, c = frames_of(5, seed=1), frames_of(6, seed=2), frames_of(7, seed=3)
    # distinct rngs: the writer draws random file names from it
    write_dicom_series(tmp_path, a, series_uid="9.1", slice_location=0.0, patient_id="A",
                       rng=np.random.default_rng(1))
    write_dicom_series(tmp_path, b, series_uid="9.1", slice_location=8.0, patient_id="A",
                       instance_numbers=range(6, 12), rng=np.random.default_rng(2))
    write_dicom_series(tmp_path, c, series_uid="9.2", slice_location=0.0, patient_id="B",
                       rng=np.random.default_rng(3))
    seqs = read_any("dicom", tmp_path)
    by_len = {s.n_frames: s for s in seqs}
    assert sorted(by_len) == [5, 6, 7]
    for expected in (a, b, c):
        np.testing.assert_array_equal(by_len[len(expected)].frames, expected)
    assert by_len[5].group == by_len[6].group != by_len[7].group      # patient A vs B
    assert len({s.seq_id for s in seqs}) == 3


def test_rescale_slope_intercept(tmp_path):
    """Stored values are mapped back to scanner units: frame = stored * slope + intercept."""
    frames = frames_of(3) * 2.0 - 100.0
    write_dicom_series(tmp_path, frames, series_uid="1.5", slice_location=0.0, rescale=(2.0, -100.0))
    ds = pydicom.dcmread(sorted(p for p in tmp_path.rglob("*") if p.is_file())[0])
    assert float(ds.RescaleSlope) == 2.0
    (seq,) = read_any("dicom", tmp_path)
    np.testing.assert_array_equal(seq.frames, frames)


def test_monochrome1_inverted(tmp_path):
    """MONOCHROME1 (0 = white) is flipped within the stored range: 65535 - stored for 16-bit unsigned."""
    frames = frames_of(3)
    write_dicom_series(tmp_path, frames, series_uid="1.6", slice_location=0.0, dtype="uint16",
                       tags={"PhotometricInterpretation": "MONOCHROME1"})
    (seq,) = read_any("dicom", tmp_path)
    np.testing.assert_array_equal(seq.frames, 65535.0 - frames)


def test_rgb_converted_to_grey(tmp_path):
    """RGB pixels become 0.299 R + 0.587 G + 0.114 B."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (3, 6, 5, 3)).astype(np.uint8)
    for k in range(3):
        ds = bare_dataset(6, 5)
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.InstanceNumber, ds.TriggerTime = k + 1, 10.0 * k
        ds.PixelData = rgb[k].tobytes()
        ds.save_as(tmp_path / f"f{k}.dcm", enforce_file_format=True)
    (seq,) = read_any("dicom", tmp_path)
    expected = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(seq.frames, expected, atol=1e-3)


def _enhanced_file(path, frames, triggers, positions):
    """An Enhanced MR multi-frame file: per-frame trigger delay and plane position."""
    n, rows, cols = frames.shape
    ds = bare_dataset(rows, cols, ENHANCED_MR)
    ds.NumberOfFrames = n
    ds.InstanceNumber = 1
    shared = pydicom.Dataset()
    orient = pydicom.Dataset()
    orient.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PlaneOrientationSequence = [orient]
    transform = pydicom.Dataset()
    transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = 0.5, 10, "US"
    shared.PixelValueTransformationSequence = [transform]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for k in range(n):
        item, cardiac, plane = pydicom.Dataset(), pydicom.Dataset(), pydicom.Dataset()
        cardiac.NominalCardiacTriggerDelayTime = triggers[k]
        plane.ImagePositionPatient = [0, 0, positions[k]]
        item.CardiacSynchronizationSequence, item.PlanePositionSequence = [cardiac], [plane]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.PixelData = frames.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_enhanced_multiframe(tmp_path):
    """One multi-frame file with two slices x 3 phases, shuffled: two sequences, rescaled, in time order."""
    stored = frames_of(6, seed=4)
    triggers = [200, 0, 100, 100, 200, 0]
    positions = [0, 0, 0, 7, 7, 7]
    _enhanced_file(tmp_path / "multi.dcm", stored, triggers, positions)
    seqs = read_any("dicom", tmp_path)
    assert len(seqs) == 2
    scanner = stored * 0.5 + 10
    np.testing.assert_array_equal(seqs[0].frames, scanner[[1, 2, 0]])    # slice at z = 0
    np.testing.assert_array_equal(seqs[1].frames, scanner[[5, 3, 4]])    # slice at z = 7


def test_compressed_rle_decodes(tmp_path):
    """A natively decodable compressed syntax (RLE Lossless) reads back exactly."""
    frames = frames_of(3)
    paths = write_dicom_series(tmp_path, frames, series_uid="1.7", slice_location=0.0)
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.compress(RLELossless)
        ds.save_as(p)
    assert pydicom.dcmread(paths[0]).file_meta.TransferSyntaxUID == RLELossless
    (seq,) = read_any("dicom", tmp_path)
    np.testing.assert_array_equal(seq.frames, frames)


def test_compressed_without_codec_names_package(tmp_path):
    """JPEG Lossless with no decoder installed: InputError naming the file and pylibjpeg / gdcm."""
    from pydicom.encaps import encapsulate
    from pydicom.pixels import get_decoder
    if get_decoder(JPEGLosslessSV1).is_available:
        pytest.skip("a JPEG Lossless decoder is installed here")
    for k in range(2):
        ds = bare_dataset(4, 4)
        ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
        ds.InstanceNumber, ds.TriggerTime = k + 1, 10.0 * k
        ds.PixelData = encapsulate([b"\xff\xd8\xff\xc3" + bytes(20) + b"\xff\xd9"])
        ds["PixelData"].VR = "OB"
        ds.save_as(tmp_path / f"j{k}.dcm", enforce_file_format=True)
    with pytest.raises(InputError) as err:
        read_any("dicom", tmp_path)
    assert err.value.path.endswith("j0.dcm")
    assert "pylibjpeg" in err.value.problem and "gdcm" in err.value.problem
    assert "JPEG Lossless" in err.value.problem


def test_acdc_layout_dataset_root_and_one_patient(tmp_path):
    """Info.cfg's 1-based ED/ES become 0-based; each slice is a sequence; a patient folder works alone."""
    import nibabel as nib
    write_nifti_cohort(tmp_path / "acdc", 2, seed=3, size=48)
    seqs = read_any("acdc", tmp_path / "acdc")
    for patient in ("patient001", "patient002"):
        folder = tmp_path / "acdc" / patient
        info = dict(line.split(": ") for line in (folder / "Info.cfg").read_text().splitlines())
        volume = nib.load(folder / f"{patient}_4d.nii.gz").get_fdata()
        mine = read_any("acdc", folder)
        assert len(mine) == volume.shape[2]
        for z, seq in enumerate(mine):
            assert (seq.ed, seq.es) == (int(info["ED"]) - 1, int(info["ES"]) - 1)
            np.testing.assert_array_equal(seq.frames, volume[:, :, z, :].transpose(2, 1, 0))
        assert len({s.group for s in mine}) == 1
    per_patient = [read_any("acdc", tmp_path / "acdc" / p) for p in ("patient001", "patient002")]
    assert len(seqs) == sum(map(len, per_patient))


def _circle(radius: float, n: int = 40) -> str:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return "".join(f"{16 + radius * np.cos(a):.2f} {16 + radius * np.sin(a):.2f}\n" for a in t)


def test_sunnybrook_labels_from_contours(tmp_path):
    """The larger contoured area is ED, the smaller ES, applied to every slice of the patient."""
    root = tmp_path / "sb"
    (root / "contourfiles" / "ORIG-1" / "i-contours").mkdir(parents=True)
    (root / "link.csv").write_text("patient_id,original_id\nPAT1,ORIG-1\n")
    n_phases = 8
    for s, location in enumerate((0.0, 10.0)):
        names = [f"{s * n_phases + k + 1}.dcm" for k in range(n_phases)]
        write_dicom_series(root / "dicoms" / "PAT1", frames_of(n_phases, 32, 32, seed=s),
                           series_uid="5.5", slice_location=location, file_names=names,
                           instance_numbers=range(s * n_phases + 1, (s + 1) * n_phases + 1))
    contour_dir = root / "contourfiles" / "ORIG-1" / "i-contours"
    # slice 0 only: phase 6 is large (ED, near the end), phase 2 small (ES)
    (contour_dir / "IM-0001-0007-icontour-manual.txt").write_text(_circle(9.0))
    (contour_dir / "IM-0001-0003-icontour-manual.txt").write_text(_circle(5.0))
    seqs = read_any("sunnybrook", root)
    assert len(seqs) == 2
    assert all((s.ed, s.es) == (6, 2) for s in seqs)
    assert all(s.source == "sunnybrook" for s in seqs)


def test_find_sequences_is_lazy_and_reports_problems(tmp_path):
    """find_sequences returns loadable sources plus problems; a stray text file is a problem, not a crash."""
    write_dicom_series(tmp_path, frames_of(3), series_uid="1.8", slice_location=0.0)
    (tmp_path / "notes.txt").write_text("not an image")
    found, problems = find_sequences("dicom", tmp_path)
    assert len(found) == 1 and found[0].load().n_frames == 3
    assert [p.problem for p in problems] == ["not a DICOM file"]
    assert problems[0].path.endswith("notes.txt")


# --- the plain-file path (read once, no second parse; issue 23's speed) --------------------------

def _both_ways(folder):
    """Frames of every sequence as load() gives them, and as pydicom decodes them; how many
    images took the plain-file path."""
    import dataclasses
    from data_prep.dicom import _load_frames
    found, problems = find_sequences("dicom", folder)
    assert not problems
    plain = sum(im.raw is not None for s in found for im in s.images)
    return [(s.load().frames, _load_frames([dataclasses.replace(im, raw=None)
                                            for im in s.images])) for s in found], plain


@pytest.mark.parametrize("kw", [dict(), dict(dtype="uint16", rescale=(2.0, -100.0)),
                                dict(tags={"PhotometricInterpretation": "MONOCHROME1"}),
                                dict(rescale=(0.5, 3.25))])
def test_plain_files_read_raw_equal_pydicom(tmp_path, kw):
    frames = np.random.default_rng(1).integers(0, 3000, (4, 12, 10)).astype(np.float64)
    write_dicom_series(tmp_path, frames, series_uid="1.9", slice_location=0.0, **kw)
    pairs, plain = _both_ways(tmp_path)
    assert plain == 4
    for fast, slow in pairs:
        np.testing.assert_array_equal(fast, slow)


def test_files_pydicom_must_decode_take_its_path(tmp_path):
    """Compressed pixels, and 12 stored bits with the unused high bits set, are decoded by
    pydicom (the plain path declines them) and give what pydicom gives."""
    frames = np.random.default_rng(2).integers(0, 3000, (3, 8, 8)).astype(np.float64)
    paths = write_dicom_series(tmp_path / "rle", frames, series_uid="1.8", slice_location=0.0)
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.compress(RLELossless)
        ds.save_as(p)
    pairs, plain = _both_ways(tmp_path / "rle")
    assert plain == 0 and np.array_equal(*pairs[0])
    high = frames.copy()
    high[0, 0, 0] = 40000                                  # beyond 12 bits
    write_dicom_series(tmp_path / "bits", high, series_uid="1.7", slice_location=0.0,
                       dtype="uint16", tags={"BitsStored": 12, "HighBit": 11})
    pairs, plain = _both_ways(tmp_path / "bits")
    assert plain == 3                                       # located, then declined on reading
    np.testing.assert_array_equal(*pairs[0])
