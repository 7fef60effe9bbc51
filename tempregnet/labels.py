"""Eq. 4 volume-like labels, their decoding into ED/ES frames (the decoders), and the step grid.

Frames are 0-based throughout the code; only readers of 1-based sources (ACDC's Info.cfg) and
user-facing output convert.

Two label conventions (see docs/deviations.md):

* ``"cycle"`` (default): Eq. 4 laid on the cardiac cycle. With j = (k - ED) mod T the phase
  since ED and s = (ES - ED) mod T the systole length, systole (j <= s) is ((s - j)/s)^delta,
  as in the paper, and diastole is ((j - s)/(T - s))^upsilon, scaled by its own length so
  that ED is the unique maximum (1) and ES the unique minimum (0) wherever ED falls.
  Decoded cyclically.
* ``"paper"``: Eq. 4 verbatim, y_k = |(k - ES)/(ES - ED)|^delta for ED < k <= ES, else
  ^upsilon. Late diastole exceeds 1 when diastole is longer than systole, and for ED > 0 the
  frames before ED mirror the systole, so ED is recoverable only when it is the first frame
  (the paper's data). Decoded linearly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DELTA = 3.0          # Eq. 4 exponent in systole (paper, section 2.2)
UPSILON = 1.0 / 3.0  # Eq. 4 exponent in diastole
CONVENTIONS = ("cycle", "paper")


def _check_placement(n_frames: int, ed: int, es: int) -> None:
    if n_frames < 2:
        raise ValueError(f"a sequence needs at least 2 frames, got {n_frames}")
    for name, k in (("ED", ed), ("ES", es)):
        if not 0 <= k < n_frames:
            raise ValueError(f"{name} frame {k} is outside 0..{n_frames - 1}")
    if ed == es:
        raise ValueError(f"ED and ES are the same frame ({ed})")


def volume_label(positions, n_frames: int, ed: int, es: int, convention: str = "cycle",
                 delta: float = DELTA, upsilon: float = UPSILON) -> np.ndarray:
    """Eq. 4 evaluated at (possibly fractional) frame positions of an n_frames-long cycle."""
    _check_placement(n_frames, ed, es)
    return _eq4(np.asarray(positions, dtype=np.float64), n_frames, ed, es, convention, delta,
                upsilon)


def _eq4(k: np.ndarray, n_frames: int, ed, es, convention: str, delta: float, upsilon: float):
    """Eq. 4 at positions k for placements (ed, es) that are checked: ints, or int arrays that
    broadcast against k (one template per placement at once, as _templates builds them)."""
    ed, es = np.asarray(ed), np.asarray(es)
    if convention == "paper":
        ratio = np.abs((k - es) / (es - ed).astype(np.float64))
        in_systole = np.where(ed < es, (k > ed) & (k <= es), False)
        return np.where(in_systole, ratio ** delta, ratio ** upsilon)
    if convention != "cycle":
        raise ValueError(f"unknown label convention {convention!r}; expected one of {CONVENTIONS}")
    phase = np.mod(k - ed, n_frames)             # time since ED, in frames
    systole = ((es - ed) % n_frames).astype(np.float64)
    diastole = n_frames - systole
    falling = np.clip((systole - phase) / systole, 0.0, None) ** delta
    rising = np.clip((phase - systole) / diastole, 0.0, None) ** upsilon
    return np.where(phase <= systole, falling, rising)


def label_curve(n_frames: int, ed: int, es: int, convention: str = "cycle", **kw) -> np.ndarray:
    """Eq. 4 at every frame 0..n_frames-1."""
    return volume_label(np.arange(n_frames), n_frames, ed, es, convention, **kw)


def decode_ed_es(curve, cyclic: bool = True) -> tuple[int, int]:
    """ED and ES frames of a volume-like curve: ES its minimum, ED its maximum.

    ``cyclic`` (for the "cycle" convention): ED is the global maximum, so a sequence may start
    anywhere in the cycle. Linear (for "paper"): ED is the maximum of the frames up to ES, i.e.
    the peak the systole descends from, as the paper's late-diastole values may exceed it.
    Ties go to the earliest frame. Several local extrema: the global ones win, which is what a
    single-cycle sequence has.
    """
    y = np.asarray(curve, dtype=np.float64)
    if y.ndim != 1 or y.size < 2:
        raise ValueError(f"expected a 1-D curve of at least 2 values, got shape {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError("curve contains NaN or infinite values")
    es = int(np.argmin(y))
    return peak_for(y, es, cyclic), es


def peak_for(curve, es: int, cyclic: bool) -> int:
    """ED given ES: the curve's maximum, before ES for linear ("paper") decoding."""
    y = np.asarray(curve)
    return int(np.argmax(y if cyclic or es == 0 else y[: es + 1]))


