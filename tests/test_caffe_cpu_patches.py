"""Our CPU patches to Caffe (tools/caffe/patches/0011-0016): outputs and gradients against numpy references.

0011 computes the within-channel LRN in one pass instead of through five helper layers (same
values within float rounding). 0012 (max pooling), 0013 (ReLU backward) and 0014 (im2col and
col2im of the convolution) change how, not what: their outputs, argmax masks and gradients must
equal the numpy references bit for bit, which is why `make demo` (no LRN in the small net)
trains to the same weights as before them.
"""
import numpy as np
import pytest

caffe = pytest.importorskip("caffe", reason="pycaffe is not built: run `make caffe`")


def load_net(tmp_path, text: str, name: str):
    path = tmp_path / f"{name}.prototxt"
    path.write_text("force_backward: true\n" + text)
    caffe.set_mode_cpu()
    return caffe.Net(str(path), caffe.TRAIN)


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


def pool_net(tmp_path, shape, kernel, stride, pad):
    dims = " ".join(f"dim: {d}" for d in shape)
    text = f"""layer {{ name: "x" type: "Input" top: "x" input_param {{ shape {{ {dims} }} }} }}
layer {{ name: "pool" type: "Pooling" bottom: "x" top: "y" top: "argmax"
  pooling_param {{ pool: MAX kernel_size: {kernel} stride: {stride} pad: {pad} }} }}
layer {{ name: "pool_inner_mask" type: "Pooling" bottom: "x" top: "z"
  pooling_param {{ pool: MAX kernel_size: {kernel} stride: {stride} pad: {pad} }} }}
"""
    return load_net(tmp_path, text, "pool")


def max_pool_reference(x, kernel, stride, pad, out_h, out_w):
    """Caffe's MAX pooling: the first strict maximum of each window in scan order, and its index."""
    n, c, h, w = x.shape
    y = np.full((n, c, out_h, out_w), -np.finfo(np.float32).max, np.float32)
    argmax = np.full((n, c, out_h, out_w), -1, np.int64)
    for ph in range(out_h):
        for pw in range(out_w):
            h0, w0 = ph * stride - pad, pw * stride - pad
            for i in range(max(h0, 0), min(h0 + kernel, h)):
                for j in range(max(w0, 0), min(w0 + kernel, w)):
                    take = x[:, :, i, j] > y[:, :, ph, pw]
                    y[:, :, ph, pw] = np.where(take, x[:, :, i, j], y[:, :, ph, pw])
                    argmax[:, :, ph, pw] = np.where(take, i * w + j, argmax[:, :, ph, pw])
    return y, argmax


# ZF's pool1/pool2 (3/2 pad 1) and pool5 (3/2), on values with ties (rounded) so the first
# maximum must win, and an input with -inf where no element beats Caffe's initial -FLT_MAX.
@pytest.mark.parametrize("kernel,stride,pad,side", [(3, 2, 1, 11), (3, 2, 0, 13), (2, 2, 0, 8)])
def test_max_pooling_equals_numpy_bit_for_bit(tmp_path, kernel, stride, pad, side):
    shape = (3, 4, side, side)
    net = pool_net(tmp_path, shape, kernel, stride, pad)
    rng = np.random.default_rng(side)
    x = np.round(rng.normal(size=shape), 1).astype(np.float32)
    x[0, 0] = -np.inf
    net.blobs["x"].data[...] = x
    net.forward()
    out_h, out_w = net.blobs["y"].data.shape[2:]
    y, argmax = max_pool_reference(x, kernel, stride, pad, out_h, out_w)
    np.testing.assert_array_equal(net.blobs["y"].data, y)
    np.testing.assert_array_equal(net.blobs["argmax"].data, argmax)
    np.testing.assert_array_equal(net.blobs["z"].data, y)
    # The internal mask (no second top) routes the gradient to the same elements. Finite input
    # here: Caffe's backward indexes element -1 for a window without a maximum.
    x[0, 0] = 0.5
    net.blobs["x"].data[...] = x
    net.forward()
    y, argmax = max_pool_reference(x, kernel, stride, pad, out_h, out_w)
    dz = rng.normal(size=y.shape).astype(np.float32)
    net.blobs["z"].diff[...] = dz
    net.blobs["y"].diff[...] = 0
    net.backward()
    dx = np.zeros(shape, np.float32)
    for idx in np.ndindex(y.shape):
        if argmax[idx] >= 0:
            dx[idx[0], idx[1]].flat[argmax[idx]] += dz[idx]
    np.testing.assert_array_equal(net.blobs["x"].diff, dx)


