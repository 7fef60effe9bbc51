"""Our CPU patches to Caffe (tools/caffe/patches/0010-0019): outputs and gradients against numpy references.

0010 convolves several images per im2col + GEMM; its forward and bottom gradient must also equal,
bit for bit, what Caffe computes one image at a time (a net of one image takes the old path), so
that training runs give the same numbers as before the patch. 0011 computes the within-channel
LRN in one pass instead of through five helper layers.
"""
import numpy as np
import pytest

caffe = pytest.importorskip("caffe", reason="pycaffe is not built: run `make caffe`")


def load_net(tmp_path, text: str, name: str):
    path = tmp_path / f"{name}.prototxt"
    path.write_text("force_backward: true\n" + text)
    caffe.set_mode_cpu()
    return caffe.Net(str(path), caffe.TRAIN)


def conv_net(tmp_path, shape, out, kernel, stride=1, pad=0, dilation=1, group=1, bias=True):
    dims = " ".join(f"dim: {d}" for d in shape)
    text = f"""layer {{ name: "x" type: "Input" top: "x" input_param {{ shape {{ {dims} }} }} }}
layer {{ name: "conv" type: "Convolution" bottom: "x" top: "y"
  convolution_param {{ num_output: {out} kernel_size: {kernel} stride: {stride} pad: {pad}
    dilation: {dilation} group: {group} bias_term: {str(bias).lower()}
    weight_filler {{ type: "gaussian" std: 0.1 }} bias_filler {{ type: "gaussian" std: 0.1 }} }} }}
"""
    return load_net(tmp_path, text, f"conv_{shape[0]}")


