"""How far ED/ES land when a decoder reads a true LV volume curve instead of an Eq. 4 label.

A net trained on Eq. 4 labels outputs something between the label and what the frames show, the
LV volume. `measure` tests the decoders on the second extreme: cycles drawn as the synthetic cohort
draws them (data_prep.synthetic: heart kind, frame count 12-35, ES fraction, ejection and filling
waves, ED anywhere), the true volume sampled on the step grid, decoded, and compared with the
frames of largest and smallest volume (tools.label_shape_bias prints it).
"""
from __future__ import annotations

import numpy as np

from data_prep import synthetic
from models.config import N_STEPS
from tempregnet.labels import DECODERS, decode_steps, step_positions


def signed_cyclic(pred: int, true: int, n_frames: int) -> int:
    """pred - true on the cycle, in -T/2 .. T/2."""
    return (pred - true + n_frames // 2) % n_frames - n_frames // 2


def measure(trials: int, seed: int) -> dict:
    """{decoder: (signed ED, signed ES, |ED|, |ES|) mean errors} over random synthetic cycles."""
    rng = np.random.default_rng(seed)
    errors = {d: [] for d in DECODERS}
    for trial in range(trials):
        kind = synthetic.KINDS[trial % len(synthetic.KINDS)]
        n_frames = int(rng.integers(12, 36))
        shape = synthetic._draw_shape(rng, rng.uniform(0.30, 0.45), rng.uniform(600, 1150),
                                      synthetic.KIND_PARAMS[kind])
        ed = int(rng.integers(0, n_frames))
        ef = rng.uniform(0.2, 0.8)
        on_frames = synthetic.volume_curve((np.arange(n_frames) - ed) / n_frames, ef, shape)
        on_steps = synthetic.volume_curve((step_positions(n_frames, N_STEPS) - ed) / n_frames, ef, shape)
        true_ed, true_es = int(np.argmax(on_frames)), int(np.argmin(on_frames))
        for decoder in DECODERS:
            p_ed, p_es = decode_steps(on_steps, n_frames, "cycle", decoder)
            errors[decoder].append((signed_cyclic(p_ed, true_ed, n_frames),
                                    signed_cyclic(p_es, true_es, n_frames)))
    out = {}
    for decoder, e in errors.items():
        e = np.asarray(e, dtype=float)
        out[decoder] = tuple(e.mean(axis=0)) + tuple(np.abs(e).mean(axis=0))
    return out
