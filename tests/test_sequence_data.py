"""SequenceData: time-major tops, cont, labels, crops, epoch order and bad input, against direct HDF5 reads."""
import json

import caffe
import h5py
import numpy as np
import pytest

from data_prep.errors import InputError
from data_prep.net_input import ZF_MEAN
from fixtures_h5 import write_prepared
from layers.sequence_data import load_sequences, parse_param_str

T = 20
SIZE, CROP = 24, 16

def data_net(tmp_path, **params):
    """A net holding only the data layer, built from param_str."""
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
        parse_param_str(json.dumps(dict(source="x", batch_size=1, crop=8, shuffle=True)))
    with pytest.raises(ValueError, match="lacks required keys"):
        parse_param_str(json.dumps(dict(batch_size=1, crop=8)))
    with pytest.raises(ValueError, match="positive integer"):
        parse_param_str(json.dumps(dict(source="x", batch_size=0, crop=8)))
    with pytest.raises(Exception, match="larger than the stored frame size"):
        data_net(tmp_path, source=str(folder / "all.txt"), batch_size=1, crop=SIZE + 1)

def test_bad_inputs_name_the_file(tmp_path, prepared):
    folder = prepared[0]
    bad = tmp_path / "bad.txt"
    bad.write_text("sequences.h5 notanumber\n")
    with pytest.raises(InputError, match="bad.txt: line 1"):
        load_sequences(bad, T)
    out_of_range = folder / "out_of_range.txt"
    out_of_range.write_text("sequences.h5 99\n")
    with pytest.raises(InputError, match=r"out_of_range.txt: row 99 beyond"):
        load_sequences(out_of_range, T)
    with pytest.raises(InputError, match="split list not found"):
        load_sequences(tmp_path / "missing.txt", T)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(InputError, match="split list is empty"):
        load_sequences(empty, T)
    with pytest.raises(InputError, match="expected 10 x S x S"):
        load_sequences(folder / "all.txt", 10)

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
        parse_param_str(json.dumps(dict(source="x", batch_size=1, crop=8, roll=True)))
    with pytest.raises(ValueError, match="flip is a training augmentation"):
        parse_param_str(json.dumps(dict(source="x", batch_size=1, crop=8, flip=True)))
    with pytest.raises(ValueError, match="roll must be true or false"):
        parse_param_str(json.dumps(dict(source="x", batch_size=1, crop=8, train=True, roll=1)))
