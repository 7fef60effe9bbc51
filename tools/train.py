"""Train one TempReg-Net variant on one fold with `caffe train`, keeping a self-describing run directory.

    python -m tools.train --data data/prepared --fold 0 --variant tempreg --config small --iters 2000
    python -m tools.train --data data/prepared --fold all --variant tempreg --config zf --iters 50000 \\
        --weights data/imagenet/ZF.v2.caffemodel

The run directory keeps settings.json (resolved settings), the train/test/deploy prototxts and the
solver used, train.log (Caffe's log, tee'd), snapshots/, final_model.txt (path of the final
caffemodel) and training_curves.png.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from google.protobuf import text_format

from data_prep.errors import InputError
from models.config import VARIANTS, CONFIGS, NetConfig, get_config, get_variant
from models.tempregnet import file_stem, net_proto, solver_proto
from tools.plot_training import parse_log, plot_curves

# NetConfig fields --set may not change: they name the config, fix the stored data and crop, or
# are not scalars.
FIXED_FIELDS = {"name", "description", "stored_size", "crop", "pool5_size", "n_steps", "conv_widths"}
CAFFE_BIN = Path(sys.prefix) / "bin" / "caffe"   # the venv wrapper (Python layers see the project)
# Console echo of the Caffe log: progress, test results and anything that looks like an error.
ECHO = re.compile(r"Iteration \d+|net output|Optimization Done|Snapshotting to|^[EF]\d{4}|Error|Traceback|Check failed")


def write_atomic(path: Path, text: str) -> None:
    """Write text to path via a temp file in the same folder and os.replace."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def gpu_available() -> bool:
    """Whether this Caffe build can use GPU 0; probed in a child, as a CPU-only build aborts on it."""
    probe = "import caffe; caffe.set_device(0); caffe.set_mode_gpu()"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True,
                            env={**os.environ, "GLOG_minloglevel": "3"})
    return result.returncode == 0


def fold_lists(data: Path, fold: str) -> tuple[Path, Path]:
    """(train list, test list) of a fold; fold 'all' trains and tests on all.txt (no held-out data)."""
    if not data.is_dir():
        raise InputError(data, "prepared data folder not found (run the prepare step first)")
    names = ("all.txt", "all.txt") if fold == "all" else (f"fold{fold}_train.txt", f"fold{fold}_test.txt")
    lists = tuple(data / name for name in names)
    for path in lists:
        if not path.is_file():
            raise InputError(path, f"split list for fold {fold} not found")
    return lists


def count_lines(path: Path) -> int:
    n = sum(1 for line in path.read_text().splitlines() if line.strip())
    if n == 0:
        raise InputError(path, "split list names no sequences")
    return n


def newest_solverstate(run_dir: Path) -> Path | None:
    """The .solverstate with the highest iteration number in run_dir/snapshots, if any."""
    states = list((run_dir / "snapshots").glob("*_iter_*.solverstate"))
    if not states:
        return None
    return max(states, key=lambda p: int(re.search(r"_iter_(\d+)\.solverstate$", p.name).group(1)))


def load_prepared_parameters(data: Path) -> dict:
    """The preprocessing parameters recorded in a prepared dataset's provenance."""
    from data_prep.hdf5 import load_provenance
    return load_provenance(data).get("parameters", {})


def parse_net_overrides(pairs) -> dict:
    """`KEY=VALUE` strings -> {field: value} for models.config.NetConfig, typed like the field's
    default; unknown fields and the ones that name or size the stored data are errors."""
    fields = {f.name: f for f in dataclasses.fields(NetConfig)}
    overrides = {}
    for pair in pairs or ():
        key, sep, text = pair.partition("=")
        if not sep or key not in fields or key in FIXED_FIELDS:
            allowed = ", ".join(sorted(set(fields) - FIXED_FIELDS))
            raise ValueError(f"--set expects KEY=VALUE with KEY one of: {allowed}; got {pair!r}")
        kind = type(fields[key].default) if fields[key].default is not dataclasses.MISSING else int
        try:
            if kind is bool:
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(text)
                overrides[key] = text.lower() in ("true", "1")
            else:
                overrides[key] = kind(text)
        except ValueError:
            raise ValueError(f"--set {key}: {text!r} is not a valid {kind.__name__}") from None
    return overrides


def check_prepared(cfg: NetConfig, data: Path) -> dict:
    """The prepared data's preprocessing parameters, checked against cfg: an error if its frames are
    not the size cfg crops from, or if cfg rolls sequences whose labels are not 'cycle'."""
    prepared = load_prepared_parameters(data)
    size = prepared.get("size")
    if size is not None and int(size) != cfg.stored_size:
        raise InputError(data, f"frames were prepared at {size} px; config '{cfg.name}' expects "
                               f"{cfg.stored_size} px (prepare with --size {cfg.stored_size}, or "
                               "use the config made for these frames)")
    if cfg.train_roll and prepared.get("label", "cycle") != "cycle":
        raise ValueError("train_roll needs data prepared with --label cycle (a rolled 'paper' "
                         "label is not Eq. 4 of the rolled sequence)")
    return prepared


