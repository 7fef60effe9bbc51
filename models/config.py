"""Net configurations (faithful ZF and a small ZF-like net) and the Table 1 variants: all defaults live here."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

N_STEPS = 20  # LSTM unroll length; sequences are resampled onto this grid (docs/data.md, Contracts)


@dataclass(frozen=True)
class NetConfig:
    """Sizes of one net family; `zf` is the paper's model, `small` a fast stand-in for tests and the demo."""
    name: str
    description: str
    stored_size: int          # S of the prepared HDF5 frames (docs/data.md, HDF5 layout)
    crop: int                 # network input C; random crop when training, centre crop otherwise
    conv_widths: tuple        # conv1..conv5 outputs
    fc_width: int             # fc6 and fc7 outputs
    feature_dim: int          # q: per-frame feature x_t fed to the LSTM (fc_frame)
    lstm_hidden: int          # LSTM hidden size (the paper does not give it)
    pool5_size: int           # expected pool5 side; the generator asserts it from the arithmetic
    n_steps: int = N_STEPS
    lrn: bool = True          # ZF's local response normalisation after conv1 and conv2
    batch_size: int = 4       # sequences per training batch (N)
    test_batch_size: int = 4
    # Solver (section 3): SGD, fine-tuned layers at base_lr, the new regression head at 10x.
    solver_type: str = "SGD"     # Caffe solver type; "Adam" uses momentum as beta1, momentum2 as beta2
    momentum2: float = 0.999
    base_lr: float = 1e-4
    head_lr_mult: float = 10.0
    weight_decay: float = 5e-4   # alpha of Eq. 3 (up to Caffe's normalisation; docs/design.md, Nets)
    momentum: float = 0.9
    # Not in the paper: the global gradient L2 norm is clipped, as LRCN trained its Caffe LSTMs
    # (clip_gradients 15). Without it, the small net's CNN + Reg variant diverged at once.
    clip_gradients: float = 10.0
    gamma: float = 0.1
    stepsize: int = 20000
    max_iter: int = 50000
    snapshot: int = 5000
    test_interval: int = 1000
    test_iter: int = 50          # the training command recomputes it from the test list
    display: int = 20
    dropout: float = 0.5
    lstm_init: float = 0.01      # LSTM parameters ~ U[-0.01, 0.01] (section 3)
    # 1: the paper's single pass. k > 1: the LSTM reads the cycle k times and reports on the last
    # reading, so sequences that start mid-cycle have context at their first steps (docs/deviations.md, 7).
    lstm_cycles: int = 1
    # Training augmentation (not in the paper, which only crops): start every training sequence at
    # a random step, frames and labels rolled together. Valid for the "cycle" label convention only.
    train_roll: bool = False
    # Training augmentation (not in the paper; Caffe's `mirror` does left-right): random left-right
    # and up-down flips of each training sequence. Valid for any label convention.
    train_flip: bool = False
    # Training augmentation (not in the paper): each training sequence's systole is stretched by
    # a random factor exp(U[-w, w]) and relabelled (data layer `warp`), so ES moves from step to
    # step and its timing must be read from the images. 0 = off. Valid for either convention.
    train_warp: float = 0.0
    # Training augmentation (not in the paper): each training sequence is rotated by U[-r, r]
    # degrees and zoomed by exp(U[-z, z]) about the frame centre (data layer `rotate`, `zoom`).
    train_rotate: float = 0.0
    train_zoom: float = 0.0
    # Training augmentation (not in the paper): grey values raised to a random power exp(U[-g, g]).
    train_gamma: float = 0.0
    # Not in the paper, both part of the net (models.tempregnet.temporal_inputs), so caffe train,
    # the deploy net and every tool apply them alike; the channels they leave alone show the frame.
    # Contrast: the first input channel shows each frame minus the mean frame of its sequence.
    input_contrast: bool = False
    # Motion: the third input channel shows the next frame minus the previous one (cyclic).
    input_motion: bool = False
    # Not in the paper: the net multiplies its input (grey frames, 0-255 less ImageNet ZF's mean,
    # the scale ImageNet's weights expect) by this before the trunk (a Power layer, so caffe train,
    # the deploy net and every tool apply it alike). From scratch, at 1 the ZF's features reach
    # the LSTM at tens to thousands, where its U[-0.01, 0.01] gates saturate (docs/deviations.md, 25).
    input_scale: float = 1.0

    def replace(self, **kw) -> "NetConfig":
        """A copy with some fields changed (unknown fields raise TypeError)."""
        return dataclasses.replace(self, **kw)


