"""Reproduce the paper's Table 1 for a recipe on its prepared data (patient-level k-fold CV).

    python -m tools.table1 --recipe demo --data data/prepared/demo --runs runs/demo --out results/demo
    python -m tools.table1 --recipe acdc --data data/prepared/acdc --runs runs/acdc --out results/acdc

For every fold: train (or reuse a finished run of) the recipe's variants, predict the test fold,
run the level-set and graph-cut baselines and the trivial reference on the same sequences, then
write <out>/table1.md, table1.json, table1_per_sequence.csv, test_curves.png and training_curves/.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from data_prep.errors import InputError
from tempregnet.inference import quiet_caffe
from tempregnet.outputs import OutputExists
from tempregnet.recipes import load_recipe, recipe_names
from tempregnet.table1 import NET_VARIANTS, Table1Job, run_table1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", required=True, help=f"recipe ({', '.join(recipe_names())}) or a .toml file")
    p.add_argument("--data", type=Path, required=True, help="the recipe's prepared dataset folder")
    p.add_argument("--iters", type=int, help="training iterations per run (default: the recipe's)")
    p.add_argument("--weights", type=Path, help="ImageNet ZF caffemodel (recipes with imagenet_weights)")
    p.add_argument("--runs", type=Path, default=Path("runs"), help="where run folders live")
    p.add_argument("--folds", help="comma-separated fold numbers (default: all found)")
    p.add_argument("--variants", help=f"net variants to include (default: the recipe's; some of "
                                      f"{','.join(NET_VARIANTS)})")
    p.add_argument("--no-baselines", action="store_true", help="skip the segmentation baselines")
    p.add_argument("--retrain", action="store_true", help="retrain even when a run is finished")
    p.add_argument("--batch", type=int, default=1, help="sequences per forward pass (timing: 1)")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="training runs side by side, one BLAS thread each (default: up to 2)")
    p.add_argument("--seed", type=int, help="training seed (default: the recipe's)")
    p.add_argument("--out", type=Path, default=Path("results"), help="output folder")
    p.add_argument("--force", action="store_true", help="overwrite existing results")
    return p


def main(argv=None) -> int:
    quiet_caffe()
    args = build_parser().parse_args(argv)
    try:
        recipe = load_recipe(args.recipe)
        if recipe.imagenet_weights and not args.weights:
            raise ValueError(f"recipe {recipe.name} fine-tunes ImageNet ZF: give --weights")
        job = Table1Job(recipe=recipe, data=args.data, runs=args.runs, out=args.out,
                        iters=args.iters or recipe.iterations,
                        seed=recipe.seed if args.seed is None else args.seed, weights=args.weights,
                        folds=[int(f) for f in args.folds.split(",")] if args.folds else None,
                        variants=tuple(v for v in (args.variants or "").split(",") if v),
                        baselines=not args.no_baselines, retrain=args.retrain, batch=args.batch,
                        jobs=args.jobs, force=args.force)
        run_table1(job)
    except (InputError, OutputExists, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
