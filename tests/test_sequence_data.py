"""SequenceData: time-major tops, cont, labels, crops, epoch order and bad input, against direct HDF5 reads."""
import json
import re

import caffe
import h5py
import numpy as np
import pytest

from data_prep.errors import InputError
from fixtures_h5 import write_prepared
from layers.sequence_data import gamma_curve, load_sequences, parse_param_str, rotate_zoom, warp_systole
from tempregnet.contract import SequenceContract
from tempregnet.labels import volume_label
from tempregnet.net_input import ZF_MEAN

T = 20
SIZE, CROP = 24, 16
EXPECTS = dict(n_steps=T, stored_size=SIZE, label="cycle")   # what the net expects of the data

def param_json(**params) -> str:
    """A param_str with the required keys (source "x") and params on top."""
    return json.dumps({"source": "x", "batch_size": 1, "crop": 8, **EXPECTS, **params})

def data_net(tmp_path, **params):
    """A net holding only the data layer, built from param_str (EXPECTS unless given)."""
    params = {**EXPECTS, **params}
    path = tmp_path / "data_net.prototxt"
    path.write_text(f"""layer {{ name: "data" type: "Python" top: "frames" top: "cont" top: "label"
  python_param {{ module: "layers.sequence_data" layer: "SequenceData" param_str: '{json.dumps(params)}' }} }}
""")
    caffe.set_mode_cpu()
    return caffe.Net(str(path), caffe.TEST)

@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    folder = write_prepared(tmp_path_factory.mktemp("prepared"), n_seq=5, size=SIZE, seed=1)
    with h5py.File(folder / "sequences.h5", "r") as f:
        return folder, f["frames"][:], f["label"][:]

def expected_input(frames, y, x):
    """T x 3 x C x C: the grey crop replicated to 3 channels minus the ZF mean, computed directly."""
    crop = frames[:, y:y + CROP, x:x + CROP].astype(np.float64)
    return np.stack([crop - m for m in ZF_MEAN], axis=1)

def test_test_mode_blobs_are_time_major_centre_crops_in_list_order(tmp_path, prepared):
    folder, frames, labels = prepared
    n = 4
    net = data_net(tmp_path, source=str(folder / "all.txt"), batch_size=n, crop=CROP)
    centre = (SIZE - CROP) // 2
    for batch_rows in ([0, 1, 2, 3], [4, 0, 1, 2]):       # list order, wrapping around
        net.forward()
        assert net.blobs["frames"].data.shape == (T * n, 3, CROP, CROP)
        assert net.blobs["cont"].data.shape == (T, n) and net.blobs["label"].data.shape == (T, n)
        for slot, row in enumerate(batch_rows):
            want = expected_input(frames[row], centre, centre)
            got = net.blobs["frames"].data[[t * n + slot for t in range(T)]]
            np.testing.assert_allclose(got, want, atol=1e-4)
            np.testing.assert_array_equal(net.blobs["label"].data[:, slot], labels[row])
        np.testing.assert_array_equal(net.blobs["cont"].data[0], 0)
        np.testing.assert_array_equal(net.blobs["cont"].data[1:], 1)

def locate(frames, cropped_grey):
    """(row, (y, x)): which stored sequence and where in its frame 0 a C x C grey crop sits (noise frames: unique)."""
    hits = [(row, (y, x)) for row in range(len(frames))
            for y in range(SIZE - CROP + 1) for x in range(SIZE - CROP + 1)
            if np.array_equal(frames[row, 0, y:y + CROP, x:x + CROP], cropped_grey)]
    assert len(hits) == 1
    return hits[0]

def test_train_mode_shuffles_each_epoch_and_crops_each_sequence_once(tmp_path, prepared):
    folder, frames, _ = prepared
    n = 5                                              # one batch = one epoch of the 5 sequences
    net = data_net(tmp_path, source=str(folder / "all.txt"), batch_size=n, crop=CROP, train=True, seed=3)
    orders, offsets = [], set()
    for _ in range(4):
        net.forward()
        blob = net.blobs["frames"].data.reshape(T, n, 3, CROP, CROP)
        grey = np.rint(blob[:, :, 0] + ZF_MEAN[0]).astype(np.uint8)   # T x N x C x C stored values
        order = []
        for slot in range(n):
            row, offset = locate(frames, grey[0, slot])
            order.append(row)
            for t in range(T):                         # same crop for every frame of the sequence
                y, x = offset
                np.testing.assert_array_equal(grey[t, slot], frames[row, t, y:y + CROP, x:x + CROP])
            offsets.add(offset)
        assert sorted(order) == list(range(5)), "each epoch visits every sequence exactly once"
        orders.append(tuple(order))
    assert len(set(orders)) > 1, "the order should change between epochs"
    assert len(offsets) > 1, "crops should be random"