def test_relu_backward_equals_numpy_bit_for_bit(tmp_path):
    """In place as in our nets: dx = dy x 1 or dy x +0 (so -0 where dy < 0), signs of zero included."""
    shape = (2, 3, 7, 5)                      # 210 elements: the vector loop and its scalar tail
    text = f"""layer {{ name: "x" type: "Input" top: "x" input_param {{ shape {{ {" ".join(f"dim: {d}" for d in shape)} }} }} }}
layer {{ name: "scale" type: "Power" bottom: "x" top: "h" }}
layer {{ name: "relu" type: "ReLU" bottom: "h" top: "h" }}
"""
    net = load_net(tmp_path, text, "relu")
    rng = np.random.default_rng(5)
    x = rng.normal(size=shape).astype(np.float32)
    x.flat[:7] = 0.0                           # x = 0 takes the zero slope
    dy = rng.normal(size=shape).astype(np.float32)
    net.blobs["x"].data[...] = x
    net.forward()
    net.blobs["h"].diff[...] = dy
    net.backward()
    expected = dy * (x > 0).astype(np.float32)
    np.testing.assert_array_equal(net.blobs["h"].diff.view(np.uint32), expected.view(np.uint32))
    np.testing.assert_array_equal(net.blobs["x"].diff.view(np.uint32), expected.view(np.uint32))


def conv_net(tmp_path, shape, out, kernel, stride, pad, dilation):
    dims = " ".join(f"dim: {d}" for d in shape)
    text = f"""layer {{ name: "x" type: "Input" top: "x" input_param {{ shape {{ {dims} }} }} }}
layer {{ name: "conv" type: "Convolution" bottom: "x" top: "y"
  convolution_param {{ num_output: {out} kernel_size: {kernel} stride: {stride} pad: {pad}
    dilation: {dilation} weight_filler {{ type: "constant" }} bias_filler {{ type: "constant" }} }} }}
"""
    return load_net(tmp_path, text, "conv")


