"""TempReg-Net defined once with caffe.net_spec: ZF trunk, per-frame feature, 20-step LSTM, per-step head, losses, solver."""
from __future__ import annotations

import json
import math

from caffe import layers as L
from caffe import params as P
from caffe.net_spec import NetSpec
from caffe.proto import caffe_pb2

from models.config import NetConfig, Variant

PHASES = ("train", "test", "deploy")

# Learning-rate multipliers (weights, biases): Caffe's usual 2x for biases, no decay on biases.
FINETUNE = [dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)]
ZERO = dict(type="constant", value=0)


# The head's filler is not in the paper. Xavier (std ~ 1/sqrt(fan_in)) rather than Gaussian 0.01:
# with the paper's U[-0.01, 0.01] LSTM, a 0.01 head scales the gradient reaching the LSTM by 0.01
# and vice versa, and the nets sat for hundreds of iterations at the constant-prediction plateau.
HEAD_FILLER = dict(type="xavier")

def conv_side(size: int, kernel: int, stride: int, pad: int) -> int:
    """Output side of a Caffe convolution (floor)."""
    return (size + 2 * pad - kernel) // stride + 1


def pool_side(size: int, kernel: int, stride: int, pad: int) -> int:
    """Output side of a Caffe pooling layer (ceil, clipped so the last window starts inside the padded input)."""
    out = int(math.ceil((size + 2 * pad - kernel) / stride)) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def pool5_side(crop: int) -> int:
    """pool5 side of the ZF trunk for a crop x crop input (conv1 7/2 p3, pool 3/2 p1, conv2 5/2 p2, pool 3/2 p1, pool5 3/2)."""
    side = pool_side(conv_side(crop, 7, 2, 3), 3, 2, 1)
    side = pool_side(conv_side(side, 5, 2, 2), 3, 2, 1)
    return pool_side(side, 3, 2, 0)          # conv3..conv5 keep the side (3x3, pad 1)


def _conv_relu(n, bottom, index: int, width: int, kernel: int, stride: int, pad: int):
    conv = L.Convolution(bottom, num_output=width, kernel_size=kernel, stride=stride, pad=pad,
                         param=FINETUNE, weight_filler=dict(type="msra"), bias_filler=ZERO)
    n[f"conv{index}"] = conv
    n[f"relu{index}"] = L.ReLU(conv, in_place=True, name=f"relu{index}")
    return conv


def _lrn_pool(n, bottom, index: int, pad: int, lrn: bool = True):
    # ZF's LRN: local_size 3, alpha 5e-5, beta 0.75 within each channel (py-faster-rcnn ZF).
    if lrn:
        bottom = n[f"norm{index}"] = L.LRN(bottom, local_size=3, alpha=5e-5, beta=0.75,
                                           norm_region=P.LRN.WITHIN_CHANNEL)
    n[f"pool{index}"] = L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=3, stride=2, pad=pad)
    return n[f"pool{index}"]


def _fc(n, name: str, bottom, width: int, dropout: float | None, suffix: str):
    n[name] = L.InnerProduct(bottom, num_output=width, param=FINETUNE,
                             weight_filler=dict(type="xavier"), bias_filler=ZERO)
    n[f"relu{suffix}"] = L.ReLU(n[name], in_place=True, name=f"relu{suffix}")
    if dropout:
        n[f"drop{suffix}"] = L.Dropout(n[name], dropout_ratio=dropout, in_place=True, name=f"drop{suffix}")
    return n[name]


def zf_trunk(n, frames, cfg: NetConfig):
    """conv1..fc7 with the ImageNet ZF layer names, then fc_frame: (T*N) x q per-frame features."""
    got = pool5_side(cfg.crop)
    assert got == cfg.pool5_size, f"{cfg.name}: crop {cfg.crop} gives pool5 {got} x {got}, config says {cfg.pool5_size}"
    w1, w2, w3, w4, w5 = cfg.conv_widths
    x = _lrn_pool(n, _conv_relu(n, frames, 1, w1, 7, 2, 3), 1, pad=1, lrn=cfg.lrn)
    x = _lrn_pool(n, _conv_relu(n, x, 2, w2, 5, 2, 2), 2, pad=1, lrn=cfg.lrn)
    x = _conv_relu(n, x, 3, w3, 3, 1, 1)
    x = _conv_relu(n, x, 4, w4, 3, 1, 1)
    x = _conv_relu(n, x, 5, w5, 3, 1, 1)
    n.pool5 = L.Pooling(x, pool=P.Pooling.MAX, kernel_size=3, stride=2)   # w5 x 6 x 6 for zf
    x = _fc(n, "fc6", n.pool5, cfg.fc_width, cfg.dropout, "6")
    x = _fc(n, "fc7", x, cfg.fc_width, cfg.dropout, "7")
    # New name, so -weights with the ImageNet model leaves it at its filler; x_t in R^q.
    return _fc(n, "fc_frame", x, cfg.feature_dim, None, "_frame")


