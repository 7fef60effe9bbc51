"""Physical scale and the automatic LV crop on synthetic phantoms: any field of view, pixel size,
heart position or rotation gives the same stored crop (within CENTRE_TOLERANCE_MM) and ED/ES."""
from __future__ import annotations

import json

import numpy as np
import pytest

from data_prep import prepare
from data_prep.errors import InputError
from data_prep.hdf5 import load_prepared
from data_prep.heart_crop import find_stack
from data_prep.physical import CROPS_NAME
from data_prep.pixel_size import estimate_stack, outer_radius_px, temporal_mean
from data_prep.scale import crop_box, crop_padded, resolve_spacing, to_mm_grid
from data_prep.sequence import CineSequence
from data_prep.synthetic import KIND_PARAMS, generate_patient, write_dicom_series
from tempregnet.baselines import lv_areas
from tempregnet.contract import read_contract
from tempregnet.labels import decode_steps

FIELD_MM, SIZE = 128.0, 96
CENTRE_TOLERANCE_MM = 15.0     # crop centre vs the phantom's LV centre (docs: measured <= 12.4 mm)
FRAME_TOLERANCE = 1            # ED/ES of the stored crops (segmentation baseline) vs the truth
AREA_TOLERANCE = 0.15          # stored LV area at ED (pixels), variant vs reference
# (same field of view and pixel size): pixel size, field of view, heart position, rotation
VARIANTS = {
    "reference": dict(fov_mm=300.0, size=200),                 # 1.5 mm
    "fov150_px0.7": dict(fov_mm=150.0, size=214),
    "fov400_px2": dict(fov_mm=400.0, size=200),
    "fov400_px0.7": dict(fov_mm=400.0, size=571),
    "shifted": dict(fov_mm=300.0, size=200, shift_mm=(30.0, -35.0)),
    "rotated": dict(fov_mm=300.0, size=200, rotation_deg=70.0),
}


def _phantom(index: int, **kw):
    rng = np.random.default_rng([7, index])
    return generate_patient(rng, index, n_slices=3, **kw)


def _clean_phantom(index: int, **kw):
    """No noise, bias or breathing: the baseline's ED/ES then reflect geometry, not noise."""
    return _phantom(index, clean=True, **kw)


def _write_dicom(folder, p) -> None:
    for i, frames in enumerate(p.slices):
        write_dicom_series(folder / f"s{i}", frames, series_uid=f"1.2.3.{i}",
                           slice_location=-10.0 * i, pixel_spacing=p.pixel_spacing,
                           heart_rate=p.heart_rate, rng=np.random.default_rng(i))


def _prepared(tmp_path, name, p):
    src = tmp_path / f"{name}-dicom"
    _write_dicom(src, p)
    out = tmp_path / f"{name}-prep"
    assert prepare.main(["--source", "dicom", str(src), str(out), "--size", str(SIZE),
                         "--mm-per-px", repr(FIELD_MM / SIZE), "--workers", "1",
                         "--folds", "1"]) == 0
    data = load_prepared(out)
    crops = json.loads((out / CROPS_NAME).read_text())["sequences"]
    return data, crops


def lv_size(data) -> float:
    """Median over rows of the largest LV area (stored pixels) the segmentation baseline finds."""
    return float(np.median([lv_areas(f, "level_set").max() for f in data["frames"]]))


def data_dir(tmp_path, name):
    return tmp_path / f"{name}-prep"


def _truth_centre_mm(p, slice_index):
    return p.lv_center[slice_index].mean(axis=0) * p.pixel_spacing


@pytest.mark.slow
@pytest.mark.parametrize("index", [1, 3])          # a dilated and a hypertrophic heart
def test_same_crop_and_ed_es_for_any_scanner(tmp_path, index):
    results = {}
    for name, kw in VARIANTS.items():
        p = _clean_phantom(index, **kw)
        data, crops = _prepared(tmp_path, name, p)
        assert read_contract(data_dir(tmp_path, name)).mm_per_px == pytest.approx(FIELD_MM / SIZE)
        assert data["frames"].shape[1:] == (20, SIZE, SIZE)
        # each row's crop centre vs the phantom's LV centre (mean over frames) of its slice
        for row, crop in enumerate(crops):
            assert crop["spacing_from"] == "header"
            assert crop["input_mm_per_px"] == pytest.approx([p.pixel_spacing] * 2, rel=1e-4)
            err, i = min((np.hypot(*(np.array(crop["centre_mm"]) - _truth_centre_mm(p, i))), i)
                         for i in range(len(p.slices)))
            assert err <= CENTRE_TOLERANCE_MM, (name, row, err)
            r_ed = np.sqrt(p.lv_area[i].max() / np.pi) * p.pixel_spacing
            wall = KIND_PARAMS[p.kind]["wall_mm"][1]              # the thickest wall of its kind
            assert err + r_ed + wall <= FIELD_MM / 2, (name, row, err, r_ed)   # LV inside
        # ED/ES of the stored crops by an independent method: the segmentation baseline's LV
        # areas on the stored steps, summed over the stack (a volume), largest / smallest
        volume = sum(lv_areas(f, "level_set") for f in data["frames"])
        found = {decode_steps(volume, int(data["n_frames"][0]), "cycle", "extrema")}
        results[name] = (data, p, found)
    ref_data, ref_p, _ = results["reference"]
    for name, (data, p, found) in results.items():
        assert (p.ed, p.es) == (ref_p.ed, ref_p.es)             # the same cycle was drawn
        n = p.n_frames                                          # and is read alike: ED/ES of
        for ed, es in found:                                     # every stored slice within a
            for got, true in ((ed, p.ed), (es, p.es)):           # frame of the phantom's
                assert min(abs(got - true), n - abs(got - true)) <= FRAME_TOLERANCE, (name, found)
        # physical scale: the LV is as many stored pixels on every scanner (area at ED)
        assert lv_size(data) == pytest.approx(lv_size(ref_data), rel=AREA_TOLERANCE), name


