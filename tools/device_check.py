"""The GPU machine's check (tools/device_check.sh runs it): GPU against CPU, speed, plain `caffe train`.

    python -m tools.device_check --out DIR [--cpu-only] [--train-seconds 150]

1. `caffe device_query` on GPU 0.
2. GPU against CPU on the same weights and inputs, zf and small deploy nets: one forward and one
   backward (a fixed random gradient at the output), relative error = max |gpu - cpu| / max |cpu|
   per blob, held to REL_TOL.
3. Seconds per 20-frame sequence at inference (deploy net, N = 1 and N = 8) and per training
   iteration (the committed train net, its Python data layer included), GPU and CPU side by side.
4. Plain `caffe train -solver prototxt/paper_zf/tempreg_solver.prototxt`, unchanged, on the
   synthetic cohort prepared as that recipe's data, for --train-seconds; the iterations it reached
   and its logged loss.
Prints a table and writes DIR/device_check.json and DIR/device_check.md. `--cpu-only` rehearses
everything but the GPU columns on a machine without one.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tempregnet.outputs import write_json_atomic, write_text_atomic

ROOT = Path(__file__).resolve().parent.parent
PROTOTXT = ROOT / "prototxt"
REL_TOL = 1e-3            # float32 on two devices: summation orders differ, nothing else should
NETS = {"zf": "paper_zf", "small": "demo"}     # net -> the recipe whose committed nets are used
TRAIN_RECIPE = "paper_zf"
SOLVER = f"prototxt/{TRAIN_RECIPE}/tempreg_solver.prototxt"
PAPER_SECONDS_PER_SEQUENCE = 1.4   # section 3 of the paper (their GPU, their Caffe)


def caffe_bin() -> str:
    return os.environ.get("CAFFE_BIN", str(Path(sys.prefix) / "bin" / "caffe"))


def device_query() -> dict:
    run = subprocess.run([caffe_bin(), "device_query", "-gpu", "0"], capture_output=True,
                         text=True, env=dict(os.environ, GLOG_logtostderr="1"))
    name = re.search(r"Name:\s+(.+)", run.stderr)
    return {"returncode": run.returncode, "name": name.group(1).strip() if name else None,
            "log": run.stderr.strip().splitlines()[-20:]}


def with_force_backward(deploy: Path, batch: int, work: Path) -> Path:
    """The committed deploy net with N sequences per forward and gradients for every blob."""
    text = deploy.read_text()
    n_steps = int(re.search(r'name: "cont".*?dim: (\d+)', text, re.S).group(1))
    text = re.sub(r'(name: "frames".*?dim: )(\d+)', lambda m: m.group(1) + str(n_steps * batch),
                  text, count=1, flags=re.S)
    text = re.sub(r'(name: "cont".*?dim: \d+\s+dim: )(\d+)', lambda m: m.group(1) + str(batch),
                  text, count=1, flags=re.S)
    path = work / f"{deploy.parent.name}_{deploy.stem}_n{batch}.prototxt"
    path.write_text("force_backward: true\n" + text)
    return path


def forward_backward(caffe, net, frames, cont, top_diff, gpu: bool) -> dict:
    (caffe.set_mode_gpu if gpu else caffe.set_mode_cpu)()
    net.blobs["frames"].data[...] = frames
    net.blobs["cont"].data[...] = cont
    out = net.forward()["volume_pred"].copy()
    for blobs in net.params.values():
        for b in blobs:
            b.diff[...] = 0
    net.backward(volume_pred=top_diff)
    grads = {f"{name}[{i}]": b.diff.copy() for name, blobs in net.params.items()
             for i, b in enumerate(blobs)}
    return {"volume_pred": out, "frames_diff": net.blobs["frames"].diff.copy(), **grads}


def compare(caffe, name: str, work: Path) -> dict:
    """Relative error of GPU against CPU on one seeded weight draw and one random input."""
    caffe.set_mode_cpu()
    caffe.set_random_seed(0)
    net = caffe.Net(str(with_force_backward(PROTOTXT / NETS[name] / "tempreg_deploy.prototxt", 2, work)),
                    caffe.TEST)
    rng = np.random.default_rng(0)
    frames = rng.uniform(0, 1, net.blobs["frames"].data.shape).astype(np.float32)
    cont = np.ones(net.blobs["cont"].data.shape, np.float32)
    cont[0] = 0
    top_diff = rng.standard_normal(net.blobs["volume_pred"].data.shape).astype(np.float32)
    cpu = forward_backward(caffe, net, frames, cont, top_diff, gpu=False)
    gpu = forward_backward(caffe, net, frames, cont, top_diff, gpu=True)
    rel = {k: float(np.abs(gpu[k] - cpu[k]).max() / max(np.abs(cpu[k]).max(), 1e-30)) for k in cpu}
    worst = max(rel, key=rel.get)
    return {"net": name, "forward_rel_err": rel["volume_pred"], "worst_blob": worst,
            "worst_rel_err": rel[worst], "tolerance": REL_TOL, "ok": rel[worst] <= REL_TOL}


def time_forward(caffe, name: str, batch: int, gpu: bool, reps: int, work: Path) -> float:
    """Seconds per sequence: mean wall time of a forward of N sequences, divided by N."""
    (caffe.set_mode_gpu if gpu else caffe.set_mode_cpu)()
    net = caffe.Net(str(with_force_backward(PROTOTXT / NETS[name] / "tempreg_deploy.prototxt", batch, work)),
                    caffe.TEST)
    net.blobs["frames"].data[...] = np.random.default_rng(0).uniform(0, 1, net.blobs["frames"].data.shape)
    net.blobs["cont"].data[...] = 1
    net.blobs["cont"].data[0] = 0
    net.forward()                                   # warm-up: allocations, cuBLAS handles
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        net.forward()
        net.blobs["volume_pred"].data.sum()         # wait for the device: read the output back
        times.append(time.perf_counter() - t)
    return float(np.mean(times)) / batch


def time_training(caffe, gpu: bool, iters: int, work: Path) -> float:
    """Seconds per iteration of the committed zf solver's net (data layer, LSTM, both losses).

    The solver is the committed one with the test pass at iteration 0 left out (not timed anyway).
    """
    (caffe.set_mode_gpu if gpu else caffe.set_mode_cpu)()
    solver_path = work / "zf_solver_no_initial_test.prototxt"
    solver_path.write_text((ROOT / SOLVER).read_text()
                           + "test_initialization: false\n")
    solver = caffe.get_solver(str(solver_path))
    solver.step(1)                                  # warm-up
    t = time.perf_counter()
    solver.step(iters)
    return (time.perf_counter() - t) / iters


def prepare_cohort(work: Path) -> None:
    """A synthetic cohort (ACDC layout) prepared as the paper_zf recipe's data, where its
    committed nets read it (data/prepared/paper_zf)."""
    out = ROOT / "data" / "prepared" / TRAIN_RECIPE
    if (out / "fold0_train.txt").is_file():
        return
    cohort = work / "cohort"
    py = [sys.executable, "-m"]
    subprocess.run(py + ["data_prep.synthetic", str(cohort), "--patients", "8", "--seed", "0",
                         "--format", "nifti"], check=True, cwd=ROOT)
    subprocess.run(py + ["data_prep.prepare", "--recipe", TRAIN_RECIPE, str(cohort), str(out)],
                   check=True, cwd=ROOT)


def plain_caffe_train(seconds: int, out: Path) -> dict:
    """`caffe train` with the unchanged committed solver, stopped after `seconds`."""
    log = out / "caffe_train_zf.log"
    cmd = [caffe_bin(), "train", "-solver", SOLVER]
    env = dict(os.environ, GLOG_logtostderr="1", GLOG_minloglevel="0")
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env)
        try:
            proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait()
    text = log.read_text()
    losses = [(int(i), float(v)) for i, v in re.findall(r"Iteration (\d+).*?, loss = ([0-9.eE+-]+)", text)]
    head = [v for _, v in losses[:5]]
    tail = [v for _, v in losses[-5:]]
    return {"command": " ".join(cmd), "seconds": seconds, "iterations": losses[-1][0] if losses else 0,
            "first_losses": head, "last_losses": tail,
            "loss_fell": bool(losses) and len(losses) >= 10 and np.mean(tail) < np.mean(head),
            "mode_line": next((ln for ln in text.splitlines() if "Use CPU" in ln or "Using GPUs" in ln
                               or "CPU-only" in ln), None), "log": log.name}


def table(res: dict) -> str:
    rows = ["| figure | GPU | CPU |", "|---|---:|---:|"]
    for name in NETS:
        for n in (1, 8):
            g, c = res["seconds_per_sequence"].get(f"{name}_n{n}_gpu"), res["seconds_per_sequence"].get(f"{name}_n{n}_cpu")
            rows.append(f"| {name} deploy, s per sequence, N = {n} | {fmt(g)} | {fmt(c)} |")
    rows.append(f"| zf training iteration (2 sequences), s | {fmt(res['training'].get('gpu'))} | "
                f"{fmt(res['training'].get('cpu'))} |")
    rows.append(f"| paper (their GPU), s per sequence | {PAPER_SECONDS_PER_SEQUENCE} | |")
    lines = ["\n".join(rows), ""]
    for c in res["compare"]:
        lines.append(f"- {c['net']}: GPU vs CPU forward rel. error {c['forward_rel_err']:.1e}, worst blob "
                     f"{c['worst_blob']} {c['worst_rel_err']:.1e} (tolerance {c['tolerance']:g}): "
                     f"{'ok' if c['ok'] else 'FAILED'}")
    t = res["caffe_train"]
    lines.append(f"- `{t['command']}` for {t['seconds']} s: {t['iterations']} iterations, loss "
                 f"{t['first_losses'][:1]} -> {t['last_losses'][-1:]}, falling: {t['loss_fell']}")
    return "\n".join(lines) + "\n"


def fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.device_check", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--cpu-only", action="store_true", help="rehearsal: leave the GPU columns out")
    p.add_argument("--train-seconds", type=int, default=150)
    p.add_argument("--cpu-reps", type=int, default=2)
    p.add_argument("--train-iters", type=int, default=5, help="timed iterations per device")
    args = p.parse_args(argv)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    os.chdir(ROOT)                                  # the committed nets name paths from the root
    os.environ.setdefault("GLOG_minloglevel", "2")
    import caffe
    res = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu_only": args.cpu_only,
           "cpu_threads": os.cpu_count(), "seconds_per_sequence": {}, "training": {}, "compare": []}
    res["device_query"] = None if args.cpu_only else device_query()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepare_cohort(work)
        devices = [False] if args.cpu_only else [True, False]
        if not args.cpu_only:
            res["compare"] = [compare(caffe, name, work) for name in NETS]
        for name in NETS:
            for n in (1, 8):
                for gpu in devices:
                    reps = 20 if gpu else args.cpu_reps
                    res["seconds_per_sequence"][f"{name}_n{n}_{'gpu' if gpu else 'cpu'}"] = \
                        time_forward(caffe, name, n, gpu, reps, work)
        for gpu in devices:
            res["training"]["gpu" if gpu else "cpu"] = time_training(
                caffe, gpu, args.train_iters * (20 if gpu else 1), work)
    res["caffe_train"] = plain_caffe_train(args.train_seconds, args.out)
    write_json_atomic(args.out / "device_check.json", res)
    md = table(res)
    write_text_atomic(args.out / "device_check.md", md)
    print(md)
    return 0 if all(c["ok"] for c in res["compare"]) else 1


if __name__ == "__main__":
    sys.exit(main())