def test_param_str_validation(tmp_path, prepared):
    folder = prepared[0]
    with pytest.raises(ValueError, match="unknown param_str keys"):
        parse_param_str(param_json(shuffle=True))
    with pytest.raises(ValueError, match="lacks required keys"):
        parse_param_str(json.dumps(dict(batch_size=1, crop=8)))
    with pytest.raises(ValueError, match="positive integer"):
        parse_param_str(param_json(batch_size=0))
    with pytest.raises(Exception, match="larger than the stored frame size"):
        data_net(tmp_path, source=str(folder / "all.txt"), batch_size=1, crop=SIZE + 1)

def test_bad_inputs_name_the_file(tmp_path, prepared):
    folder = prepared[0]
    bad = tmp_path / "bad.txt"
    bad.write_text("sequences.h5 notanumber\n")
    with pytest.raises(InputError, match="bad.txt: line 1"):
        load_sequences(bad, T, SIZE)
    out_of_range = folder / "out_of_range.txt"
    out_of_range.write_text("sequences.h5 99\n")
    with pytest.raises(InputError, match=r"out_of_range.txt: row 99 beyond"):
        load_sequences(out_of_range, T, SIZE)
    with pytest.raises(InputError, match="split list not found"):
        load_sequences(tmp_path / "missing.txt", T, SIZE)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(InputError, match="split list is empty"):
        load_sequences(empty, T, SIZE)
    with pytest.raises(InputError, match="expected 10 x 24 x 24"):
        load_sequences(folder / "all.txt", 10, SIZE)

def training_batches(tmp_path, folder, n, batches, **augment):
    """(net, T x N x C x C stored grey values) after each of a few forward passes in training mode."""
    net = data_net(tmp_path, source=str(folder / "all.txt"), batch_size=n, crop=CROP, train=True,
                   **augment)
    for _ in range(batches):
        net.forward()
        blob = net.blobs["frames"].data.reshape(T, n, 3, CROP, CROP)
        yield net, np.rint(blob[:, :, 0] + ZF_MEAN[0]).astype(np.uint8)

def test_roll_starts_each_sequence_at_a_random_step_with_its_label(tmp_path, prepared):
    folder, frames, labels = prepared
    n = 5
    shifts = set()
    for net, grey in training_batches(tmp_path, folder, n, 4, seed=5, roll=True):
        for slot in range(n):
            # which stored sequence and which of its steps the first step shows
            hits = [(row, s, (y, x)) for row in range(len(frames)) for s in range(T)
                    for y in range(SIZE - CROP + 1) for x in range(SIZE - CROP + 1)
                    if np.array_equal(frames[row, s, y:y + CROP, x:x + CROP], grey[0, slot])]
            assert len(hits) == 1
            row, shift, (y, x) = hits[0]
            want = np.roll(frames[row], -shift, axis=0)[:, y:y + CROP, x:x + CROP]
            np.testing.assert_array_equal(grey[:, slot], want)            # frames rolled...
            np.testing.assert_array_equal(net.blobs["label"].data[:, slot],
                                          np.roll(labels[row], -shift))   # ...with their label
            shifts.add(shift)
        np.testing.assert_array_equal(net.blobs["cont"].data[0], 0)
    assert len(shifts) > 3, "start steps should be random"

def test_flip_mirrors_whole_sequences_at_random(tmp_path, prepared):
    folder, frames, labels = prepared
    n = 5
    seen = set()
    for net, grey in training_batches(tmp_path, folder, n, 4, seed=7, flip=True):
        for slot in range(n):
            hits = []
            for row in range(len(frames)):
                for fy in (False, True):
                    for fx in (False, True):
                        seq = frames[row][:, ::-1 if fy else 1, ::-1 if fx else 1]
                        hits += [(row, fy, fx) for y in range(SIZE - CROP + 1)
                                 for x in range(SIZE - CROP + 1)
                                 if np.array_equal(seq[:, y:y + CROP, x:x + CROP], grey[:, slot])]
            assert len(hits) == 1, "every frame of the sequence flipped the same way"
            row, fy, fx = hits[0]
            np.testing.assert_array_equal(net.blobs["label"].data[:, slot], labels[row])
            seen.add((fy, fx))
    assert len(seen) == 4, "all four flips should occur"

def test_roll_and_flip_are_for_training_only(prepared):
    with pytest.raises(ValueError, match="roll is a training augmentation"):
        parse_param_str(param_json(roll=True))
    with pytest.raises(ValueError, match="flip is a training augmentation"):
        parse_param_str(param_json(flip=True))
    with pytest.raises(ValueError, match="roll must be true or false"):
        parse_param_str(param_json(train=True, roll=1))

