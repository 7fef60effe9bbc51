"""Benchmark: deploy forward time per 20-frame sequence and one training iteration, for every config, on this machine."""
from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("GLOG_minloglevel", "2")

import caffe  # noqa: E402
import numpy as np  # noqa: E402
from caffe.proto import caffe_pb2  # noqa: E402
from google.protobuf import text_format  # noqa: E402

from models.config import CONFIGS, get_config, get_variant  # noqa: E402
from models.tempregnet import net_proto  # noqa: E402


def with_inputs(train: caffe_pb2.NetParameter, cfg, n: int) -> caffe_pb2.NetParameter:
    """The train net with its data layer swapped for Input layers of the same blobs (no disk I/O timed)."""
    t = cfg.n_steps
    net = caffe_pb2.NetParameter()
    for name, dims in (("frames", [t * n, 3, cfg.crop, cfg.crop]), ("cont", [t, n]), ("label", [t, n])):
        layer = net.layer.add(name=name, type="Input", top=[name])
        layer.input_param.shape.add().dim.extend(dims)
    net.layer.extend(layer for layer in train.layer if layer.type != "Python" or layer.name != "data")
    return net


def load(proto: caffe_pb2.NetParameter, phase) -> caffe.Net:
    with tempfile.NamedTemporaryFile("w", suffix=".prototxt") as f:
        f.write(text_format.MessageToString(proto))
        f.flush()
        return caffe.Net(f.name, phase)


def fill(net: caffe.Net, cfg, n: int, rng) -> None:
    net.blobs["frames"].data[...] = rng.normal(0, 50, net.blobs["frames"].data.shape)
    cont = np.ones((cfg.n_steps, n), np.float32)
    cont[0] = 0
    net.blobs["cont"].data[...] = cont
    if "label" in net.blobs:
        net.blobs["label"].data[...] = rng.uniform(0, 1, (cfg.n_steps, n))


def timed(fn, repeats: int) -> float:
    """Median seconds of fn over repeats runs, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def bench(config: str, variant: str, batch: int, repeats: int) -> dict:
    """Deploy forward per sequence (N = 1) and one forward+backward training pass at batch sequences."""
    cfg, var = get_config(config), get_variant(variant)
    rng = np.random.default_rng(0)
    deploy = load(net_proto(cfg, var, "deploy", batch_size=1), caffe.TEST)
    fill(deploy, cfg, 1, rng)
    forward = timed(deploy.forward, repeats)
    del deploy
    # the data layer (its source and label) is replaced by Input layers: nothing is read
    train = load(with_inputs(net_proto(cfg, var, "train", "unused.txt", batch_size=batch, label="cycle"),
                             cfg, batch), caffe.TRAIN)
    fill(train, cfg, batch, rng)
    iteration = timed(lambda: (train.forward(), train.backward()), repeats)
    return dict(config=config, variant=variant, crop=cfg.crop, forward_per_sequence_s=forward,
                train_batch=batch, train_iteration_s=iteration)


def main(argv=None) -> None:
    """Print the timings of each configuration (CPU mode)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=sorted(CONFIGS))
    parser.add_argument("--variant", default="tempreg")
    parser.add_argument("--zf-batch", type=int, default=1, help="sequences per zf training iteration")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    caffe.set_mode_cpu()
    print(f"CPU mode, {os.cpu_count()} cores; median of {args.repeats} runs after a warm-up")
    for config in args.configs:
        batch = args.zf_batch if config == "zf" else get_config(config).batch_size
        r = bench(config, args.variant, batch, args.repeats)
        print(f"{r['config']:>6} {r['variant']} (input {r['crop']} px): deploy forward "
              f"{r['forward_per_sequence_s']:.3f} s per 20-frame sequence; training iteration "
              f"(forward+backward, {r['train_batch']} sequence(s)) {r['train_iteration_s']:.3f} s", flush=True)


if __name__ == "__main__":
    main()