def test_lv_found_in_noisy_moved_and_rotated_stacks():
    """find_stack on noisy phantoms (Rician noise, coil bias, breathing) placed anywhere."""
    for index in range(4):
        for kw in (dict(), dict(shift_mm=(-30.0, 30.0), rotation_deg=-120.0),
                   dict(shift_mm=(25.0, -20.0), rotation_deg=160.0)):
            p = _phantom(index, **kw)
            crops = find_stack([(f, (p.pixel_spacing,) * 2) for f in p.slices], FIELD_MM)
            for i, crop in enumerate(crops):
                err = np.hypot(*(np.array(crop.centre_mm) - _truth_centre_mm(p, i)))
                assert err <= CENTRE_TOLERANCE_MM, (index, kw, i, err)


def test_spacing_missing_is_none_unless_overridden():
    seq = CineSequence(np.random.rand(4, 8, 8).astype(np.float32), "a", "g", "nifti",
                       meta={"pixel_spacing_note": "NIfTI pixdim is the 1 x 1 x 1 placeholder"})
    assert resolve_spacing(seq, None, "case1") == (None, "NIfTI pixdim is the 1 x 1 x 1 placeholder")
    assert resolve_spacing(seq, 1.5, "case1") == ((1.5, 1.5), "override")
    seq.meta["pixel_spacing_mm"] = (1.25, 1.5)
    assert resolve_spacing(seq, 2.0, "case1") == ((1.25, 1.5), "header")   # the header wins
    seq.meta["pixel_spacing_mm"] = (0.0, 1.5)
    with pytest.raises(InputError, match="implausible"):
        resolve_spacing(seq, None, "case1")


def test_prepare_without_spacing_estimates_it_or_takes_the_override(tmp_path):
    p = _phantom(0, fov_mm=300.0, size=128)
    src = tmp_path / "dicom"
    write_dicom_series(src, p.slices[0], series_uid="1.2.3", slice_location=0.0,
                       omit=("PixelSpacing",))
    out = tmp_path / "prep"
    assert prepare.main(["--source", "dicom", str(src), str(out), "--size", "32",
                         "--mm-per-px", "4", "--workers", "1", "--folds", "1"]) == 0
    crop, = json.loads((out / CROPS_NAME).read_text())["sequences"]
    estimate = estimate_stack([p.slices[0]], 128.0)
    assert crop["spacing_from"] == "estimated"
    assert crop["input_mm_per_px"] == pytest.approx([estimate.mm_per_px] * 2, rel=1e-4)
    assert load_prepared(out)["provenance"]["counts"]["input_spacing_from"] == {"estimated": 1}
    out = tmp_path / "prep2"
    assert prepare.main(["--source", "dicom", str(src), str(out), "--size", "32",
                         "--mm-per-px", "4", "--input-mm-per-px", "2.34375", "--workers", "1",
                         "--folds", "1"]) == 0
    crop, = json.loads((out / CROPS_NAME).read_text())["sequences"]
    assert crop["spacing_from"] == "override" and crop["input_mm_per_px"] == [2.34375] * 2


def _rings(size: int, mm_per_px: float, pool_mm=22.0, wall_mm=10.0, frames=6):
    """A bright pool in a dark ring on a lighter background, beating, at mm_per_px (numpy)."""
    c = (size - 1) / 2.0
    yy, xx = np.mgrid[0:size, 0:size]
    r = np.hypot(yy - c, xx - c) * mm_per_px
    out = []
    for k in range(frames):
        pool = pool_mm * (1.0 - 0.15 * np.sin(np.pi * k / frames))
        img = np.where(r <= pool, 200.0, np.where(r <= pool_mm + wall_mm, 40.0, 150.0))
        out.append(img)
    return np.stack(out).astype(np.float32), (c, c)


