"""Per-layer time of one net in Caffe (CPU): where a forward or a training iteration goes.

    OPENBLAS_NUM_THREADS=1 python -m tools.bench_layers --config zf --phase deploy --batch 1
    python -m tools.bench_layers --config small --phase train --batch 4 --repeats 20 --clock wall

Each layer's forward (and, for train, backward) is timed on its own through pycaffe, after one
untimed pass. --clock cpu (default) counts the process's CPU time, all threads together: with one
BLAS thread it is the work done and moves less with the machine's load than the wall clock.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("GLOG_minloglevel", "2")

import caffe  # noqa: E402
import numpy as np  # noqa: E402

from models.config import CONFIGS, get_config, get_variant  # noqa: E402
from models.tempregnet import net_proto  # noqa: E402
from tempregnet import blas  # noqa: E402
from tempregnet.benchmark import fill, load, timing_train_net  # noqa: E402


def layer_times(net: caffe.Net, train: bool, repeats: int, clock) -> tuple[np.ndarray, np.ndarray]:
    """Mean seconds per layer: forward, backward (zeros unless train)."""
    count = len(net.layers)
    forward, backward = np.zeros(count), np.zeros(count)
    for r in range(repeats + 1):                   # pass 0 warms up, untimed
        for i in range(count):
            start = clock()
            net._forward(i, i)
            if r:
                forward[i] += clock() - start
        for i in reversed(range(count)) if train else ():
            start = clock()
            net._backward(i, i)
            if r:
                backward[i] += clock() - start
    return forward / repeats, backward / repeats


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="zf", choices=sorted(CONFIGS))
    p.add_argument("--variant", default="tempreg")
    p.add_argument("--phase", default="deploy", choices=["deploy", "train"])
    p.add_argument("--batch", type=int, default=1, help="sequences")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--clock", default="cpu", choices=["cpu", "wall"])
    args = p.parse_args(argv)
    cfg, variant = get_config(args.config), get_variant(args.variant)
    caffe.set_mode_cpu()
    train = args.phase == "train"
    if train:
        net = load(timing_train_net(cfg, variant, args.batch), caffe.TRAIN)
    else:
        net = load(net_proto(cfg, variant, "deploy", batch_size=args.batch), caffe.TEST)
    fill(net, cfg, args.batch, np.random.default_rng(0))
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    forward, backward = layer_times(net, train, args.repeats, clock)
    total = forward.sum() + backward.sum()
    for name, f, b in zip(net._layer_names, forward, backward):
        if f + b > 0.002 * total:                  # layers under 0.2 % left out
            print(f"{name:>16}  forward {f * 1e3:8.1f} ms  backward {b * 1e3:8.1f} ms")
    print(f"{args.config} {args.phase}, {args.batch} sequence(s): forward {forward.sum() * 1e3:.1f} ms, "
          f"backward {backward.sum() * 1e3:.1f} ms ({args.clock} time, OPENBLAS_NUM_THREADS="
          f"{os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, "
          f"{blas.summary(blas.describe(blas.mapped(blas.CAFFE_BLAS)))}, load average {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
