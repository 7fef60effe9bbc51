"""Train one variant of a recipe on one fold with `caffe train`, leaving a self-describing run folder.

The run folder (tempregnet.runs) keeps settings.json (the resolved recipe and run settings),
contract.json (the data's sequence contract), the train/test/deploy prototxts and the solver used,
train.log (Caffe's log, tee'd), snapshots/, final_model.txt and training_curves.png.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from caffe.proto import caffe_pb2
from google.protobuf import text_format

from data_prep.errors import InputError
from data_prep.hdf5 import load_rows, read_list
from models.config import get_variant
from models.tempregnet import net_proto, solver_proto
from tempregnet import runs
from tempregnet.baselines import LABEL_KEYS, rows_es_fraction
from tempregnet.contract import read_contract
from tempregnet.decoding import KEYS as DECODING_KEYS
from tempregnet.outputs import write_text_atomic
from tempregnet.recipes import Recipe, load_recipe
from tempregnet.training_log import parse_log, plot_curves

CAFFE_BIN = Path(sys.prefix) / "bin" / "caffe"   # the venv wrapper (Python layers see the project)
# Console echo of the Caffe log: progress, test results and anything that looks like an error.
ECHO = re.compile(r"Iteration \d+|net output|Optimization Done|Snapshotting to|^[EF]\d{4}|Error|Traceback|Check failed")
SNAPSHOT_LINE = re.compile(r"Snapshotting solver state to binary proto file (\S+)")
# Snapshots kept while a run trains: the newest complete pair and the one being written (a ZF
# caffemodel + Adam solverstate pair is ~0.7 GB); a finished run keeps only its final pair.
KEEP_SNAPSHOTS = 2


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


def validation_lists(data: Path, fold: str, folder: Path) -> tuple[Path, Path]:
    """(fit list, validation list) inside fold's training folds, written into folder with
    absolute h5 paths: the validation patients are those of the next fold, (fold + 1) mod k,
    which fold trains on and never tests on; the fit list is fold's training list without them.
    Settings are chosen on these, never on fold's test list (tools.learning_curve --validation)."""
    train_list, _ = fold_lists(Path(data), fold)
    k = sum(1 for _ in Path(data).glob("fold*_test.txt"))
    _, val_source = fold_lists(Path(data), str((int(fold) + 1) % k))
    val = read_list(val_source)
    held_out = set(val)
    fit = [entry for entry in read_list(train_list) if entry not in held_out]
    lists = folder / f"fold{fold}_fit.txt", folder / f"fold{fold}_validation.txt"
    for path, entries in zip(lists, (fit, val)):
        write_text_atomic(path, "".join(f"{h5.resolve()} {row}\n" for h5, row in entries))
    return lists


def count_lines(path: Path) -> int:
    """Sequences a split list names (an error if none)."""
    n = sum(1 for line in path.read_text().splitlines() if line.strip())
    if n == 0:
        raise InputError(path, "split list names no sequences")
    return n


def check_data(recipe: Recipe, data) -> None:
    """An error naming every contract field in which the prepared data differs from the recipe's."""
    recipe.contract().check(read_contract(data), data, what=f"recipe {recipe.name}'s")


def default_run_dir(recipe: str, variant: str, fold) -> Path:
    """runs/<recipe>_<variant>_fold<k>."""
    return Path("runs") / f"{recipe}_{variant}_fold{fold}"


def resolve_settings(recipe: Recipe, data, fold, variant: str, iters: int, weights, seed: int) -> dict:
    """Every setting of a run: the recipe, the fold, the variant, checked against the data."""
    var = get_variant(variant)
    fold = str(fold)
    if fold != "all" and not fold.isdigit():
        raise ValueError(f"--fold must be a number or 'all', got {fold!r}")
    if iters < 1:
        raise ValueError(f"--iters must be positive, got {iters}")
    if weights and not recipe.imagenet_weights:
        raise ValueError(f"--weights (ImageNet ZF) fits only recipes with imagenet_weights; "
                         f"{recipe.name} trains from scratch")
    train_list, test_list = fold_lists(Path(data), fold)
    check_data(recipe, Path(data))
    cfg = recipe.net_config()
    return dict(
        recipe=recipe.to_dict(), data=str(Path(data).resolve()), fold=fold, variant=var.name,
        description=f"{var.description}; {cfg.description}", iters=iters,
        batch_size=cfg.batch_size, test_batch_size=cfg.test_batch_size, beta=var.beta,
        weights=str(Path(weights).resolve()) if weights else None,
        imagenet_init=bool(weights), seed=seed,
        train_list=str(train_list.resolve()), test_list=str(test_list.resolve()),
        n_train=count_lines(train_list), n_test=count_lines(test_list),
        # the median systole share of the training sequences: the decoders' systole prior
        # (labels.SystolePrior) reads it from here, so a model folder carries it
        systole_fraction=rows_es_fraction(load_rows(train_list, LABEL_KEYS)),
    )


