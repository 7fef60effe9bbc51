"""tools.activations: blob sizes and their change over time, against numpy on the trivial net."""
import numpy as np
import pytest

from cli import run_module
from data_prep.hdf5 import load_rows
from tempregnet.net_input import ZF_MEAN
from trivial_net import CROP, STORED, write_prepared, write_trivial_net

pytest.importorskip("caffe")


def test_brightness_blob_size_and_change_match_numpy(tmp_path):
    data = write_prepared(tmp_path / "data", [(20, 0, 7, 0, 7), (30, 4, 15, 4, 15)], [[0, 1]])
    deploy, weights = write_trivial_net(tmp_path / "net", batch=1)
    res = run_module("tools.activations", "--deploy", deploy, "--weights", weights,
                     "--list", data / "fold0_test.txt", "--sequences", "2")
    assert res.returncode == 0, res.stderr
    table = {line.split()[0]: [float(v) for v in line.split()[1:]]
             for line in res.stdout.splitlines()[2:]}
    # the trivial net's brightness: each frame's mean grey (central crop) less ZF's mean
    frames = load_rows(data / "fold0_test.txt")["frames"].astype(np.float64)
    top = (STORED - CROP) // 2
    grey = frames[:, :, top:top + CROP, top:top + CROP].mean(axis=(2, 3)) - np.mean(ZF_MEAN)
    np.testing.assert_allclose(table["brightness"], [np.abs(grey).mean(), grey.std(axis=1).mean()],
                               rtol=1e-3)
    assert table["cont"][0] == pytest.approx(19 / 20)


def test_a_missing_list_or_net_is_one_line(tmp_path):
    res = run_module("tools.activations", "--deploy", tmp_path / "none.prototxt",
                     "--list", tmp_path / "none.txt")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
