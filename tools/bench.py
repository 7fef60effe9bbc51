"""`make bench`: one table of speed figures measured in one run on this machine.

    python -m tools.bench [--peers .venv-bench/bin/python] [--repeats 5] [--prepare-sequences 60]

Caffe (this project's build) for the zf and small nets: deploy forward per 20-frame sequence and
one training iteration (forward + backward, Input layers instead of the data layer); the small
net's iteration also as `make demo` runs it, two trainings side by side with one BLAS thread each.
PyTorch CPU and OpenCV DNN (`readNetFromCaffe`) on the same ZF net, same weights, same input,
run by --peers (a venv with torch and OpenCV 4.x, made by `make bench`; tools/bench_peers.py).
Every time is set against its floor: the net's FLOPs divided by the sgemm rate (4096^3, one
thread per core) measured in the same run, the faster of numpy's OpenBLAS and Caffe's own (our
build, called through ctypes). Every BLAS is named with its version and the kernels it ran (read
from the library the process really loaded: tempregnet/blas.py). Last, the DICOM -> HDF5 rate.
Each figure runs in its own process (BLAS settings are read when the library loads) and prints
the load average beside it: figures taken on a busy machine are not comparable. Nothing asserted.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tempregnet import blas
from tempregnet.benchmark import best_time, net_flops

THREADS = os.cpu_count() or 1
ROOT = Path(__file__).resolve().parent.parent
AVX512 = ("avx512f", "avx512dq", "avx512bw", "avx512vl")   # what OpenBLAS's SkylakeX kernels use


def machine() -> str:
    """CPU model and core count as lscpu reports them."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        model = fields.get("Model name", platform.processor()).strip()
        return f"{model}, {fields.get('CPU(s)', THREADS).strip()} cores"
    except (OSError, subprocess.CalledProcessError):
        return f"{platform.processor() or 'unknown CPU'}, {THREADS} cores"


def cpu_flags() -> set:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def commit() -> str:
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def load() -> float:
    return os.getloadavg()[0]


# --- workers: one measurement each, in a fresh process, printing one JSON line ---------------

def sgemm_rate(which: str, repeats: int, n: int = 4096) -> dict:
    """float32 n^3 matrix product through numpy's OpenBLAS ("numpy") or Caffe's ("caffe", its
    cblas_sgemm by ctypes): GFLOP/s (best of repeats) and the library with its kernels."""
    import numpy as np
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), np.float32), rng.random((n, n), np.float32)
    if which == "numpy":
        a @ b
        run, library = (lambda: a @ b), blas.mapped(blas.NUMPY_BLAS)
    else:
        import caffe  # noqa: F401  (loads libcaffe and with it the OpenBLAS it links)
        library = blas.mapped(blas.CAFFE_BLAS)
        c = np.empty((n, n), np.float32)
        sgemm = blas.sgemm(library)
        sgemm(a, b, c)
        assert np.allclose(c[:4, :4], (a[:4].astype(np.float64) @ b[:, :4]), rtol=1e-4)
        run = lambda: sgemm(a, b, c)   # noqa: E731
    best = best_time(run, repeats)
    return dict(gflops=2.0 * n ** 3 / best / 1e9, blas=blas.describe(library))


def caffe_figure(config: str, kind: str, batch: int, repeats: int) -> dict:
    """Seconds and FLOPs of one Caffe figure: kind "forward" (deploy, N sequences) or "train"."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    import caffe
    import numpy as np
    from models.config import get_config, get_variant
    from models.tempregnet import net_proto
    from tempregnet.benchmark import fill, load as load_net, timing_train_net
    cfg, variant = get_config(config), get_variant("tempreg")
    caffe.set_mode_cpu()
    rng = np.random.default_rng(0)
    if kind == "forward":
        net = load_net(net_proto(cfg, variant, "deploy", batch_size=batch), caffe.TEST)
        fill(net, cfg, batch, rng)
        seconds = best_time(net.forward, repeats)
        flops = net_flops(net)[0]
    else:
        net = load_net(timing_train_net(cfg, variant, batch), caffe.TRAIN)
        fill(net, cfg, batch, rng)
        seconds = best_time(lambda: (net.forward(), net.backward()), repeats)
        flops = net_flops(net)[1]
    return dict(seconds=seconds, flops=flops, blas=blas.describe(blas.mapped(blas.CAFFE_BLAS)))


def export_zf(folder: Path) -> dict:
    """The zf deploy net with its fillers' random weights, for the peers: prototxts (full and
    trunk, the trunk ending at fc_frame), caffemodel, weights as npz, an input and Caffe's outputs."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    import caffe
    import numpy as np
    from google.protobuf import text_format
    from models.config import get_config, get_variant
    from models.tempregnet import net_proto
    cfg = get_config("zf")
    caffe.set_mode_cpu()
    proto = net_proto(cfg, get_variant("tempreg"), "deploy", batch_size=1)
    (folder / "deploy.prototxt").write_text(text_format.MessageToString(proto))
    net = caffe.Net(str(folder / "deploy.prototxt"), caffe.TEST)
    trunk = type(proto)()
    trunk.CopyFrom(proto)
    del trunk.layer[:]
    for layer in proto.layer:
        if layer.name == "fc_frame_steps":
            break
        if layer.name != "cont":
            trunk.layer.add().CopyFrom(layer)
    (folder / "trunk.prototxt").write_text(text_format.MessageToString(trunk))
    net.save(str(folder / "zf.caffemodel"))
    weights = {f"{name}/{i}": blob.data for name in net.params for i, blob in enumerate(net.params[name])}
    np.savez(folder / "weights.npz", **weights)
    rng = np.random.default_rng(0)
    frames = rng.normal(0, 50, net.blobs["frames"].data.shape).astype(np.float32)
    net.blobs["frames"].data[...] = frames
    net.blobs["cont"].data[...] = 1
    net.blobs["cont"].data[0] = 0
    net.forward()
    np.save(folder / "frames.npy", frames)
    np.save(folder / "caffe_feature.npy", net.blobs["fc_frame"].data)
    np.save(folder / "caffe_volume.npy", net.blobs["volume_pred"].data)
    spec = dict(n_steps=cfg.n_steps, crop=cfg.crop, lstm_hidden=cfg.lstm_hidden, dropout=cfg.dropout,
                flops=net_flops(net))
    (folder / "spec.json").write_text(json.dumps(spec))
    return spec