def resolve_settings(data, fold, variant, config, iters, weights, batch, beta, weight_decay,
                     base_lr, seed, net_overrides=None) -> dict:
    """Every setting of a run, defaults filled from models/config.py, checked."""
    cfg, var = get_config(config), get_variant(variant)
    net_overrides = dict(net_overrides or {})
    cfg = cfg.replace(**net_overrides)
    fold = str(fold)
    if fold != "all" and not fold.isdigit():
        raise ValueError(f"--fold must be a number or 'all', got {fold!r}")
    if iters < 1:
        raise ValueError(f"--iters must be positive, got {iters}")
    if beta is not None and not var.use_lstm and beta:
        raise ValueError("--beta applies to the TempReg-Net variants, not cnn_reg")
    if beta is not None and var.name == "tempreg_notsc" and beta:
        raise ValueError("tempreg_notsc is beta = 0 by definition; use --variant tempreg")
    if weights and cfg.name != "zf":
        raise ValueError("--weights (ImageNet ZF) fits only --config zf; the small net trains from scratch")
    train_list, test_list = fold_lists(Path(data), fold)
    prepared = check_prepared(cfg, Path(data))
    batch = batch or cfg.batch_size
    return dict(
        data=str(Path(data).resolve()), fold=fold, variant=var.name, config=cfg.name,
        description=f"{var.description}; {cfg.description}",
        iters=iters, batch_size=batch, test_batch_size=cfg.test_batch_size,
        beta=var.beta if beta is None else beta,
        net_overrides=net_overrides,
        weight_decay=cfg.weight_decay if weight_decay is None else weight_decay,
        base_lr=cfg.base_lr if base_lr is None else base_lr,
        weights=str(Path(weights).resolve()) if weights else None,
        imagenet_init=bool(weights), seed=seed,
        train_list=str(train_list.resolve()), test_list=str(test_list.resolve()),
        n_train=count_lines(train_list), n_test=count_lines(test_list),
        # how the frames were made (size, roi, label convention): inference on new data redoes it
        data_parameters=prepared,
    )


def write_run_files(run_dir: Path, s: dict, gpu: bool) -> Path:
    """Prototxts and solver for settings s into run_dir; returns the solver path."""
    cfg = get_config(s["config"]).replace(**s.get("net_overrides", {}))
    cfg = cfg.replace(weight_decay=s["weight_decay"], base_lr=s["base_lr"])
    var = get_variant(s["variant"])
    var = type(var)(var.name, var.description, var.use_lstm, s["beta"])
    stem = file_stem(cfg, var)
    paths = {phase: run_dir / f"{stem}_{phase}.prototxt" for phase in ("train", "test", "deploy")}
    nets = {
        "train": net_proto(cfg, var, "train", s["train_list"], s["batch_size"], s["seed"]),
        "test": net_proto(cfg, var, "test", s["test_list"], s["test_batch_size"], s["seed"]),
        "deploy": net_proto(cfg, var, "deploy"),
    }
    for phase, net in nets.items():
        write_atomic(paths[phase], text_format.MessageToString(net))
    (run_dir / "snapshots").mkdir(exist_ok=True)
    solver = solver_proto(cfg, str(paths["train"]), str(paths["test"]), str(run_dir / "snapshots" / stem),
                          max_iter=s["iters"], test_iter=math.ceil(s["n_test"] / s["test_batch_size"]),
                          seed=s["seed"], gpu=gpu)
    solver.snapshot = min(solver.snapshot, s["iters"])
    solver.test_interval = min(solver.test_interval, s["iters"])
    solver_path = run_dir / f"{stem}_solver.prototxt"
    write_atomic(solver_path, text_format.MessageToString(solver))
    return solver_path


def run_caffe(args: list[str], log_path: Path, cwd: Path, echo: bool = True,
              blas_threads: int | None = None) -> int:
    """Run caffe, appending its whole log to log_path and echoing progress lines; returns the exit code."""
    # stderr only (no glog files in /tmp), and INFO lines even if the caller silenced them: we parse them
    env = {**os.environ, "GLOG_logtostderr": "1", "GLOG_minloglevel": "0"}
    if blas_threads:            # runs trained side by side: one BLAS thread each is faster here
        env["OPENBLAS_NUM_THREADS"] = str(blas_threads)
    if echo:
        print("$ " + " ".join(args), flush=True)
    with open(log_path, "a") as log:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                cwd=cwd, env=env)
        for line in proc.stdout:
            log.write(line)
            if echo and ECHO.search(line):
                print(line.rstrip(), flush=True)
        return proc.wait()


