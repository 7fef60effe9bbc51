"""Held-out aFD while a net trains: the quick experiment loop behind the tuning notes (docs/results.md).

    python -m tools.learning_curve --recipe demo --data data/prepared/demo --fold 0 \\
        --variant tempreg --iters 2000 --every 250 [--set base_lr=1e-3 ...]

Trains with pycaffe (no run directory) and every --every iterations decodes the
fold's test sequences (with --validation: trains on the fold's training folds less the next
fold's patients and decodes those, so a setting is chosen without the test fold) with the recipe's
decoder and the deploy net sharing the training weights; prints one line each:
mean training L2, test MSE against the labels, aFD ED / ES (Eq. 5) and the cyclic aFD. --set
tries overrides on top of the recipe (an experiment that is reported becomes a recipe file).
Nothing is written unless --out names a folder (then the nets, the solver, the final weights and,
as JSON, the lines and the last evaluation's per-sequence records go there, the JSON and a
snapshot after every line, so `--resume` continues a killed curve from its last line: the solver
exactly, the data layer's random order afresh from the seed).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from data_prep.errors import InputError
from data_prep.hdf5 import load_rows
from tempregnet import evaluation as afd
from tempregnet.contract import read_contract
from tempregnet.inference import LoadedNet, predict_rows, quiet_caffe
from tempregnet.outputs import write_json_atomic
from tempregnet.recipes import load_recipe, parse_overrides
from tempregnet.training import (check_data, count_lines, fold_lists, prune_snapshots,
                                 validation_lists)


CURVE_FILE = "learning_curve.json"
EVAL_BATCH = 8      # sequences per forward pass when scoring (bounds the ZF net's memory)


def held_out_scores(loaded, rows, decoder: str) -> tuple[dict, list[dict]]:
    """Test MSE and aFD / cyclic aFD of ED and ES for the prepared rows, and the per-sequence
    records they come from."""
    records = predict_rows(loaded, rows, batch=EVAL_BATCH, method=decoder)
    pooled = afd.summarise(records)[afd.POOLED]
    out = {"test_mse": float(np.mean([(np.asarray(r["curve"]) - r["label"]) ** 2 for r in records]))}
    for phase in afd.PHASES:
        out[f"afd_{phase}"] = pooled[phase]["afd"]
        out[f"cyclic_{phase}"] = pooled[phase]["cyclic_afd_not_paper"]
    return out, records


def run(args) -> list[dict]:
    """Resolve the recipe, overrides and fold, then train and score in --out or a scratch folder."""
    from models.config import get_variant

    recipe = load_recipe(args.recipe)
    recipe = dataclasses.replace(recipe, overrides={**recipe.overrides, **parse_overrides(args.set)})
    cfg = recipe.net_config()
    variant = get_variant(args.variant)
    if args.beta is not None:
        if variant.name != "tempreg":
            raise ValueError("--beta applies to --variant tempreg")
        variant = dataclasses.replace(variant, beta=args.beta)
    if args.fold == "all":
        raise ValueError("--fold all has no held-out sequences; give a fold number")
    check_data(recipe, args.data)
    contract = read_contract(args.data)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        return train_and_score(args, recipe, cfg, variant, contract, args.out)
    with tempfile.TemporaryDirectory(prefix="learning_curve-") as scratch:
        return train_and_score(args, recipe, cfg, variant, contract, Path(scratch))


def train_and_score(args, recipe, cfg, variant, contract, folder: Path) -> list[dict]:
    """Write the nets and solver into folder, train, and print a held-out line every --every iterations."""
    import caffe
    from google.protobuf import text_format
    from models.tempregnet import net_proto, solver_proto

    if args.validation:
        train_list, test_list = validation_lists(args.data, args.fold, folder)
    else:
        train_list, test_list = fold_lists(args.data, args.fold)
    paths = {phase: folder / f"{phase}.prototxt" for phase in ("train", "deploy")}
    paths["train"].write_text(text_format.MessageToString(
        net_proto(cfg, variant, "train", str(train_list.resolve()), seed=args.seed,
                  label=contract.label)))
    paths["deploy"].write_text(text_format.MessageToString(net_proto(cfg, variant, "deploy")))
    solver = solver_proto(cfg, str(paths["train"]), None, str(folder / "snapshot"),
                          max_iter=args.iters, seed=args.seed, gpu=False)
    solver.snapshot = 0
    (folder / "solver.prototxt").write_text(text_format.MessageToString(solver))

    caffe.set_mode_cpu()
    caffe.set_random_seed(args.seed)
    sgd = caffe.get_solver(str(folder / "solver.prototxt"))
    held_out = "validation" if args.validation else "test"
    record = {"recipe": args.recipe, "variant": args.variant, "fold": args.fold,
              "held_out": held_out, "decoder": recipe.decoder, "beta": variant.beta,
              "overrides": args.set, "seed": args.seed, "every": args.every,
              "net_overrides": recipe.overrides}          # the recipe's and --set's together
    lines = resume_state(args, folder, record, sgd) if args.resume else []
    if args.weights and not lines:
        if not args.weights.is_file():
            raise InputError(args.weights, "weights file not found")
        sgd.net.copy_from(str(args.weights))        # layers are matched by name
    deploy = caffe.Net(str(paths["deploy"]), caffe.TEST)
    loaded = LoadedNet(deploy, cfg.crop, contract, {})
    rows = load_rows(test_list)
    print(f"{args.recipe} ({cfg.name}) {variant.name} (beta {variant.beta:g}) fold {args.fold}, "
          f"overrides {args.set or 'none'}: {count_lines(train_list)} training and "
          f"{len(rows['n_frames'])} {held_out} sequences, decoder {recipe.decoder}"
          + (f"; resumed at iteration {sgd.iter}" if lines else ""), flush=True)
    started = time.time() - (lines[-1]["seconds"] if lines else 0.0)
    records = []
    for done in range(sgd.iter + args.every, args.iters + 1, args.every):
        losses = []
        for _ in range(args.every):
            sgd.step(1)
            losses.append(float(sgd.net.blobs["l2_loss"].data))
        deploy.share_with(sgd.net)
        scores, records = held_out_scores(loaded, rows, recipe.decoder)
        line = {"iteration": done, "seconds": round(time.time() - started, 1),
                "train_l2": float(np.mean(losses)), **scores}
        lines.append(line)
        print(f"it {done:6d} {line['seconds']:7.0f}s train L2 {line['train_l2']:.4f} {held_out} MSE "
              f"{line['test_mse']:.4f} aFD ED {line['afd_ed']:.2f} ES {line['afd_es']:.2f} "
              f"(cyclic {line['cyclic_ed']:.2f} / {line['cyclic_es']:.2f})", flush=True)
        if args.out:        # after every line: a killed curve resumes here (--resume)
            sgd.snapshot()
            prune_snapshots(folder)
            write_json_atomic(folder / CURVE_FILE, {**record, "lines": lines, "final_records": records})
    if args.out:
        sgd.net.save(str(folder / "final.caffemodel"))
    return lines


def resume_state(args, folder: Path, record: dict, sgd) -> list[dict]:
    """The lines of the curve in --out, with the solver restored to its last line's snapshot; an
    error if there is none or it was made with other settings."""
    path = folder / CURVE_FILE
    if not path.is_file():
        raise InputError(path, "nothing to resume (no learning curve written here yet)")
    saved = json.loads(path.read_text())
    # net_overrides: so a recipe changed since the curve began is caught; curves written before
    # it was recorded are compared without it
    differs = sorted(k for k, v in record.items() if saved.get(k) != v
                     and (k != "net_overrides" or k in saved))
    if differs:
        raise InputError(path, f"a curve with other {', '.join(differs)}; use another --out")
    last = saved["lines"][-1]["iteration"]
    state = folder / f"snapshot_iter_{last}.solverstate"
    if not state.is_file():
        raise InputError(state, "the last line's solver state is missing")
    sgd.restore(str(state))
    return saved["lines"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", required=True, help="recipe to start from (recipes/<name>.toml)")
    p.add_argument("--data", type=Path, required=True, help="the recipe's prepared data folder")
    p.add_argument("--fold", default="0")
    p.add_argument("--validation", action="store_true",
                   help="score on a validation split inside the fold's training folds (the next "
                        "fold's patients), not on its test fold")
    p.add_argument("--variant", default="tempreg")
    p.add_argument("--iters", type=int, default=2000)
    p.add_argument("--every", type=int, default=250, help="iterations between evaluations")
    p.add_argument("--set", nargs="+", metavar="KEY=VALUE", default=[],
                   help="net/solver overrides on top of the recipe's (models/config.py fields)")
    p.add_argument("--beta", type=float, help="temporal loss weight of tempreg (default in models/config.py)")
    p.add_argument("--weights", type=Path, help="caffemodel to start from (layers matched by name)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="keep the nets, learning_curve.json (written after every "
                                            "line) and the newest snapshots here")
    p.add_argument("--resume", action="store_true",
                   help="continue the curve in --out from its last line (same settings)")
    args = p.parse_args(argv)
    quiet_caffe()
    try:
        if args.iters < 1 or args.every < 1 or args.every > args.iters:
            raise ValueError("need 1 <= --every <= --iters")
        if args.resume and not args.out:
            raise ValueError("--resume continues the curve in --out: give --out")
        run(args)
    except (InputError, ValueError) as err:
        print(f"learning_curve: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