def conv_reference(x, w, b, stride, pad, dilation, group, dy):
    """Direct convolution in float64, one kernel offset at a time: y, dx, dw, db."""
    n, c, h, wd = x.shape
    o, cg, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh = (h + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    ow = (wd + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    y = np.zeros((n, o, oh, ow))
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    og = o // group
    for g in range(group):
        cs, os_ = slice(g * cg, (g + 1) * cg), slice(g * og, (g + 1) * og)
        for i in range(k):
            for j in range(k):
                rows = slice(i * dilation, i * dilation + stride * (oh - 1) + 1, stride)
                cols = slice(j * dilation, j * dilation + stride * (ow - 1) + 1, stride)
                patch = xp[:, cs, rows, cols]                       # N x C/g x OH x OW
                y[:, os_] += np.einsum("oc,ncyx->noyx", w[os_, :, i, j], patch)
                dw[os_, :, i, j] += np.einsum("noyx,ncyx->oc", dy[:, os_], patch)
                dxp[:, cs, rows, cols] += np.einsum("oc,noyx->ncyx", w[os_, :, i, j], dy[:, os_])
    if b is not None:
        y += b[None, :, None, None]
    db = dy.sum(axis=(0, 2, 3))
    return y, dxp[:, :, pad:pad + h, pad:pad + wd], dw, db


# (images, channels, side, outputs, kernel, stride, pad, dilation, group, bias): several GEMM
# batches with a remainder (41 images of 10 x 10 outputs per GEMM), ZF's strided first layers,
# dilation, no bias, and cases the batched path leaves to Caffe's own loop (group 2, one image).
CASES = [
    (70, 3, 10, 5, 3, 1, 1, 1, 1, True),
    (6, 3, 23, 8, 7, 2, 3, 1, 1, True),
    (5, 4, 13, 6, 5, 2, 2, 1, 1, False),
    (4, 2, 12, 3, 3, 1, 2, 2, 1, True),
    (3, 4, 9, 6, 3, 1, 1, 1, 2, True),
    (1, 3, 11, 4, 3, 1, 1, 1, 1, True),
]


@pytest.mark.parametrize("case", CASES)
def test_convolution_matches_numpy(tmp_path, case):
    n, c, side, out, k, s, p, d, g, bias = case
    net = conv_net(tmp_path, (n, c, side, side), out, k, s, p, d, g, bias)
    rng = np.random.default_rng(n + side)
    x = rng.normal(size=net.blobs["x"].data.shape).astype(np.float32)
    net.blobs["x"].data[...] = x
    net.forward()
    dy = rng.normal(size=net.blobs["y"].data.shape).astype(np.float32)
    net.blobs["y"].diff[...] = dy
    for param in net.params["conv"]:
        param.diff[...] = 0
    net.backward()
    w = net.params["conv"][0].data.astype(np.float64)
    b = net.params["conv"][1].data.astype(np.float64) if bias else None
    y, dx, dw, db = conv_reference(x.astype(np.float64), w, b, s, p, d, g, dy.astype(np.float64))
    np.testing.assert_allclose(net.blobs["y"].data, y, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(net.blobs["x"].diff, dx, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(net.params["conv"][0].diff, dw, rtol=1e-4, atol=1e-3)
    if bias:
        np.testing.assert_allclose(net.params["conv"][1].diff, db, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("case", [CASES[0], CASES[1]])
def test_batched_convolution_equals_one_image_at_a_time(tmp_path, case):
    """Forward and bottom gradient bit for bit as Caffe's per-image loop (what a 1-image net runs)."""
    n, c, side, out, k, s, p, d, g, bias = case
    many = conv_net(tmp_path, (n, c, side, side), out, k, s, p, d, g, bias)
    one = conv_net(tmp_path, (1, c, side, side), out, k, s, p, d, g, bias)
    for mine, theirs in zip(one.params["conv"], many.params["conv"]):
        mine.data[...] = theirs.data
    rng = np.random.default_rng(1)
    many.blobs["x"].data[...] = rng.normal(size=many.blobs["x"].data.shape)
    many.forward()
    many.blobs["y"].diff[...] = rng.normal(size=many.blobs["y"].data.shape)
    many.backward()
    for i in range(n):
        one.blobs["x"].data[...] = many.blobs["x"].data[i:i + 1]
        one.forward()
        one.blobs["y"].diff[...] = many.blobs["y"].diff[i:i + 1]
        one.backward()
        np.testing.assert_array_equal(one.blobs["y"].data[0], many.blobs["y"].data[i])
        np.testing.assert_array_equal(one.blobs["x"].diff[0], many.blobs["x"].diff[i])


def lrn_net(tmp_path, shape, size, alpha, beta):
    dims = " ".join(f"dim: {d}" for d in shape)
    text = f"""layer {{ name: "x" type: "Input" top: "x" input_param {{ shape {{ {dims} }} }} }}
layer {{ name: "norm" type: "LRN" bottom: "x" top: "y"
  lrn_param {{ local_size: {size} alpha: {alpha} beta: {beta} norm_region: WITHIN_CHANNEL }} }}
"""
    return load_net(tmp_path, text, "lrn")


def lrn_reference(x, size, alpha, beta):
    """Caffe's within-channel LRN: x (1 + alpha / size^2 * sum of x^2 over the size x size window)^-beta."""
    r = (size - 1) // 2
    sq = np.pad(x * x, ((0, 0), (0, 0), (r, r), (r, r)))
    h, w = x.shape[2:]
    window = sum(sq[:, :, i:i + h, j:j + w] for i in range(size) for j in range(size))
    return x * (1 + alpha / size ** 2 * window) ** -beta


# ZF's settings (3, 5e-5, 0.75) on inputs of the scale ZF's conv1 gives, and ones that make
# the normalisation strong (and beta other than 0.75, which takes the general power).
@pytest.mark.parametrize("size,alpha,beta,scale", [(3, 5e-5, 0.75, 100.0), (3, 0.5, 0.75, 1.0),
                                                   (5, 0.3, 0.6, 1.0)])
def test_within_channel_lrn_matches_numpy(tmp_path, size, alpha, beta, scale):
    shape = (2, 3, 7, 9)
    net = lrn_net(tmp_path, shape, size, alpha, beta)
    rng = np.random.default_rng(size)
    x = (scale * rng.normal(size=shape)).astype(np.float32)
    dy = rng.normal(size=shape).astype(np.float32)
    net.blobs["x"].data[...] = x
    net.forward()
    net.blobs["y"].diff[...] = dy
    net.backward()
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(net.blobs["y"].data, lrn_reference(x64, size, alpha, beta),
                               rtol=2e-6, atol=1e-6 * scale)
    # central differences of sum(dy * y) in float64
    eps = 1e-5 * scale
    numeric = np.zeros_like(x64)
    for idx in np.ndindex(shape):
        plus, minus = x64.copy(), x64.copy()
        plus[idx] += eps
        minus[idx] -= eps
        numeric[idx] = np.sum(dy * (lrn_reference(plus, size, alpha, beta)
                                    - lrn_reference(minus, size, alpha, beta))) / (2 * eps)
    np.testing.assert_allclose(net.blobs["x"].diff, numeric, rtol=1e-4, atol=1e-5)
