"""How large each blob of a deploy net is on real sequences, and how much of it changes over time.

    python -m tools.activations --deploy FOLDER/deploy.prototxt [--weights FOLDER/snapshot.caffemodel] \\
        --list data/prepared/paper_zf_cpu/fold0_test.txt [--sequences 4]

For each blob: the mean |x| and the frame-to-frame spread (per unit, the standard deviation over
the T steps, averaged over units and sequences). A net whose LSTM input is large and nearly the
same at every step saturates the LSTM's gates and predicts a constant (docs/results.md, the ZF
learning curves). Without --weights the net is at its fillers' random draw (seed 0).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from data_prep.errors import InputError
from data_prep.hdf5 import load_rows
from tempregnet.inference import deploy_steps, quiet_caffe
from tempregnet.net_input import net_input, sequence_starts


def blob_table(net, frames: np.ndarray, crop: int) -> list[tuple[str, float, float]]:
    """(blob, mean |x|, frame-to-frame spread) over the sequences of frames (N x T x S x S)."""
    n_seq, steps = frames.shape[:2]
    sums: dict = {}
    for seq in frames:
        x = net_input(seq, crop)
        net.blobs["frames"].reshape(*x.shape)
        net.blobs["frames"].data[...] = x
        net.blobs["cont"].reshape(steps, 1)
        net.blobs["cont"].data[...] = sequence_starts(steps, 1).reshape(steps, 1)
        net.forward()
        for name, blob in net.blobs.items():
            data = blob.data.reshape(blob.data.shape[0], -1)
            spread = float(data.std(axis=0).mean()) if data.shape[0] == steps else float("nan")
            size, change = sums.get(name, (0.0, 0.0))
            sums[name] = (size + float(np.abs(data).mean()), change + spread)
    return [(name, size / n_seq, change / n_seq) for name, (size, change) in sums.items()]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.activations", description=__doc__.splitlines()[0])
    p.add_argument("--deploy", required=True, help="deploy prototxt")
    p.add_argument("--weights", help="caffemodel (default: the fillers' draw, seed 0)")
    p.add_argument("--list", required=True, help="a prepared split list (fold0_test.txt, ...)")
    p.add_argument("--sequences", type=int, default=4, help="how many of its sequences (default 4)")
    args = p.parse_args(argv)
    quiet_caffe()
    import caffe
    try:
        rows = load_rows(args.list)
        steps = deploy_steps(args.deploy)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    caffe.set_mode_cpu()
    caffe.set_random_seed(0)
    net = (caffe.Net(args.deploy, caffe.TEST, weights=args.weights) if args.weights
           else caffe.Net(args.deploy, caffe.TEST))
    crop = net.blobs["frames"].data.shape[-1]
    frames = rows["frames"][:args.sequences]
    if frames.shape[1] != steps:
        print(f"error: {args.list}: {frames.shape[1]} steps per sequence, the net takes {steps}",
              file=sys.stderr)
        return 2
    print(f"{len(frames)} sequences of {args.list}; {args.weights or 'random weights (seed 0)'}")
    print(f"{'blob':22s} {'mean |x|':>12s} {'frame-to-frame':>15s}")
    for name, size, change in blob_table(net, frames, crop):
        print(f"{name:22s} {size:12.4g} {change:15.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