def ramp(t=T, size=4):
    """A cycle whose step-k frame is the constant 10 k: the value names the source time."""
    return np.repeat(np.arange(t, dtype=np.uint8)[:, None, None] * 10, size * size, axis=1).reshape(t, size, size)

def test_warp_doubles_systole_by_hand():
    frames, label = warp_systole(ramp(), ed=0.0, es=5.0, scale=2.0, convention="cycle")
    # systole 5 -> 10 steps: output step k < 10 shows source time k / 2; diastole 15 -> 10 steps:
    # output step 15 shows source time 5 + (15 - 10) x 15 / 10 = 12.5, halfway from 120 to 130
    np.testing.assert_array_equal(frames[[0, 2, 4, 10, 15], 0, 0], [0, 10, 20, 50, 125])
    k = np.arange(T)
    want = np.where(k <= 10, (np.clip(10 - k, 0, None) / 10) ** 3, (np.clip(k - 10, 0, None) / 10) ** (1 / 3))
    np.testing.assert_allclose(label, want, atol=1e-6)
    assert label.argmin() == 10 and label.argmax() == 0

def test_warp_keeps_ed_wraps_the_cycle_and_respects_paper_labels():
    frames, label = warp_systole(ramp(), ed=15.0, es=2.0, scale=0.5, convention="cycle")
    # systole 7 -> 3.5 steps after ED 15: output step 17 (phase 2) shows source phase 4, step 19;
    # output step 0 (phase 5, diastole) shows source phase 7 + 1.5 x 13 / 16.5, i.e. step 3.18
    assert frames[15, 0, 0] == 150 and frames[17, 0, 0] == 190
    assert frames[0, 0, 0] == round(30 + 10 * (1.5 * 13 / 16.5 - 1))
    assert label[15] == 1.0 and int(np.argmin(label)) in (18, 19) and label.min() < 0.01
    # "paper" labels are not cyclic: ES stays before the end of the sequence however far stretched
    _, label = warp_systole(ramp(), ed=0.0, es=12.0, scale=3.0, convention="paper")
    np.testing.assert_allclose(label, volume_label(np.arange(T), T, 0, 19, "paper"), atol=1e-6)

def test_warp_by_one_returns_the_stored_sequence_and_label(prepared):
    folder, frames, labels = prepared
    stored, stored_labels, phases = load_sequences(folder / "all.txt", T, SIZE)
    for row in range(len(stored)):
        got_frames, got_label = warp_systole(stored[row], *phases[row], 1.0, "cycle")
        np.testing.assert_array_equal(got_frames, frames[row])
        np.testing.assert_allclose(got_label, labels[row], atol=1e-6)

def test_warp_in_the_layer_draws_a_scale_per_sequence_and_relabels(tmp_path, prepared):
    folder, frames, labels = prepared
    n, seed, warp = 5, 2, 0.5
    _, _, phases = load_sequences(folder / "all.txt", T, SIZE)
    rng = np.random.default_rng(seed)       # the layer's draws, in its order: epoch, then per slot
    scales = []
    for net, grey in training_batches(tmp_path, folder, n, 3, seed=seed, warp=warp):
        order = rng.permutation(len(frames))
        for slot, row in enumerate(order):
            y, x = int(rng.integers(0, SIZE - CROP + 1)), int(rng.integers(0, SIZE - CROP + 1))
            scale = float(np.exp(rng.uniform(-warp, warp)))
            want_frames, want_label = warp_systole(frames[row], *phases[row], scale, "cycle")
            np.testing.assert_array_equal(grey[:, slot], want_frames[:, y:y + CROP, x:x + CROP])
            np.testing.assert_allclose(net.blobs["label"].data[:, slot], want_label, atol=1e-6)
            scales.append(scale)
    assert min(scales) < 0.8 and max(scales) > 1.25, "scales should span exp(+-0.5)"

def test_rotate_zoom_by_hand():
    frames = np.arange(2 * 25, dtype=np.uint8).reshape(2, 5, 5)
    # a quarter turn about the centre moves pixels onto pixels: numpy's counter-clockwise rot90
    np.testing.assert_array_equal(rotate_zoom(frames, 90.0, 1.0), np.rot90(frames, axes=(1, 2)))
    np.testing.assert_array_equal(rotate_zoom(frames, 0.0, 1.0), frames)
    # zoom 2 on a linear ramp: output (y, x) shows the input at c + (y - c) / 2, c + (x - c) / 2,
    # which bilinear interpolation reproduces exactly on a ramp
    side, c = 9, 4.0
    y, x = np.mgrid[0:side, 0:side].astype(np.float32)
    ramp_image = (3 * x + 5 * y)[None]
    want = 3 * (c + (x - c) / 2) + 5 * (c + (y - c) / 2)
    np.testing.assert_allclose(rotate_zoom(ramp_image, 0.0, 2.0)[0], want, atol=1e-3)

