"""Helpers of the benchmarks (tools/bench*.py): timing nets without their data layer, FLOP counts, a
synthetic DICOM cohort for the preparation rate. Nothing here is imported by the product."""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

SIDE = 256                       # the paper's frame size, of the bench's DICOM series
SLICES_PER_PATIENT = 10


def with_inputs(train, cfg, n: int):
    """The train net with its data layer swapped for Input layers of the same blobs (no disk I/O timed)."""
    from caffe.proto import caffe_pb2
    t = cfg.n_steps
    net = caffe_pb2.NetParameter()
    for name, dims in (("frames", [t * n, 3, cfg.crop, cfg.crop]), ("cont", [t, n]), ("label", [t, n])):
        layer = net.layer.add(name=name, type="Input", top=[name])
        layer.input_param.shape.add().dim.extend(dims)
    net.layer.extend(layer for layer in train.layer if layer.type != "Python" or layer.name != "data")
    return net


def load(proto, phase):
    """A caffe.Net of the NetParameter proto (written to a temporary prototxt)."""
    import caffe
    from google.protobuf import text_format
    with tempfile.NamedTemporaryFile("w", suffix=".prototxt") as f:
        f.write(text_format.MessageToString(proto))
        f.flush()
        return caffe.Net(f.name, phase)


def fill(net, cfg, n: int, rng) -> None:
    """Random frames (grey values around the ZF mean), cont 0 at the first step, random labels."""
    net.blobs["frames"].data[...] = rng.normal(0, 50, net.blobs["frames"].data.shape)
    cont = np.ones((cfg.n_steps, n), np.float32)
    cont[0] = 0
    net.blobs["cont"].data[...] = cont
    if "label" in net.blobs:
        net.blobs["label"].data[...] = rng.uniform(0, 1, (cfg.n_steps, n))


def run_times(fn, repeats: int) -> list[float]:
    """Seconds of each of repeats runs of fn, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def median_time(fn, repeats: int) -> float:
    """Median seconds of fn over repeats runs, after one warm-up run."""
    return float(np.median(run_times(fn, repeats)))


def best_time(fn, repeats: int) -> float:
    """Fastest of repeats runs of fn, after a warm-up: on a shared machine the least disturbed one."""
    return min(run_times(fn, repeats))


def timing_train_net(cfg, variant, batch: int):
    """The train net with Input layers for frames, cont and label in place of the data layer
    (its split list and label convention are then never read)."""
    from models.tempregnet import net_proto
    return with_inputs(net_proto(cfg, variant, "train", "unused.txt", batch_size=batch, label="cycle"),
                       cfg, batch)


def net_flops(net, first_bottoms=("frames",)) -> tuple[float, float]:
    """Multiply-add FLOPs (x2) of the net's convolution, inner-product and LSTM layers: forward, and
    forward + backward (weight gradient everywhere, bottom gradient except below the input)."""
    forward = backward = 0.0
    for name, layer in zip(net._layer_names, net.layers):
        if layer.type in ("Convolution", "InnerProduct"):
            weights = layer.blobs[0]
            top = net.blobs[net.top_names[name][0]]
            flops = 2.0 * top.count * (weights.count // weights.shape[0])
        elif layer.type == "LSTM":
            w_x, _, w_h = layer.blobs                          # 4H x I, 4H, 4H x H
            top = net.blobs[net.top_names[name][0]]           # steps x N x H
            flops = 2.0 * (top.count // w_h.shape[1]) * (w_x.count + w_h.count)
        else:
            continue
        forward += flops
        backward += flops if net.bottom_names[name][0] in first_bottoms else 2 * flops
    return forward, forward + backward


def write_cohort(folder: Path, n_sequences: int, seed: int) -> None:
    """n_sequences single-slice series (a pulsing disc on noise) with random file names."""
    from data_prep.synthetic import write_dicom_series
    from models.config import N_STEPS
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIDE, :SIDE]
    r2 = (yy - SIDE / 2) ** 2 + (xx - SIDE / 2) ** 2
    for s in range(n_sequences):
        patient, slice_index = divmod(s, SLICES_PER_PATIENT)
        radius = 30 + 10 * np.cos(2 * np.pi * np.arange(N_STEPS) / N_STEPS)
        frames = [200.0 * (r2 <= r * r) + rng.normal(100, 20, (SIDE, SIDE)) for r in radius]
        write_dicom_series(folder / f"p{patient:03d}", frames,
                           series_uid=f"1.2.826.0.1.3680043.10.511.{seed}.{s + 1}",
                           slice_location=float(slice_index * 8), patient_id=f"BENCH{patient:04d}",
                           rng=rng)


def time_prepare(sequences: int, workers: int, seed: int = 0, work: Path | None = None) -> float:
    """Seconds of one `data_prep.prepare` run over `sequences` synthetic series (written first, untimed)."""
    folder = work or Path(tempfile.mkdtemp(prefix="bench_prepare."))
    try:
        dicom = folder / "dicom"
        if not dicom.exists():
            tic = time.perf_counter()
            write_cohort(dicom, sequences, seed)
            print(f"wrote {sequences} x 20 DICOM files in {time.perf_counter() - tic:.1f} s")
        tic = time.perf_counter()
        from data_prep import prepare
        code = prepare.main(["--source", "dicom", str(dicom), str(folder / "prepared"), "--force",
                             "--folds", "2", "--workers", str(workers)])
        seconds = time.perf_counter() - tic
        if code:
            raise RuntimeError(f"data_prep.prepare failed (exit {code})")
        return seconds
    finally:
        if work is None:
            shutil.rmtree(folder, ignore_errors=True)

