"""Stored uint8 frames -> the blobs the nets take: crop, 3 channels, mean, time-major layout, `cont`."""
from __future__ import annotations

import numpy as np

# Per-channel BGR means of the ImageNet ZF model of the Faster R-CNN releases (PIXEL_MEANS).
ZF_MEAN = (102.9801, 115.9465, 122.7717)


def crop_offset(size: int, crop: int, rng: np.random.Generator | None = None) -> tuple[int, int]:
    """Top-left corner of a crop: random (training) when rng is given, else centred (testing)."""
    if crop > size:
        raise ValueError(f"crop {crop} is larger than the stored frame size {size}")
    if rng is None:
        return (size - crop) // 2, (size - crop) // 2
    return int(rng.integers(0, size - crop + 1)), int(rng.integers(0, size - crop + 1))


def net_input(frames: np.ndarray, crop: int, mean=ZF_MEAN, offset=None) -> np.ndarray:
    """S x H x W uint8 -> S x 3 x crop x crop float32; one crop for all frames of a sequence."""
    if frames.ndim != 3 or frames.shape[1] != frames.shape[2]:
        raise ValueError(f"expected S x H x H frames, got shape {frames.shape}")
    y, x = offset if offset is not None else crop_offset(frames.shape[1], crop)
    grey = frames[:, y:y + crop, x:x + crop].astype(np.float32)
    return grey[:, None, :, :] - np.asarray(mean, np.float32)[None, :, None, None]


def time_major(sequences: np.ndarray) -> np.ndarray:
    """N x T x 3 x C x C per-sequence inputs -> the (T*N) x 3 x C x C frames blob (row t*N + n)."""
    n, t = sequences.shape[:2]
    return np.ascontiguousarray(sequences.swapaxes(0, 1)).reshape((t * n,) + sequences.shape[2:])


def sequence_starts(n_steps: int, n_sequences: int) -> np.ndarray:
    """The T x N `cont` blob: 0 at each sequence's first step (the LSTM state resets), else 1."""
    cont = np.ones((n_steps, n_sequences), np.float32)
    cont[0] = 0.0
    return cont