def decode_for(convention: str):
    """The decoder that inverts a label convention."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown label convention {convention!r}; expected one of {CONVENTIONS}")
    cyclic = convention == "cycle"
    return lambda curve: decode_ed_es(curve, cyclic=cyclic)


# --- the fixed-length time grid the LSTM is unrolled over -------------------------------------

def step_positions(n_frames: int, n_steps: int) -> np.ndarray:
    """Original-frame position sampled by each of n_steps steps: one cycle, evenly (cyclic)."""
    return np.arange(n_steps) * (n_frames / float(n_steps))


def cyclic_resample(values: np.ndarray, positions, weight_dtype=np.float64) -> np.ndarray:
    """values (one cycle along axis 0) at fractional positions: linear between the two nearest
    samples, the last wrapping to the first. The one cyclic interpolation of the project: frames
    onto the step grid, step curves back onto the frames, the data layer's systole warp."""
    n = values.shape[0]
    lo = np.floor(positions).astype(int)
    w = (positions - lo).astype(weight_dtype).reshape((-1,) + (1,) * (values.ndim - 1))
    return values[lo % n] * (1 - w) + values[(lo + 1) % n] * w


def steps_to_frames(step_values, n_frames: int) -> np.ndarray:
    """Resample a per-step curve (steps on the last axis) back onto the n_frames original frames."""
    v = np.moveaxis(np.asarray(step_values, dtype=np.float64), -1, 0)
    pos = np.arange(n_frames) * (v.shape[0] / float(n_frames))   # frame k in step units
    return np.moveaxis(cyclic_resample(v, pos), 0, -1)


DECODERS = ("fit", "extrema", "fit_es", "fit_rwave", "fit_trigger", "rwave_ed")


def decode_steps(step_values, n_frames: int, convention: str = "cycle",
                 method: str = "fit", rwave: float = 0.0,
                 prior: SystolePrior | None = None) -> tuple[int, int]:
    """ED/ES in original frames from a curve predicted on the resampled step grid.

    ``"fit"`` (default): the (ED, ES) placement whose Eq. 4 curve, sampled at the step positions,
    best matches the prediction up to a non-negative scale and an offset (least squares over
    all n_frames * (n_frames - 1) placements). It is exact on an Eq. 4 curve for any n_frames,
    where interpolating 20 steps back onto 12-35 frames and taking extrema loses about one frame.
    ``"extrema"``: the paper's rule, maximum and minimum after resampling onto the frames.
    ``"fit_es"``: ES from the fit, ED by the paper's rule given that ES (the maximum of the
    resampled curve, before ES for "paper" labels). ``"fit_rwave"`` (data_prep.rwave): ES from the
    fit, ED the fit's, moved forward to the first frame after the R wave (at ``rwave``, 0 unless
    the trigger times say otherwise) when the curve is flat in between: one decoder for scans
    that start at ED and those that do not. ``"fit_trigger"``: ED is the first frame after the R
    wave (the gating trigger: ED by its ECG definition), ES the best Eq. 4 fit with ED there.
    ``"rwave_ed"``: ED the first frame after the R wave, as fit_trigger, but ES the unconstrained
    fit's (as fit's), so a peak the curve places a frame or two off the trigger does not move ES.
    For sequences that start at ED: the fit
    places ED and ES together, so a systole predicted too short can pull ED off the peak at
    frame 0 (docs/deviations.md, 18); exact on "paper" labels with ED = 0, not for ED > 0.
    """
    if method == "extrema":
        y = _checked_steps(step_values)
        return decode_for(convention)(steps_to_frames(y, n_frames))
    decoded = decode_detail(step_values, n_frames, convention, method, rwave, prior)
    return decoded.ed, decoded.es


