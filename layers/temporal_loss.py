"""The temporal structured loss of Eq. 2 as a Caffe Python layer (TemporalStructuredLoss)."""
from __future__ import annotations

import json

import caffe
import numpy as np

ALLOWED_KEYS: frozenset = frozenset()   # the layer has no settings; param_str may be "" or "{}"


def parse_param_str(param_str: str) -> dict:
    """param_str as a JSON object; unknown keys are an error."""
    params = json.loads(param_str) if param_str and param_str.strip() else {}
    if not isinstance(params, dict):
        raise ValueError(f"TemporalStructuredLoss: param_str must be a JSON object, got {param_str!r}")
    unknown = sorted(set(params) - ALLOWED_KEYS)
    if unknown:
        raise ValueError(f"TemporalStructuredLoss: unknown param_str keys {unknown}; it takes none")
    return params


def temporal_loss_and_grad(pred: np.ndarray, label: np.ndarray) -> tuple[float, np.ndarray]:
    """Eq. 2 averaged over the N sequences of T x N arrays, and its (sub)gradient w.r.t. pred.

    Per sequence, L_temp = (L_inc + L_dec) / 2 with L_inc, L_dec each divided by T (the number of
    steps, although there are T - 1 consecutive pairs: Eq. 2 as written). The batch loss is the
    mean over the N sequences, so the total count divided by is 2 * T * N. At a hinge's kink
    (equal consecutive predictions) the subgradient 0 is used.
    """
    n_steps, n_seq = pred.shape
    rise = np.diff(pred, axis=0)                  # eta_k - eta_{k-1}, (T-1) x N
    label_step = np.diff(label, axis=0)
    increasing = label_step > 0                   # 1(y_k > y_{k-1}): L_inc penalises a fall
    decreasing = label_step < 0                   # 1(y_k < y_{k-1}): L_dec penalises a rise
    norm = 2.0 * n_steps * n_seq
    loss = (np.sum(np.maximum(0.0, -rise)[increasing]) + np.sum(np.maximum(0.0, rise)[decreasing])) / norm
    d_rise = (decreasing & (rise > 0)).astype(np.float64) - (increasing & (rise < 0))
    grad = np.zeros((n_steps, n_seq))
    grad[1:] += d_rise / norm
    grad[:-1] -= d_rise / norm
    return float(loss), grad


class TemporalStructuredLoss(caffe.Layer):
    """Eq. 2 loss: bottoms pred (T x N or T x N x 1) and label (T x N); top the scalar loss.

    Time-major like every sequence blob here (docs/data.md, Blobs). The loss is the mean of Eq. 2 over
    the N sequences (see `temporal_loss_and_grad`). Give it `loss_weight: beta` (Eq. 3); the
    gradient is scaled by that weight (top diff), and the label never receives a gradient.
    param_str: JSON object with no keys (empty allowed).
    """

    def setup(self, bottom, top):
        parse_param_str(self.param_str)
        if len(bottom) != 2 or len(top) != 1:
            raise ValueError("TemporalStructuredLoss takes 2 bottoms (pred, label) and gives 1 top, "
                             f"got {len(bottom)} bottoms and {len(top)} tops")

    def reshape(self, bottom, top):
        pred_shape, label_shape = tuple(bottom[0].shape), tuple(bottom[1].shape)
        if len(label_shape) != 2:
            raise ValueError(f"TemporalStructuredLoss: label must be T x N, got shape {label_shape}")
        if pred_shape not in (label_shape, label_shape + (1,)):
            raise ValueError(f"TemporalStructuredLoss: pred shape {pred_shape} does not match label "
                             f"shape {label_shape} (expected T x N or T x N x 1)")
        if label_shape[0] < 2:
            raise ValueError(f"TemporalStructuredLoss: needs at least 2 time steps, got {label_shape}")
        top[0].reshape(1)

    def _as_steps(self, bottom):
        return (bottom[0].data.reshape(bottom[1].shape).astype(np.float64),
                bottom[1].data.astype(np.float64))

    def forward(self, bottom, top):
        loss, self._grad = temporal_loss_and_grad(*self._as_steps(bottom))
        top[0].data[0] = loss

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = (self._grad * top[0].diff.flat[0]).reshape(bottom[0].shape)
        # propagate_down[1] (the label) is never honoured: a label has no gradient
