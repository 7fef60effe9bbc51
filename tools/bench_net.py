"""Benchmark: deploy forward time per 20-frame sequence and one training iteration, for every config, on this machine."""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("GLOG_minloglevel", "2")

import caffe  # noqa: E402
import numpy as np  # noqa: E402

from models.config import CONFIGS, get_config, get_variant  # noqa: E402
from models.tempregnet import net_proto  # noqa: E402
from tempregnet.benchmark import fill, load, with_inputs  # noqa: E402
from tempregnet.benchmark import median_time as timed  # noqa: E402


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