def worker(args) -> None:
    """One measurement (the hidden --worker mode), printed as one JSON line."""
    if args.worker.startswith("sgemm:"):
        result = sgemm_rate(args.worker.split(":")[1], args.repeats)
    elif args.worker == "export":
        result = export_zf(Path(args.folder))
    else:
        config, kind, batch = args.worker.split(":")
        result = caffe_figure(config, kind, int(batch), args.repeats)
    result["load"] = load()
    print(json.dumps(result), flush=True)


# --- the table ------------------------------------------------------------------------------

def run_worker(spec: str, repeats: int, threads: int = THREADS, extra_env=None, folder=None,
               python=sys.executable, wait=True):
    env = {**os.environ, "OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
           "GLOG_minloglevel": "2", **(extra_env or {})}
    cmd = [python, "-m", "tools.bench", "--worker", spec, "--repeats", str(repeats)]
    if folder:
        cmd += ["--folder", str(folder)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    return finish(proc, spec) if wait else proc


def finish(proc, what: str) -> dict:
    out, _ = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"bench worker {what} failed (exit {proc.returncode})")
    return json.loads(out.strip().splitlines()[-1])


class Table:
    """Rows of (figure, seconds, FLOPs, floor rate) printed as one table with ratios to the floor."""

    def __init__(self):
        self.rows = []

    def add(self, what: str, seconds: float | None, flops: float | None, rate: float | None,
            note: str = "", load_avg: float | None = None):
        self.rows.append((what, seconds, flops, rate, note, load_avg if load_avg is not None else load()))
        shown = f"{seconds:.4f} s" if seconds is not None else "-"
        print(f"  measured: {what}: {shown} {note}", file=sys.stderr, flush=True)

    def print(self):
        print("| figure | s | GFLOP | floor s | x floor | load |")
        print("|---|---:|---:|---:|---:|---:|")
        for what, seconds, flops, rate, note, load_avg in self.rows:
            floor = flops / rate if flops and rate else None
            cells = [what + (f" ({note})" if note else ""),
                     f"{seconds:.3f}" if seconds is not None else "-",
                     f"{flops / 1e9:.2f}" if flops else "-",
                     f"{floor:.3f}" if floor else "-",
                     f"{seconds / floor:.2f}" if floor and seconds is not None else "-",
                     f"{load_avg:.1f}"]
            print("| " + " | ".join(cells) + " |")