def _data_param(cfg: NetConfig, source: str, batch_size: int, train: bool, seed: int,
                label: str) -> str:
    # n_steps, stored_size and label: what the net expects of the prepared data; the layer checks
    # them against the data's sequence contract.
    param = dict(source=source, batch_size=batch_size, crop=cfg.crop, n_steps=cfg.n_steps,
                 stored_size=cfg.stored_size, label=label, train=train, seed=seed)
    if train and cfg.train_roll:
        param["roll"] = True
    if train and cfg.train_flip:
        param["flip"] = True
    for key, value in (("warp", cfg.train_warp), ("rotate", cfg.train_rotate), ("zoom", cfg.train_zoom),
                       ("gamma", cfg.train_gamma)):
        if train and value:
            param[key] = value
    return json.dumps(param, sort_keys=True)


FROZEN = [dict(lr_mult=0, decay_mult=0)]


def temporal_inputs(n, frames, cfg: NetConfig):
    """(T*N) x 3 x C x C input with the sequence's changes over time in two of its channels.

    Contrast (`input_contrast`), channel 0: each frame minus its sequence's mean frame. Motion
    (`input_motion`), channel 2: the next frame minus the previous one, cyclic over the T steps
    (a prepared sequence is one period). What changes over the cycle, the blood pool as the
    ventricle empties and fills, stands out, so a frame's place in the cycle becomes a local image
    feature, and the motion channel tells emptying from filling at the frame itself, where a
    one-pass LSTM would only learn it a step later. Stock Caffe layers only, on the T steps laid
    out as channels (1 x T x NC x C): the mean is a fixed 1 x 1 convolution (weights 1/T, never
    learned), the neighbours are the steps sliced and concatenated one step round.
    """
    t, c = cfg.n_steps, cfg.crop
    n.frames_first, n.frames_second, n.frames_third = L.Slice(frames, axis=1, slice_point=[1, 2],
                                                              ntop=3)
    channels = [n.frames_first, n.frames_second, n.frames_third]
    if cfg.input_contrast:
        n.frames_steps = L.Reshape(n.frames_first, shape=dict(dim=[1, t, -1, c]))  # 1 x T x NC x C
        n.frames_mean = L.Convolution(n.frames_steps, num_output=1, kernel_size=1, bias_term=False,
                                      param=FROZEN, weight_filler=dict(type="constant", value=1.0 / t))
        n.frames_mean_steps = L.Tile(n.frames_mean, axis=1, tiles=t)               # 1 x T x NC x C
        n.frames_change = L.Eltwise(n.frames_steps, n.frames_mean_steps, coeff=[1, -1])
        channels[0] = n.frames_change_first = L.Reshape(n.frames_change,
                                                        shape=dict(dim=[-1, 1, c, c]))  # (T*N) x 1
    if cfg.input_motion:
        n.frames_third_steps = L.Reshape(n.frames_third, shape=dict(dim=[1, t, -1, c]))
        n.frames_start, n.frames_after = L.Slice(n.frames_third_steps, axis=1, slice_point=[1], ntop=2)
        n.frames_next = L.Concat(n.frames_after, n.frames_start, axis=1)          # step k: k + 1
        n.frames_before, n.frames_end = L.Slice(n.frames_third_steps, axis=1, slice_point=[t - 1],
                                                ntop=2)
        n.frames_previous = L.Concat(n.frames_end, n.frames_before, axis=1)        # step k: k - 1
        n.frames_motion_steps = L.Eltwise(n.frames_next, n.frames_previous, coeff=[1, -1])
        channels[2] = n.frames_motion = L.Reshape(n.frames_motion_steps, shape=dict(dim=[-1, 1, c, c]))
    n.frames_temporal = L.Concat(*channels, axis=1)
    return n.frames_temporal