def conv_reference(x, w, b, stride, pad, dilation, dy):
    """Direct convolution, one kernel offset at a time: y, dx, dw, db."""
    n, c, h, wd = x.shape
    o, _, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh = (h + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    ow = (wd + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    y = np.zeros((n, o, oh, ow)) + b[None, :, None, None]
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    for i in range(k):
        for j in range(k):
            rows = slice(i * dilation, i * dilation + stride * (oh - 1) + 1, stride)
            cols = slice(j * dilation, j * dilation + stride * (ow - 1) + 1, stride)
            patch = xp[:, :, rows, cols]                                   # N x C x OH x OW
            y += np.einsum("oc,ncyx->noyx", w[:, :, i, j], patch)
            dw[:, :, i, j] += np.einsum("noyx,ncyx->oc", dy, patch)
            dxp[:, :, rows, cols] += np.einsum("oc,noyx->ncyx", w[:, :, i, j], dy)
    return y, dxp[:, :, pad:pad + h, pad:pad + wd], dw, dy.sum(axis=(0, 2, 3))


# (channels, side, outputs, kernel, stride, pad, dilation): ZF's conv1 (7/2 pad 3) and conv2
# (5/2 pad 2), 3/1 pad 1, padding wider than the kernel reaches, dilation, and no padding.
@pytest.mark.parametrize("case", [(3, 23, 4, 7, 2, 3, 1), (4, 13, 5, 5, 2, 2, 1), (3, 9, 4, 3, 1, 1, 1),
                                  (2, 8, 3, 3, 3, 4, 1), (2, 12, 3, 3, 1, 2, 2), (2, 10, 3, 4, 2, 0, 1)])
def test_convolution_equals_numpy_bit_for_bit(tmp_path, case):
    """Small integers everywhere, so every sum is exact: any misplaced im2col/col2im element shows."""
    c, side, out, k, s, p, d = case
    net = conv_net(tmp_path, (2, c, side, side), out, k, s, p, d)
    rng = np.random.default_rng(side + k)
    x = rng.integers(-4, 5, size=net.blobs["x"].data.shape).astype(np.float32)
    w = rng.integers(-3, 4, size=net.params["conv"][0].data.shape).astype(np.float32)
    b = rng.integers(-3, 4, size=net.params["conv"][1].data.shape).astype(np.float32)
    net.blobs["x"].data[...] = x
    net.params["conv"][0].data[...] = w
    net.params["conv"][1].data[...] = b
    net.forward()
    dy = rng.integers(-4, 5, size=net.blobs["y"].data.shape).astype(np.float32)
    net.blobs["y"].diff[...] = dy
    for param in net.params["conv"]:
        param.diff[...] = 0
    net.backward()
    y, dx, dw, db = conv_reference(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                                   s, p, d, dy.astype(np.float64))
    np.testing.assert_array_equal(net.blobs["y"].data, y)
    np.testing.assert_array_equal(net.blobs["x"].diff, dx)
    np.testing.assert_array_equal(net.params["conv"][0].diff, dw)
    np.testing.assert_array_equal(net.params["conv"][1].diff, db)


# 0015 splits those loops (planes, im2col blocks, elements) over OpenMP threads. Threads change
# who computes a plane, not how: a ZF-like stack at sizes above the patch's thresholds gives the
# same outputs and gradients, bit for bit, on one thread and on two.
THREADED_NET = """force_backward: true
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 64 dim: 64 } } }
layer { name: "target" type: "Input" top: "target" input_param { shape { dim: 2 dim: 8 dim: 9 dim: 9 } } }
layer { name: "conv1" type: "Convolution" bottom: "x" top: "c1"
  convolution_param { num_output: 32 kernel_size: 7 stride: 2 pad: 3
    weight_filler { type: "gaussian" std: 0.1 } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "c1" top: "c1" }
layer { name: "norm1" type: "LRN" bottom: "c1" top: "n1"
  lrn_param { local_size: 3 alpha: 0.00005 beta: 0.75 norm_region: WITHIN_CHANNEL } }
layer { name: "pool1" type: "Pooling" bottom: "n1" top: "p1"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "conv2" type: "Convolution" bottom: "p1" top: "c2"
  convolution_param { num_output: 8 kernel_size: 5 stride: 2 pad: 2
    weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "c2" bottom: "target" top: "loss" }
"""

THREADED_RUN = """
import sys
import numpy as np
import caffe
caffe.set_mode_cpu()
caffe.set_random_seed(7)
net = caffe.Net(sys.argv[1], caffe.TRAIN)
rng = np.random.default_rng(3)
net.blobs["x"].data[...] = rng.normal(size=net.blobs["x"].data.shape)
net.blobs["target"].data[...] = rng.normal(size=net.blobs["target"].data.shape)
net.forward()
net.backward()
out = {f"data_{k}": b.data for k, b in net.blobs.items()}
out.update({f"diff_{k}": b.diff for k, b in net.blobs.items()})
out.update({f"param_{k}_{i}": p.diff for k, ps in net.params.items() for i, p in enumerate(ps)})
np.savez(sys.argv[2], **out)
"""


def test_threads_give_the_same_bits_as_one_thread(tmp_path):
    import os
    import subprocess
    import sys
    net_file, script = tmp_path / "net.prototxt", tmp_path / "run.py"
    net_file.write_text(THREADED_NET)
    script.write_text(THREADED_RUN)
    results = {}
    for threads in (1, 2):
        out = tmp_path / f"threads{threads}.npz"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": "1"}
        done = subprocess.run([sys.executable, str(script), str(net_file), str(out)], env=env,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        results[threads] = np.load(out)
    one, two = results[1], results[2]
    assert sorted(one.files) == sorted(two.files)
    assert np.abs(one["data_c1"]).sum() > 0 and np.abs(one["diff_x"]).sum() > 0
    for name in one.files:
        assert np.array_equal(one[name], two[name]), name


# 0016: CAFFE_OMP_MIN_WORK replaces 0015's size thresholds (`make caffe-test` runs Caffe's own
# tests with it at 0). On blobs far below the thresholds, libgomp starts its worker thread only
# when the override is set, and the threaded loops give the same bits as one thread.
SMALL_RUN = THREADED_RUN.replace("import sys\n", "import os\nimport sys\n").replace(
    "np.savez(sys.argv[2], **out)", """out["threads_before_after"] = np.array(threads)
np.savez(sys.argv[2], **out)""").replace("net.forward()\nnet.backward()", """threads = [len(os.listdir("/proc/self/task"))]
net.forward()
net.backward()
threads.append(len(os.listdir("/proc/self/task")))""")
SMALL_NET = THREADED_NET.replace("dim: 2 dim: 3 dim: 64 dim: 64", "dim: 1 dim: 2 dim: 16 dim: 16") \
    .replace("dim: 2 dim: 8 dim: 9 dim: 9", "dim: 1 dim: 8 dim: 3 dim: 3") \
    .replace("num_output: 32", "num_output: 4")


def test_omp_min_work_override_threads_small_blobs_with_the_same_bits(tmp_path):
    import os
    import subprocess
    import sys
    net_file, script = tmp_path / "net.prototxt", tmp_path / "run.py"
    net_file.write_text(SMALL_NET)
    script.write_text(SMALL_RUN)
    results = {}
    for name, extra in (("one", {"OMP_NUM_THREADS": "1", "CAFFE_OMP_MIN_WORK": "0"}),
                        ("default", {"OMP_NUM_THREADS": "2"}),
                        ("forced", {"OMP_NUM_THREADS": "2", "CAFFE_OMP_MIN_WORK": "0"})):
        out = tmp_path / f"{name}.npz"
        env = {k: v for k, v in os.environ.items() if k != "CAFFE_OMP_MIN_WORK"}
        env.update(OPENBLAS_NUM_THREADS="1", **extra)
        done = subprocess.run([sys.executable, str(script), str(net_file), str(out)], env=env,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        results[name] = np.load(out)
    before, after = results["default"]["threads_before_after"]
    assert after == before                       # below the thresholds: one thread
    before, after = results["forced"]["threads_before_after"]
    assert after == before + 1                   # override: libgomp's second thread ran the loops
    one, forced = results["one"], results["forced"]
    assert np.abs(one["data_c1"]).sum() > 0 and np.abs(one["diff_x"]).sum() > 0
    for name in one.files:
        if name != "threads_before_after":
            assert np.array_equal(one[name], forced[name]), name
