"""The ZF net of `make bench` in PyTorch CPU and OpenCV DNN, on the weights and input Caffe wrote.

    .venv-bench/bin/python tools/bench_peers.py FOLDER [--repeats 3] [--threads 2]

Runs in the bench venv (torch, opencv-python-headless 4.x, numpy; no Caffe), so it imports nothing
of this project. FOLDER comes from `python -m tools.bench` (export_zf): deploy and trunk prototxts,
zf.caffemodel, weights.npz, frames.npy and Caffe's outputs. Prints one JSON line: seconds per
sequence for each engine and how far each one's output is from Caffe's (max |difference| / max |Caffe's|).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

# The ZF trunk as models/tempregnet.py builds it: (name, kernel, stride, pad, LRN after, pool after)
CONVS = [("conv1", 2, 3, True, (3, 2, 1)), ("conv2", 2, 2, True, (3, 2, 1)),
         ("conv3", 1, 1, False, None), ("conv4", 1, 1, False, None), ("conv5", 1, 1, False, (3, 2, 0))]
LRN = dict(size=3, alpha=5e-5, beta=0.75)     # within channel (ZF of py-faster-rcnn)


def best_time(fn, repeats: int) -> float:
    """Fastest of repeats runs of fn, after a warm-up (as tempregnet.benchmark.best_time)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def relative_diff(a: np.ndarray, reference: np.ndarray) -> float:
    """max |a - reference| / max |reference|."""
    return float(np.max(np.abs(a - reference)) / np.max(np.abs(reference)))


def caffe_gates_to_torch(w: np.ndarray, hidden: int) -> np.ndarray:
    """Caffe's LSTM gate blocks are i, f, o, g; PyTorch's are i, f, g, o."""
    i, f, o, g = (w[k * hidden:(k + 1) * hidden] for k in range(4))
    return np.concatenate([i, f, g, o])


def lstm_numpy(x: np.ndarray, w_x, b, w_h, hidden: int) -> np.ndarray:
    """Caffe's LSTM over T x N x I from a zero state (cont 0 at the first step): T x N x H."""
    def sigmoid(v):
        return 1.0 / (1.0 + np.exp(-v))
    gates_x = x @ w_x.T + b
    h = np.zeros((x.shape[1], hidden), np.float32)
    c = np.zeros_like(h)
    out = []
    for step in gates_x:
        gates = step + h @ w_h.T
        i, f, o = (sigmoid(gates[:, k * hidden:(k + 1) * hidden]) for k in range(3))
        g = np.tanh(gates[:, 3 * hidden:])
        c = f * c + i * g
        h = o * np.tanh(c)
        out.append(h)
    return np.stack(out)


def torch_figures(folder: Path, spec: dict, w: dict, frames: np.ndarray, repeats: int, threads: int):
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(threads)
    t = {k: torch.from_numpy(v) for k, v in w.items()}
    hidden = spec["lstm_hidden"]
    lstm = torch.nn.LSTM(w["fc_frame/0"].shape[0], hidden)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.from_numpy(caffe_gates_to_torch(w["lstm1/0"], hidden)))
        lstm.bias_ih_l0.copy_(torch.from_numpy(caffe_gates_to_torch(w["lstm1/1"], hidden)))
        lstm.weight_hh_l0.copy_(torch.from_numpy(caffe_gates_to_torch(w["lstm1/2"], hidden)))
        lstm.bias_hh_l0.zero_()
    params = [p for k, p in t.items() if not k.startswith("lstm1")] + list(lstm.parameters())

    def net(x, train=False):
        for name, stride, pad, lrn, pool in CONVS:
            x = F.relu(F.conv2d(x, t[f"{name}/0"], t[f"{name}/1"], stride=stride, padding=pad))
            if lrn:   # Caffe WITHIN_CHANNEL: x (1 + alpha * mean of x^2 over size^2, zeros outside)^-beta
                mean = F.avg_pool2d(x * x, LRN["size"], 1, LRN["size"] // 2, count_include_pad=True)
                x = x * (1 + LRN["alpha"] * mean) ** -LRN["beta"]
            if pool:
                x = F.max_pool2d(x, pool[0], pool[1], pool[2], ceil_mode=True)
        x = x.flatten(1)
        for name in ("fc6", "fc7"):
            x = F.dropout(F.relu(F.linear(x, t[f"{name}/0"], t[f"{name}/1"])), spec["dropout"], train)
        x = F.relu(F.linear(x, t["fc_frame/0"], t["fc_frame/1"]))
        steps, _ = lstm(x.reshape(spec["n_steps"], -1, x.shape[1]))          # T x N x H
        return F.linear(steps, t["volume_pred/0"], t["volume_pred/1"])[..., 0]  # T x N

    x = torch.from_numpy(frames)
    with torch.inference_mode():
        volume = net(x).numpy()
        forward = best_time(lambda: net(x), repeats)
    for p in params:
        p.requires_grad_(True)
    label = torch.rand(spec["n_steps"], 1)

    def iteration():
        for p in params:
            p.grad = None
        loss = F.mse_loss(net(x, train=True), label)
        loss.backward()
    train = best_time(iteration, repeats)
    diff = relative_diff(volume, np.load(folder / "caffe_volume.npy"))
    return dict(torch_version=torch.__version__.split("+")[0], torch_forward_s=forward,
                torch_train_s=train, torch_max_diff=diff)


def opencv_figures(folder: Path, spec: dict, w: dict, frames: np.ndarray, repeats: int, threads: int):
    import cv2
    if not hasattr(cv2.dnn, "readNetFromCaffe"):
        raise SystemExit(f"OpenCV {cv2.__version__} has no cv2.dnn.readNetFromCaffe (removed in 5.0)")
    cv2.setNumThreads(threads)
    trunk = cv2.dnn.readNetFromCaffe(str(folder / "trunk.prototxt"), str(folder / "zf.caffemodel"))
    hidden = spec["lstm_hidden"]

    def sequence():
        trunk.setInput(frames)
        feature = trunk.forward()                                             # T x q
        steps = lstm_numpy(feature.reshape(spec["n_steps"], 1, -1), w["lstm1/0"], w["lstm1/1"],
                           w["lstm1/2"], hidden)
        return feature, (steps @ w["volume_pred/0"].T + w["volume_pred/1"])[..., 0]
    feature, volume = sequence()
    seconds = best_time(sequence, repeats)
    return dict(cv2_version=cv2.__version__, cv2_forward_s=seconds,
                cv2_max_diff=relative_diff(feature, np.load(folder / "caffe_feature.npy")),
                cv2_volume_max_diff=relative_diff(volume, np.load(folder / "caffe_volume.npy")))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    spec = json.loads((args.folder / "spec.json").read_text())
    w = dict(np.load(args.folder / "weights.npz"))
    frames = np.load(args.folder / "frames.npy")
    result = torch_figures(args.folder, spec, w, frames, args.repeats, args.threads)
    result.update(opencv_figures(args.folder, spec, w, frames, args.repeats, args.threads))
    result["load"] = os.getloadavg()[0]
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