def net_proto(cfg: NetConfig, variant: Variant, phase: str, source: str | None = None,
              batch_size: int | None = None, seed: int = 0,
              label: str | None = None) -> caffe_pb2.NetParameter:
    """The train, test or deploy net of one configuration and Table 1 variant; train and test
    nets read the split list `source` of data with Eq. 4 convention `label`."""
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; expected one of {PHASES}")
    if phase != "deploy" and (source is None or label is None):
        raise ValueError(f"the {phase} net needs the split list (source) and the label convention")
    n = NetSpec()
    t = cfg.n_steps
    if phase == "deploy":
        batch_size = batch_size or 1       # any N: reshape frames and cont, the net follows
        n.frames = L.Input(shape=dict(dim=[t * batch_size, 3, cfg.crop, cfg.crop]))
        n.cont = L.Input(shape=dict(dim=[t, batch_size]))
    else:
        train = phase == "train"
        batch_size = batch_size or (cfg.batch_size if train else cfg.test_batch_size)
        n.frames, n.cont, n.label = L.Python(
            module="layers.sequence_data", layer="SequenceData", ntop=3, name="data",
            param_str=_data_param(cfg, source, batch_size, train, seed, label))
    frames = (temporal_inputs(n, n.frames, cfg) if cfg.input_contrast or cfg.input_motion
              else n.frames)
    if cfg.input_scale != 1.0:
        n.frames_scaled = L.Power(frames, power_param=dict(scale=cfg.input_scale))
        frames = n.frames_scaled
    feature = zf_trunk(n, frames, cfg)                                 # (T*N) x q
    n.fc_frame_steps = L.Reshape(feature, shape=dict(dim=[t, -1, cfg.feature_dim]))  # T x N x q
    if variant.use_lstm:
        init = dict(type="uniform", min=-cfg.lstm_init, max=cfg.lstm_init)
        rp = dict(num_output=cfg.lstm_hidden, weight_filler=init, bias_filler=init)
        if cfg.lstm_cycles == 1:                     # the paper: one pass over the T steps
            n.lstm1 = L.LSTM(n.fc_frame_steps, n.cont, recurrent_param=rp)       # T x N x hidden
            steps = n.lstm1
        else:
            # A cine sequence is one period: the LSTM reads it lstm_cycles times in a row (state
            # carried, cont 0 only at the very start) and the last reading is the output, so that
            # every step, the first included, has seen the whole cycle. The CNN runs once.
            k = cfg.lstm_cycles
            n.cont_carry = L.Power(n.cont, power_param=dict(scale=0, shift=1))   # T x N of ones
            n.lstm1_input = L.Concat(*[n.fc_frame_steps] * k, axis=0)           # kT x N x q
            n.lstm1_cont = L.Concat(n.cont, *[n.cont_carry] * (k - 1), axis=0)  # kT x N
            n.lstm1 = L.LSTM(n.lstm1_input, n.lstm1_cont, recurrent_param=rp)   # kT x N x hidden
            n.lstm1_warmup, n.lstm1_last = L.Slice(n.lstm1, axis=0, slice_point=[(k - 1) * t],
                                                   ntop=2)
            n.lstm1_warmup_unused = L.Silence(n.lstm1_warmup, ntop=0)
            steps = n.lstm1_last                                                 # T x N x hidden
    else:
        n.cont_unused = L.Silence(n.cont, ntop=0)   # CNN + Reg ignores sequence boundaries
        steps = n.fc_frame_steps
    head = L.InnerProduct(steps, num_output=1, axis=2, name="volume_pred",
                          param=[dict(lr_mult=cfg.head_lr_mult, decay_mult=1),
                                 dict(lr_mult=2 * cfg.head_lr_mult, decay_mult=0)],
                          weight_filler=HEAD_FILLER, bias_filler=ZERO)
    if phase == "deploy":
        n.volume_pred_steps = head                                         # T x N x 1
        n.volume_pred = L.Reshape(head, shape=dict(dim=[t, -1]), name="volume_pred_reshape")  # T x N
        return n.to_proto()
    n.volume_pred = head                                                   # T x N x 1
    # Eq. 3: L2 (Caffe: sum over T x N / 2T) + beta x Eq. 2 (mean over the N sequences).
    n.l2_loss = L.EuclideanLoss(n.volume_pred, n.label)
    if variant.beta:
        n.temporal_loss = L.Python(n.volume_pred, n.label, module="layers.temporal_loss",
                                   layer="TemporalStructuredLoss", param_str="{}",
                                   loss_weight=variant.beta)
    return n.to_proto()


def solver_proto(cfg: NetConfig, train_net: str, test_net: str | None, snapshot_prefix: str,
                 max_iter: int | None = None, test_iter: int | None = None, seed: int = 0,
                 gpu: bool = True) -> caffe_pb2.SolverParameter:
    """The config's solver (SGD with momentum for the paper's model, section 3) with a step policy;
    solver_mode GPU as the paper ran."""
    s = caffe_pb2.SolverParameter()
    s.train_net = train_net
    if test_net:
        s.test_net.append(test_net)
        s.test_iter.append(test_iter or cfg.test_iter)
        s.test_interval = cfg.test_interval
    s.type = cfg.solver_type
    s.base_lr = cfg.base_lr
    s.momentum = cfg.momentum
    if cfg.solver_type == "Adam":
        s.momentum2 = cfg.momentum2
    s.weight_decay = cfg.weight_decay
    s.clip_gradients = cfg.clip_gradients
    s.lr_policy = "step"
    s.gamma = cfg.gamma
    s.stepsize = cfg.stepsize
    s.max_iter = max_iter or cfg.max_iter
    s.display = cfg.display
    s.snapshot = cfg.snapshot
    s.snapshot_prefix = snapshot_prefix
    s.random_seed = seed
    s.solver_mode = caffe_pb2.SolverParameter.GPU if gpu else caffe_pb2.SolverParameter.CPU
    return s