def run_stem(s: dict) -> str:
    """Base name of a run's prototxts and snapshots: '<recipe>_<variant>'."""
    return f"{s['recipe']['name']}_{s['variant']}"


def write_run_files(run_dir: Path, recipe: Recipe, s: dict, gpu: bool) -> Path:
    """Prototxts and solver for settings s into run_dir; returns the solver path."""
    cfg, var = recipe.net_config(), get_variant(s["variant"])
    stem = run_stem(s)
    label = recipe.data.label
    paths = {phase: run_dir / f"{stem}_{phase}.prototxt" for phase in ("train", "test", "deploy")}
    nets = {
        "train": net_proto(cfg, var, "train", s["train_list"], s["batch_size"], s["seed"], label),
        "test": net_proto(cfg, var, "test", s["test_list"], s["test_batch_size"], s["seed"], label),
        "deploy": net_proto(cfg, var, "deploy"),
    }
    for phase, net in nets.items():
        write_text_atomic(paths[phase], text_format.MessageToString(net))
    (run_dir / runs.SNAPSHOTS).mkdir(exist_ok=True)
    solver = solver_proto(cfg, str(paths["train"]), str(paths["test"]),
                          str(run_dir / runs.SNAPSHOTS / stem), max_iter=s["iters"],
                          test_iter=math.ceil(s["n_test"] / s["test_batch_size"]), seed=s["seed"],
                          gpu=gpu)
    solver.snapshot = min(solver.snapshot, s["iters"])
    solver.test_interval = min(solver.test_interval, s["iters"])
    solver_path = run_dir / f"{stem}_solver.prototxt"
    write_text_atomic(solver_path, text_format.MessageToString(solver))
    return solver_path


def run_caffe(args: list[str], log_path: Path, cwd: Path, echo: bool = True,
              blas_threads: int | None = None) -> int:
    """Run caffe, appending its whole log to log_path and echoing progress lines; returns the exit code."""
    # stderr only (no glog files in /tmp), and INFO lines even if the caller silenced them: we parse them
    env = {**os.environ, "GLOG_logtostderr": "1", "GLOG_minloglevel": "0"}
    if blas_threads:            # runs trained side by side: one thread each (BLAS and the
        env["OPENBLAS_NUM_THREADS"] = str(blas_threads)     # layers' OpenMP loops) is faster here
        env["OMP_NUM_THREADS"] = str(blas_threads)
    if echo:
        print("$ " + " ".join(args), flush=True)
    with open(log_path, "a", buffering=1) as log:     # line-buffered: `tail -f` follows a run
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                cwd=cwd, env=env)
        for line in proc.stdout:
            log.write(line)
            if echo and ECHO.search(line):
                print(line.rstrip(), flush=True)
            snapshot = SNAPSHOT_LINE.search(line)
            if snapshot:        # Caffe is about to write this solverstate: it counts as kept
                path = Path(cwd, snapshot.group(1))
                prune_snapshots(path.parent, writing=runs.snapshot_iteration(path))
        return proc.wait()


def prune_snapshots(folder: Path, keep: int = KEEP_SNAPSHOTS, writing: int | None = None) -> None:
    """Delete all but the newest `keep` iterations' caffemodel / solverstate pairs in folder;
    `writing`, the iteration Caffe is writing now, is one of them whether its file exists yet or not."""
    iters = sorted({runs.snapshot_iteration(p) for p in folder.glob("*_iter_*.solverstate")}
                   - {writing})
    older = keep - (writing is not None)
    for old in iters[:max(len(iters) - older, 0)]:
        for p in folder.glob(f"*_iter_{old}.*"):
            if p.suffix in (".caffemodel", ".solverstate"):
                p.unlink()


def finished_run(run_dir: Path, recipe: Recipe, variant: str, fold, iters: int,
                 imagenet: bool) -> bool:
    """True if run_dir holds a finished run of exactly these settings; False if it holds no
    finished run; an error if it finished with others (never silently replaced)."""
    if not (run_dir / runs.FINAL_MODEL).is_file() or not (run_dir / runs.SETTINGS).is_file():
        return False
    differs = settings_differ(run_dir, recipe, variant, fold, iters, imagenet)
    if differs:
        raise InputError(run_dir, f"finished run with other {', '.join(differs)}; pass --retrain "
                                  "to replace it or another run folder")
    return True