def prepare_rate(sequences: int, workers: int) -> tuple[float, float]:
    """DICOM -> HDF5: (sequences per second, seconds) for `sequences` synthetic 256 px series."""
    from tempregnet.benchmark import time_prepare
    with contextlib.redirect_stdout(sys.stderr):          # prepare's report: not part of the table
        seconds = time_prepare(sequences, workers)
    return sequences / seconds, seconds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peers", type=Path, help="python of a venv with torch and opencv-python-headless 4.x")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per figure (the fastest counts, after a warm-up)")
    p.add_argument("--prepare-sequences", type=int, default=60, help="sequences for the DICOM -> HDF5 rate (0: skip)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0

    r = args.repeats
    started = time.time()
    print(f"# make bench, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"machine: {machine()}; commit {commit()}; Python {platform.python_version()}")
    flags = cpu_flags()
    print("CPU vector extensions: " + ("AVX-512 (" + ", ".join(AVX512) + ")" if all(f in flags for f in AVX512)
                                       else "AVX2, no AVX-512" if "avx2" in flags else "no AVX2"))
    print("OpenBLAS settings from the environment: " + (", ".join(
        f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("OPENBLAS_")) or "none")
        + " (Caffe's OpenBLAS does not read OPENBLAS_CORETYPE; numpy's does)")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          "(figures taken under load are not comparable)")
    table = Table()
    sgemm = {which: run_worker(f"sgemm:{which}", r) for which in ("caffe", "numpy")}
    floor = max(sgemm, key=lambda which: sgemm[which]["gflops"])
    rate = sgemm[floor]["gflops"] * 1e9
    for which, name in (("caffe", "Caffe's OpenBLAS (cblas_sgemm)"), ("numpy", "numpy")):
        table.add(f"sgemm rate, {name} 4096^3 float32, {THREADS} threads: {sgemm[which]['gflops']:.0f} GFLOP/s, "
                  f"{blas.summary(sgemm[which]['blas'])}" + (" = the floor" if which == floor else ""),
                  None, None, None, load_avg=sgemm[which]["load"])

    figures = [("zf", "forward", 1, "Caffe (ours) zf deploy forward, per 20-frame sequence"),
               ("zf", "train", 1, "Caffe (ours) zf training iteration, 1 sequence"),
               ("zf", "train", 2, "Caffe (ours) zf training iteration, 2 sequences"),
               ("small", "forward", 1, "Caffe (ours) small deploy forward, per 20-frame sequence"),
               ("small", "train", 4, "Caffe (ours) small training iteration, 4 sequences")]
    caffe_blas = set()
    for config, kind, batch, what in figures:
        res = run_worker(f"{config}:{kind}:{batch}", r if config == "zf" else 10 * r)
        caffe_blas.add(blas.summary(res["blas"]))
        table.add(what, res["seconds"], res["flops"], rate, load_avg=res["load"])
    # As `make demo` trains: two runs side by side, one BLAS thread each (tools.table1 --jobs 2).
    pair = [run_worker("small:train:4", 10 * r, threads=1, wait=False) for _ in range(2)]
    results = [finish(proc, "small:train:4") for proc in pair]
    table.add("Caffe (ours) small training iteration, 4 sequences, as make demo runs it: 2 side by "
              "side, 1 thread each (each's time)", sum(x["seconds"] for x in results) / 2,
              results[0]["flops"], rate / THREADS, note="floor: 1 core", load_avg=results[0]["load"])

    if args.peers:
        with tempfile.TemporaryDirectory(prefix="bench.") as tmp:
            folder = Path(tmp)
            spec = run_worker("export", 1, folder=folder)
            env = {**os.environ, "OMP_NUM_THREADS": str(THREADS)}
            out = subprocess.run([str(args.peers), str(ROOT / "tools" / "bench_peers.py"), str(folder),
                                  "--repeats", str(r), "--threads", str(THREADS)],
                                 env=env, capture_output=True, text=True)
            if out.returncode:
                print(out.stderr, file=sys.stderr)
                raise RuntimeError(f"{args.peers} tools/bench_peers.py failed (exit {out.returncode})")
            peers = json.loads(out.stdout.strip().splitlines()[-1])
        fwd, train = spec["flops"]
        table.add(f"PyTorch {peers['torch_version']} CPU zf forward, per sequence (LSTM included)",
                  peers["torch_forward_s"], fwd, rate,
                  note=f"output vs Caffe's: {peers['torch_max_diff']:.0e} relative", load_avg=peers["load"])
        table.add(f"PyTorch {peers['torch_version']} CPU zf training iteration, 1 sequence (L2 loss)",
                  peers["torch_train_s"], train, rate, load_avg=peers["load"])
        table.add(f"OpenCV {peers['cv2_version']} DNN zf trunk (readNetFromCaffe, same caffemodel) "
                  "+ LSTM and head in numpy, per sequence", peers["cv2_forward_s"], fwd, rate,
                  note=f"vs Caffe's: trunk {peers['cv2_max_diff']:.0e}, output "
                       f"{peers['cv2_volume_max_diff']:.0e} relative", load_avg=peers["load"])
    else:
        print("(no --peers: PyTorch and OpenCV rows skipped; `make bench` makes that venv)")

    if args.prepare_sequences:
        seq_rate, seconds = prepare_rate(args.prepare_sequences, THREADS)
        table.add(f"DICOM -> HDF5 (data_prep.prepare, {THREADS} workers): {seq_rate:.1f} sequences/s "
                  f"of 20 x 256 x 256", seconds, None, None, note=f"{args.prepare_sequences} sequences")
    print()
    print("Caffe's BLAS, as each Caffe figure's process loaded it: " + "; ".join(sorted(caffe_blas)))
    print()
    table.print()
    print(f"\nEach time: the fastest of {r} runs (10 x {r} for the small net) after a warm-up, in its own process."
          f"\nfloor = the figure's GFLOP (convolutions, inner products and the LSTM, x2 per multiply-add;"
          f" training: forward + weight and bottom gradients) / the faster sgemm rate measured above."
          f"\nbench took {time.time() - started:.0f} s; load average at the end: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
