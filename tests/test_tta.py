"""Test-time augmentation (tempregnet.inference.augmentation_views): the views follow the model's
training symmetries, and the averaged curve maps each view's curve back to the input's steps:
on the mean-brightness net (flip-invariant, equivariant to rolls in time) it equals the plain
curve, which a view left rolled, or rolled the wrong way back, would break."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from trivial_net import N_STEPS, STORED, write_run_dir

pytest.importorskip("caffe")

from tempregnet.inference import augmentation_views, forward_steps, load_model  # noqa: E402


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    model = load_model(write_run_dir(tmp_path_factory.mktemp("run")))
    return dataclasses.replace(model, description={**model.description, "train_flip": True,
                                                   "train_roll": True})


def test_views_follow_the_training_symmetries(loaded):
    views = augmentation_views(loaded)
    assert len(views) == 16 and len(set(views)) == 16
    assert sorted({k for _, _, k in views}) == [0, N_STEPS // 4, N_STEPS // 2, 3 * N_STEPS // 4]
    paper = dataclasses.replace(loaded, contract=loaded.contract.replace(label="paper"))
    assert {k for _, _, k in augmentation_views(paper)} == {0}          # Eq. 4 verbatim: no rolls
    plain = dataclasses.replace(loaded, description={})
    assert augmentation_views(plain) == [(False, False, 0)]


def test_averaged_curve_maps_every_view_back(loaded):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(2, N_STEPS, STORED, STORED)).astype(np.uint8)
    plain = forward_steps(loaded, frames)
    # the net is a per-frame brightness: every view, mapped back, gives the plain curve
    np.testing.assert_allclose(forward_steps(loaded, frames, augment=True), plain, rtol=1e-5)