def _checked_steps(step_values) -> np.ndarray:
    y = np.asarray(step_values, dtype=np.float64)
    if y.ndim != 1 or y.size < 2 or not np.all(np.isfinite(y)):
        raise ValueError(f"expected a finite 1-D step curve, got shape {y.shape}")
    return y


@dataclass(frozen=True)
class SystolePrior:
    """A prior on the systole's share of the cycle for the fit decoders (not the paper's): the
    placement chosen minimises (1 - R^2) + weight x (its systole fraction - fraction)^2 instead
    of the residual alone, so where the curve leaves ES uncertain the usual timing decides.
    fraction: the median ((ES - ED) mod T) / T of the model's training sequences (recorded by
    tools.train as systole_fraction); weight: --es-prior, chosen on validation splits
    (tools.decoding_study)."""
    fraction: float
    weight: float

    def __post_init__(self):
        if not 0.0 < self.fraction < 1.0 or not self.weight >= 0.0:
            raise ValueError(f"a systole prior needs a fraction in (0, 1) and a weight >= 0, got "
                             f"{self.fraction}, {self.weight}")


@dataclass(frozen=True)
class TemplateFit:
    """Every Eq. 4 placement a decoder considers, fitted to a step curve by least squares with a
    non-negative scale and a free offset: placement p's curve is offset + scale[p] * template."""
    eds: np.ndarray          # ED of each placement
    ess: np.ndarray          # ES of each placement
    rss: np.ndarray          # residual sum of squares of each placement's best fit
    scale: np.ndarray        # >= 0
    offset: np.ndarray
    best: int                # the least score (ties: first placement in (ED, ES) order)
    n_frames: int
    n_steps: int
    convention: str
    score: np.ndarray        # what the placements are ranked by: rss, or rss / total + prior

    def curve_at(self, positions, p: int | None = None) -> np.ndarray:
        """Placement p's fitted curve (the best one by default) at frame positions."""
        p = self.best if p is None else p
        template = volume_label(positions, self.n_frames, int(self.eds[p]), int(self.ess[p]),
                                self.convention)
        return self.offset[p] + self.scale[p] * template


def template_fit(step_values, n_frames: int, convention: str = "cycle",
                 ed: int | None = None, prior: SystolePrior | None = None) -> TemplateFit:
    """The Eq. 4 fit of the "fit" decoders (all n_frames * (n_frames - 1) placements; only those
    with this ED when ed is given, as "fit_trigger" does), ranked by residual, or with a prior by
    the share of the curve left unexplained plus the prior's penalty."""
    y = _checked_steps(step_values)
    eds, ess, templates = _templates(n_frames, y.size, convention)
    if ed is not None:
        keep = eds == ed
        eds, ess, templates = eds[keep], ess[keep], templates[keep]
    t = templates - templates.mean(axis=1, keepdims=True)
    v = y - y.mean()
    tt = np.einsum("ps,ps->p", t, t)
    tv = t @ v
    gain = np.where(tv > 0, tv * tv / tt, 0.0)      # energy explained with scale >= 0
    scale = np.where(tv > 0, tv / tt, 0.0)
    offset = y.mean() - scale * templates.mean(axis=1)
    rss = np.maximum(float(v @ v) - gain, 0.0)
    if prior is None or prior.weight == 0:
        score, best = rss, int(np.argmax(gain))
    else:
        fraction = ((ess - eds) % n_frames) / n_frames
        score = rss / max(float(v @ v), 1e-12) + prior.weight * (fraction - prior.fraction) ** 2
        best = int(np.argmin(score))
    return TemplateFit(eds, ess, rss, scale, offset, best, n_frames, y.size, convention, score)


@dataclass(frozen=True)
class Decoded:
    """A decoder's answer with what it was read from: ED/ES (0-based original frames), the
    confidence in [0, 1] (see decode_detail) and the template fit (None for "extrema")."""
    ed: int
    es: int
    confidence: float
    fit: TemplateFit | None
    answers: np.ndarray | None = None    # per placement of fit: the (ED, ES) it would give


CONFIDENCE_FRAMES = 1     # an answer more than this many frames off (ED or ES) is an error
CONFIDENCE_DIGITS = 3     # as the outputs write it; plots and the review page show 2 of them


def written_confidence(value) -> float:
    """A confidence as every output writes it (and plots and the page show it, to 2 decimals)."""
    return round(float(value), CONFIDENCE_DIGITS)