@pytest.mark.parametrize("mm_per_px", [0.8, 1.5, 2.2])
def test_outer_radius_is_the_ring_edge_in_pixels(mm_per_px):
    """The rays cross the pool's ring outwards at its outer edge: pool + wall mm, in pixels."""
    frames, centre = _rings(int(200 / mm_per_px), mm_per_px)
    disc_px = 20.0 / mm_per_px
    got = outer_radius_px(temporal_mean(frames), centre, disc_px, mm_per_px)
    assert got == pytest.approx(32.0 / mm_per_px, abs=1.0)


def test_nifti_placeholder_rules(tmp_path):
    """Exactly what counts as no pixel size in a NIfTI header (data_prep.scale's docstring)."""
    nib = pytest.importorskip("nibabel")
    from data_prep.acdc import nifti_spacing
    cases = [(("unknown", (1.0, 1.0, 1.0)), None),
             (("mm", (1.0, 1.0, 1.0)), (1.0, 1.0)),
             (("unknown", (1.0, 1.0, 10.0)), (1.0, 1.0)),
             (("unknown", (1.5625, 1.5625, 10.0)), (1.5625, 1.5625)),
             (("mm", (1.25, 1.5, 8.0)), (1.5, 1.25)),             # rows are pixdim[2] apart
             (("meter", (0.0015, 0.0015, 0.01)), (1.5, 1.5))]
    for k, ((units, zooms), expected) in enumerate(cases):
        image = nib.Nifti1Image(np.zeros((4, 4, 2, 3), np.int16), np.eye(4))
        image.header.set_zooms(zooms + (1.0,))
        image.header.set_xyzt_units(units)
        path = tmp_path / f"c{k}.nii.gz"
        nib.save(image, path)
        spacing, note = nifti_spacing(path)
        if expected is None:
            assert spacing is None and "placeholder" in note, (units, zooms)
        else:
            assert spacing == pytest.approx(expected, rel=1e-6) and note is None, (units, zooms)


def test_mm_grid_and_padded_crop_against_numpy():
    frames = np.arange(2 * 6 * 4, dtype=np.float32).reshape(2, 6, 4)
    # 6 rows of 1 mm, 4 columns of 2 mm -> 3 x 4 pixels of 2 mm (area averaging of row pairs)
    grid = to_mm_grid(frames, (1.0, 2.0), 2.0)
    assert grid.shape == (2, 3, 4)
    np.testing.assert_allclose(grid, frames.reshape(2, 3, 2, 4).mean(axis=2), rtol=1e-6)
    box = crop_box((0.0, 0.0), 4.0, (1.0, 2.0))           # 4 mm: 4 rows x 2 columns
    assert box == (-2, -1, 4, 2)
    window = crop_padded(frames, box, fill=-1.0)
    expected = np.full((2, 4, 2), -1.0, np.float32)
    expected[:, 2:, 1:] = frames[:, :2, :1]
    np.testing.assert_array_equal(window, expected)


def test_image_centre_crop_is_the_centre_at_the_same_scale(tmp_path):
    p = _phantom(0, fov_mm=300.0, size=120)                      # 2.5 mm pixels
    src = tmp_path / "dicom"
    write_dicom_series(src, p.slices[0], series_uid="1.2.3", slice_location=0.0,
                       pixel_spacing=p.pixel_spacing)
    out = tmp_path / "prep"
    assert prepare.main(["--source", "dicom", str(src), str(out), "--size", "32",
                         "--mm-per-px", "4", "--crop", "image centre", "--workers", "1",
                         "--folds", "1"]) == 0
    crop, = json.loads((out / CROPS_NAME).read_text())["sequences"]
    assert crop["centre_px"] == [59.5, 59.5] and crop["radius_mm"] == 0.0
    assert crop["side_mm"] == pytest.approx(128.0)
    contract = read_contract(out)
    assert (contract.crop, contract.mm_per_px, contract.field_mm) == ("image centre", 4.0, 128.0)


@pytest.mark.parametrize("shape", [(47, 44), (127, 127), (64, 90)])
def test_filter_bank_is_filter2d_with_reflected_borders(shape):
    """The FFT bank of the crop finder gives what cv2.filter2D (BORDER_REFLECT) gives, kernel by
    kernel, borders included."""
    from data_prep.heart_crop import _bank_kernels, _filter, _filter_bank
    image = np.random.default_rng(3).random(shape).astype(np.float32)
    for which, kernels in enumerate(_bank_kernels()):
        got = _filter_bank(image, which)
        assert got.shape == (len(kernels),) + shape
        for k, kernel in enumerate(kernels):
            np.testing.assert_allclose(got[k], _filter(image, kernel), atol=2e-5)