def test_gamma_curve_by_hand():
    grey = np.array([[[0, 64, 255], [128, 200, 1]]], np.uint8)
    np.testing.assert_array_equal(gamma_curve(grey, 1.0), grey)
    # 255 (g / 255) ** 2: 64 -> 16.06, 128 -> 64.25, 200 -> 156.86, 1 -> 0.004
    np.testing.assert_array_equal(gamma_curve(grey, 2.0), [[[0, 16, 255], [64, 157, 0]]])
    assert gamma_curve(grey, 0.5).dtype == np.uint8 and gamma_curve(grey, 0.5)[0, 0, 1] == 128

def test_rotate_zoom_and_gamma_in_the_layer_draw_once_per_sequence(tmp_path, prepared):
    folder, frames, labels = prepared
    n, seed, rotate, zoom = 5, 3, 30.0, 0.2
    rng = np.random.default_rng(seed)       # the layer's draws, in its order: epoch, then per slot
    angles = []
    for net, grey in training_batches(tmp_path, folder, n, 2, seed=seed, rotate=rotate, zoom=zoom,
                                      gamma=0.3):
        order = rng.permutation(len(frames))
        for slot, row in enumerate(order):
            y, x = int(rng.integers(0, SIZE - CROP + 1)), int(rng.integers(0, SIZE - CROP + 1))
            degrees, scale = rng.uniform(-rotate, rotate), np.exp(rng.uniform(-zoom, zoom))
            want = rotate_zoom(frames[row], float(degrees), float(scale))
            want = gamma_curve(want, float(np.exp(rng.uniform(-0.3, 0.3))))
            np.testing.assert_array_equal(grey[:, slot], want[:, y:y + CROP, x:x + CROP])
            np.testing.assert_array_equal(net.blobs["label"].data[:, slot], labels[row])
            assert not np.array_equal(want, frames[row])
            angles.append(degrees)
    assert min(angles) < -10 and max(angles) > 10, "angles should span +-30 degrees"

def test_rotate_zoom_and_gamma_are_for_training_only_and_bounded():
    for key, bad in (("rotate", 200), ("zoom", 1.5), ("zoom", True), ("gamma", -0.1)):
        with pytest.raises(ValueError, match=f"{key} must be a number"):
            parse_param_str(param_json(train=True, **{key: bad}))
        with pytest.raises(ValueError, match=f"{key} is a training augmentation"):
            parse_param_str(param_json(**{key: 0.1}))

def test_warp_is_for_training_only_and_bounded():
    with pytest.raises(ValueError, match="warp is a training augmentation"):
        parse_param_str(param_json(warp=0.3))
    with pytest.raises(ValueError, match=r"warp must be a number in \[0, 1\]"):
        parse_param_str(param_json(train=True, warp=2))


def test_the_layer_refuses_data_of_another_contract(tmp_path, prepared):
    """Plain `caffe train` is as safe as tools.train: the net's expectations (steps, stored size,
    label convention) are checked against the listed files' sequence contract, in one error."""
    folder = prepared[0]
    source = str(folder / "all.txt")
    for changes, said in ((dict(stored_size=32), "stored_size 24 (the net expects 32)"),
                          (dict(n_steps=10), "steps 20 (the net expects 10)"),
                          (dict(label="paper"), "label 'cycle' (the net expects 'paper')")):
        with pytest.raises(Exception, match=re.escape(said)):
            data_net(tmp_path, source=source, batch_size=1, crop=CROP, **changes)
    paper = write_prepared(tmp_path / "paper", n_seq=2, size=SIZE, seed=4, contract=SequenceContract(
        steps=T, stored_size=SIZE, label="paper", roi=1.0))
    data_net(tmp_path, source=str(paper / "all.txt"), batch_size=1, crop=CROP, label="paper")
    with pytest.raises(ValueError, match="roll needs 'cycle' labels"):       # rolled paper labels
        parse_param_str(param_json(train=True, roll=True, label="paper"))
    bare = tmp_path / "bare"
    write_prepared(bare, n_seq=2, size=SIZE, seed=4)
    with h5py.File(bare / "sequences.h5", "a") as f:                      # no contract recorded
        f.attrs["provenance"] = json.dumps({"source": "older version"})
    with pytest.raises(Exception, match="no sequence contract recorded"):
        data_net(tmp_path, source=str(bare / "all.txt"), batch_size=1, crop=CROP)