def decode_detail(step_values, n_frames: int, convention: str = "cycle", method: str = "fit",
                  rwave: float = 0.0, prior: SystolePrior | None = None) -> Decoded:
    """decode_steps' answer with its template fit and a confidence.

    Every decoder is read through the Eq. 4 template fit: each placement p of the fit is mapped
    to the answer the decoder would give were p the best fit (fit, fit_trigger: p itself;
    fit_rwave: its ED snapped to the R wave as data_prep.rwave.snap_ed does; fit_es: ED the
    curve's peak given p's ES); the decoder's answer is that of the best placement ("extrema":
    the paper's rule on the resampled curve). The confidence is

        1 - rss_near / rss_far

    with rss_near the least residual of the placements whose answer is within CONFIDENCE_FRAMES
    of the answer given (ED and ES, frame numbers as Eq. 5 counts them) and rss_far the least
    residual of all the others: 0 when an answer more than a frame away fits as well, near 1 when
    every such answer fits far worse than this one. No constant is tuned (docs/detection.md).
    With a systole prior the placements' scores (unexplained share plus penalty) stand for the
    residuals, here and in the choice of the best placement.
    """
    y = _checked_steps(step_values)
    if method not in DECODERS:
        raise ValueError(f"unknown decoder {method!r}; expected one of {DECODERS}")
    restrict = None
    if method == "fit_trigger":
        from data_prep.rwave import first_frame_after
        restrict = first_frame_after(rwave, n_frames)
    fit = template_fit(y, n_frames, convention, ed=restrict, prior=prior)
    answers = np.stack([fit.eds, fit.ess], axis=1)
    if method == "rwave_ed":
        from data_prep.rwave import first_frame_after
        trigger = first_frame_after(rwave, n_frames)
        answers[:, 0] = np.where(fit.ess == trigger, fit.eds, trigger)
    if method in ("fit_rwave", "fit_es"):
        on_frames = steps_to_frames(y, n_frames)
        if method == "fit_rwave":
            from data_prep.rwave import snap_ed
            moved = {int(e): snap_ed(on_frames, int(e), rwave) for e in np.unique(fit.eds)}
        else:
            cyclic = convention == "cycle"
            moved = {int(s): peak_for(on_frames, int(s), cyclic) for s in np.unique(fit.ess)}
        key = fit.eds if method == "fit_rwave" else fit.ess
        ed = np.array([moved[int(k)] for k in key])
        answers[:, 0] = np.where(ed == fit.ess, fit.eds, ed)
    if method == "extrema":
        ed, es = decode_for(convention)(steps_to_frames(y, n_frames))
    else:
        ed, es = (int(v) for v in answers[fit.best])
    near = (np.abs(answers[:, 0] - ed) <= CONFIDENCE_FRAMES) & \
        (np.abs(answers[:, 1] - es) <= CONFIDENCE_FRAMES)
    return Decoded(int(ed), int(es), answer_confidence(fit.score, near), fit, answers)


def answer_confidence(rss: np.ndarray, near: np.ndarray) -> float:
    """1 - (least residual near the answer) / (least residual elsewhere), clipped to [0, 1]."""
    if not near.any():
        return 0.0
    if near.all():
        return 1.0
    rss_near, rss_far = float(rss[near].min()), float(rss[~near].min())
    if rss_far <= 0.0:
        return 0.0
    return float(np.clip(1.0 - rss_near / rss_far, 0.0, 1.0))


_TEMPLATE_CACHE: dict = {}


def _templates(n_frames: int, n_steps: int, convention: str):
    key = (n_frames, n_steps, convention)
    if key not in _TEMPLATE_CACHE:
        ed, es = np.meshgrid(np.arange(n_frames), np.arange(n_frames), indexing="ij")
        keep = (ed < es) if convention == "paper" else (ed != es)   # Eq. 4 is written for ED < ES
        ed, es = ed[keep], es[keep]
        pos = step_positions(n_frames, n_steps)
        for a, b in zip(ed, es):
            _check_placement(n_frames, int(a), int(b))
        rows = _eq4(pos[None, :], n_frames, ed[:, None], es[:, None], convention, DELTA, UPSILON)
        _TEMPLATE_CACHE[key] = (ed, es, rows)
    return _TEMPLATE_CACHE[key]