def resumable_run(run_dir: Path, recipe: Recipe, variant: str, fold, iters: int,
                  imagenet: bool) -> bool:
    """True if run_dir holds an unfinished run (killed) of exactly these settings with a
    snapshot to resume from."""
    return ((run_dir / runs.SETTINGS).is_file() and not (run_dir / runs.FINAL_MODEL).is_file()
            and runs.newest_solverstate(run_dir) is not None
            and not settings_differ(run_dir, recipe, variant, fold, iters, imagenet))


def settings_differ(run_dir: Path, recipe: Recipe, variant: str, fold, iters: int,
                    imagenet: bool) -> list[str]:
    """The settings in which run_dir's run differs from these (empty: the same run). The recipe's
    decoding and description are not training: a run stays the same run when only they change."""
    s = runs.read_settings(run_dir)

    def trained(recipe_dict):
        return {k: v for k, v in (recipe_dict or {}).items()
                if k not in DECODING_KEYS and k != "description"}

    wanted = {"recipe": trained(recipe.to_dict()), "variant": variant, "iters": iters,
              "fold": str(fold), "imagenet_init": imagenet}
    have = {**s, "recipe": trained(s.get("recipe"))}
    return sorted(k for k, v in wanted.items() if have.get(k) != v)


def train(recipe, data, fold, variant="tempreg", iters=None, weights=None, out=None,
          resume=False, force=False, seed=None, quiet=False, blas_threads=None) -> Path:
    """Train one variant of recipe (a Recipe or its name) on one fold; returns the final
    caffemodel (also named by final_model.txt). iters and seed default to the recipe's.

    quiet: nothing on stdout (the log still goes to the run folder), for runs trained side by side.
    """
    if weights:
        weights = Path(weights)
        if not weights.is_file():
            raise InputError(weights, "weights file not found (see tools/fetch_imagenet_zf.py)")
    run_dir = Path(out).resolve() if out else None
    if resume:
        if run_dir is None or not (run_dir / runs.SETTINGS).is_file():
            raise InputError(run_dir or "--out", f"nothing to resume (no {runs.SETTINGS})")
        snapshot = runs.newest_solverstate(run_dir)
        if snapshot is None:
            raise InputError(run_dir / runs.SNAPSHOTS, "no .solverstate to resume from")
        s = runs.read_settings(run_dir)
        if iters:
            s["iters"] = iters
        solver_path = run_dir / f"{run_stem(s)}_solver.prototxt"
        solver = text_format.Parse(solver_path.read_text(), caffe_pb2.SolverParameter())
        solver.max_iter = s["iters"]
        write_text_atomic(solver_path, text_format.MessageToString(solver))
        runs.write_run_record(run_dir, s, runs.read_model_contract(run_dir))
    else:
        recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
        s = resolve_settings(recipe, data, fold, variant, iters or recipe.iterations, weights,
                             recipe.seed if seed is None else seed)
        run_dir = run_dir or default_run_dir(recipe.name, variant, fold).resolve()
        if run_dir.exists() and any(run_dir.iterdir()):
            if not force:
                raise InputError(run_dir, "run folder exists; pass --resume to continue or --force to start over")
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        gpu = gpu_available()
        s["solver_mode"] = "GPU" if gpu else "CPU"
        prefix = Path(sys.prefix) / "caffe_prefix"
        s["caffe"] = prefix.read_text().strip() if prefix.is_file() else str(CAFFE_BIN)
        solver_path = write_run_files(run_dir, recipe, s, gpu)
        runs.write_run_record(run_dir, s, read_contract(data))
        snapshot = None
    if not quiet:
        print(json_text(s), end="", flush=True)

    args = [str(CAFFE_BIN), "train", f"-solver={solver_path}"]
    if snapshot:
        args.append(f"-snapshot={snapshot}")
    elif s["weights"]:
        args.append(f"-weights={s['weights']}")
    log_path = run_dir / "train.log"
    code = run_caffe(args, log_path, run_dir, echo=not quiet, blas_threads=blas_threads)
    if code != 0:
        raise RuntimeError(f"caffe train failed (exit {code}); see {log_path}")

    stem = run_stem(s)
    final = run_dir / runs.SNAPSHOTS / f"{stem}_iter_{s['iters']}.caffemodel"
    if not final.is_file():
        raise RuntimeError(f"caffe train finished but {final} is missing; see {log_path}")
    runs.write_final_model(run_dir, final)
    prune_snapshots(final.parent, keep=1)
    curves = parse_log(log_path)
    if curves["train"]:
        plot_curves(curves, run_dir / "training_curves.png", f"{stem} fold {s['fold']}"
                    + ("" if s["imagenet_init"] else " (no ImageNet weights)"))
    if not quiet:
        print(f"final model: {final}")
    return final


def json_text(obj) -> str:
    """Settings as written to settings.json and printed."""
    import json
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"