# The ImageNet ZF model of the Fast/Faster R-CNN releases (layer names conv1..conv5, fc6, fc7).
# Input 192 from stored 224 frames: 192 -> conv1 96 -> pool1 49 -> conv2 25 -> pool2 13 -> pool5 6,
# so pool5 is 6 x 6 x 256 = 9216, the length fc6 of that caffemodel expects (224 would give 7 x 7).
# Those releases' prototxts set `scale_train: false` on drop6/drop7, a field of the Fast R-CNN fork
# of Caffe only (dropout then scales by 1-p at test time instead of by 1/(1-p) at training time).
# BVLC Caffe has no such field, so our drop6/drop7 are stock BVLC Dropout: fc6/fc7 activations
# come out 1/(1-p) = 2x the fork's in both phases. We do not compensate: fc7 feeds the new
# fc_frame layer, which learns its own scale.
ZF = NetConfig(
    name="zf",
    description="ZF (ImageNet ZF of py-faster-rcnn) + 20-step LSTM: the paper's model",
    stored_size=224, crop=192,
    conv_widths=(96, 256, 384, 384, 256), fc_width=4096,
    feature_dim=1024,        # q = 1024 (section 2.1)
    lstm_hidden=256,         # not in the paper; LRCN-sized and ample for a 1-D per-step output
    pool5_size=6,
    batch_size=2, test_batch_size=2,
)

# Same generator, smaller input and widths: fast enough for tests and the demo on a CPU.
# It is a small ZF-like net trained from scratch, NOT the paper's model; never report it as such.
SMALL = NetConfig(
    name="small",
    description="small ZF-like net + 20-step LSTM (tests/demo; not the paper's model)",
    stored_size=72, crop=64,
    conv_widths=(16, 32, 32, 32, 32), fc_width=128,
    feature_dim=64, lstm_hidden=64,
    pool5_size=2,
    batch_size=4, test_batch_size=4,
    # From scratch rather than fine-tuned, so Adam (3e-4, head still at 10x, /10 for the last
    # quarter of a 3,000-iteration run): with the paper's SGD this net needed ~3x the iterations
    # to reach the same training loss (docs/deviations.md, 14). No dropout: with it this narrow net
    # sat at the constant-predictor plateau on some seeds. No LRN: it took ~40 % of the time
    # of a training iteration here, and the held-out error showed no consistent difference.
    solver_type="Adam", base_lr=3e-4, momentum=0.9, momentum2=0.999,
    stepsize=2250, max_iter=3000, snapshot=500, test_interval=100,
    test_iter=10, display=10, dropout=0.0, lrn=False,
    lstm_cycles=2, train_roll=True, train_flip=True,
)

# The small net at the ACDC copy's native resolution (95-100 px frames): stored 96, crop 88.
SMALL96 = SMALL.replace(
    name="small96",
    description="small ZF-like net + 20-step LSTM on 88 px frames (not the paper's model)",
    stored_size=96, crop=88, pool5_size=3,
)

CONFIGS = {c.name: c for c in (ZF, SMALL, SMALL96)}


@dataclass(frozen=True)
class Variant:
    """One column of Table 1: whether the LSTM is used and the temporal loss weight beta."""
    name: str
    description: str
    use_lstm: bool
    beta: float   # loss_weight of the temporal structured loss (Eq. 3); 0 drops the layer


# beta = 1 by default: with Caffe's normalisations (docs/design.md, Nets) both loss terms are per-sequence
# averages of comparable size, so 1 weighs them evenly. The paper cross-validated it.
DEFAULT_BETA = 1.0

VARIANTS = {v.name: v for v in (
    Variant("cnn_reg", "CNN + Reg: per-frame regression on the frame feature, no LSTM", False, 0.0),
    Variant("tempreg_notsc", "TempReg-Net without TSC (beta = 0)", True, 0.0),
    Variant("tempreg", "TempReg-Net: L2 + beta x temporal structured loss", True, DEFAULT_BETA),
)}


def get_config(name: str) -> NetConfig:
    """The configuration called name, or a ValueError listing the known ones."""
    if name not in CONFIGS:
        raise ValueError(f"unknown config {name!r}; expected one of {sorted(CONFIGS)}")
    return CONFIGS[name]


def get_variant(name: str) -> Variant:
    """The Table 1 variant called name, or a ValueError listing the known ones."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; expected one of {sorted(VARIANTS)}")
    return VARIANTS[name]