def train(data, fold, variant="tempreg", config="small", iters=None, weights=None, batch=None,
          out=None, resume=False, force=False, beta=None, weight_decay=None, base_lr=None,
          seed=0, quiet=False, blas_threads=None, net_overrides=None) -> Path:
    """Train one variant on one fold; returns the final caffemodel (also written to final_model.txt).

    quiet: nothing on stdout (the log still goes to the run dir), for runs trained side by side.
    """
    if weights:
        weights = Path(weights)
        if not weights.is_file():
            raise InputError(weights, "weights file not found (see tools/fetch_imagenet_zf.py)")
    run_dir = Path(out or f"runs/{config}_{variant}_fold{fold}").resolve()
    settings_path = run_dir / "settings.json"
    snapshot = None
    if resume:
        if not settings_path.is_file():
            raise InputError(run_dir, "nothing to resume (no settings.json)")
        snapshot = newest_solverstate(run_dir)
        if snapshot is None:
            raise InputError(run_dir / "snapshots", "no .solverstate to resume from")
        s = json.loads(settings_path.read_text())
        if iters:
            s["iters"] = iters
    else:
        if iters is None:
            raise ValueError("--iters is required")
        s = resolve_settings(data, fold, variant, config, iters, weights, batch, beta, weight_decay,
                             base_lr, seed, net_overrides)
        if run_dir.exists() and any(run_dir.iterdir()):
            if not force:
                raise InputError(run_dir, "run directory exists; pass --resume to continue or --force to start over")
            shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    gpu = gpu_available()
    s["solver_mode"] = "GPU" if gpu else "CPU"
    s["caffe"] = (Path(sys.prefix) / "caffe_prefix").read_text().strip() if (Path(sys.prefix) / "caffe_prefix").is_file() else str(CAFFE_BIN)
    solver_path = write_run_files(run_dir, s, gpu)
    write_atomic(settings_path, json.dumps(s, indent=2, sort_keys=True) + "\n")
    if not quiet:
        print(json.dumps(s, indent=2, sort_keys=True), flush=True)

    args = [str(CAFFE_BIN), "train", f"-solver={solver_path}"]
    if snapshot:
        args.append(f"-snapshot={snapshot}")
    elif s["weights"]:
        args.append(f"-weights={s['weights']}")
    log_path = run_dir / "train.log"
    code = run_caffe(args, log_path, run_dir, echo=not quiet, blas_threads=blas_threads)
    if code != 0:
        raise RuntimeError(f"caffe train failed (exit {code}); see {log_path}")

    stem = solver_path.name[: -len("_solver.prototxt")]
    final = run_dir / "snapshots" / f"{stem}_iter_{s['iters']}.caffemodel"
    if not final.is_file():
        raise RuntimeError(f"caffe train finished but {final} is missing; see {log_path}")
    write_atomic(run_dir / "final_model.txt", f"{final.relative_to(run_dir)}\n")  # run dir can move
    curves = parse_log(log_path)
    if curves["train"]:
        plot_curves(curves, run_dir / "training_curves.png", f"{stem} fold {s['fold']}"
                    + ("" if s["imagenet_init"] else " (no ImageNet weights)"))
    if not quiet:
        print(f"final model: {final}")
    return final


def main(argv=None) -> int:
    """CLI of `train`; bad input gives one line on stderr and exit status 1."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="prepared data folder (sequences.h5 and split lists)")
    parser.add_argument("--fold", default="0", help="fold number, or 'all' to train on all.txt")
    parser.add_argument("--variant", default="tempreg", choices=sorted(VARIANTS))
    parser.add_argument("--config", default="small", choices=sorted(CONFIGS))
    parser.add_argument("--iters", type=int, help="training iterations (max_iter)")
    init = parser.add_mutually_exclusive_group()
    init.add_argument("--weights", type=Path, help="ImageNet ZF caffemodel to fine-tune from (zf only)")
    init.add_argument("--no-weights", action="store_true", help="train from the fillers (required for zf without --weights)")
    parser.add_argument("--batch", type=int, help="sequences per training batch (default from the config)")
    parser.add_argument("--beta", type=float, help="temporal loss weight (tempreg; default in models/config.py)")
    parser.add_argument("--weight-decay", type=float, help="alpha of Eq. 3 as Caffe weight_decay")
    parser.add_argument("--base-lr", type=float, help="base learning rate (head gets 10x)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="+", metavar="KEY=VALUE", default=[],
                        help="override net/solver fields of the config (models/config.py), e.g. "
                             "--set lstm_cycles=1 train_roll=false; recorded in settings.json")
    parser.add_argument("--out", type=Path, help="run directory (default runs/<config>_<variant>_fold<k>)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest .solverstate in --out")
    parser.add_argument("--force", action="store_true", help="delete an existing run directory and start over")
    args = parser.parse_args(argv)
    try:
        if not args.resume and args.data is None:
            raise ValueError("--data is required")
        if args.config == "zf" and not (args.weights or args.no_weights or args.resume):
            raise ValueError("--config zf needs --weights ZF.v2.caffemodel (the paper) or --no-weights")
        train(args.data, args.fold, args.variant, args.config, args.iters, args.weights, args.batch,
              args.out, args.resume, args.force, args.beta, args.weight_decay, args.base_lr, args.seed,
              net_overrides=parse_net_overrides(args.set))
    except (InputError, ValueError, RuntimeError) as err:
        print(f"train: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
