"""Train one variant of a recipe on one fold with `caffe train`, keeping a self-describing run folder.

    python -m tools.train --recipe demo --data data/prepared/demo --fold 0 --variant tempreg
    python -m tools.train --recipe paper_zf --data data/prepared/paper_zf --fold all \\
        --weights data/imagenet/ZF.v2.caffemodel

The run folder (tempregnet.runs) keeps settings.json, contract.json, the train/test/deploy
prototxts and the solver used, train.log, snapshots/, final_model.txt and training_curves.png.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_prep.errors import InputError
from models.config import VARIANTS
from tempregnet.recipes import load_recipe, recipe_names
from tempregnet.training import default_run_dir, finished_run, train


def main(argv=None) -> int:
    """CLI of `train`; bad input gives one line on stderr and exit status 1."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", help=f"recipe name ({', '.join(recipe_names())}) or a .toml file")
    parser.add_argument("--data", type=Path, help="prepared data folder (sequences.h5 and split lists)")
    parser.add_argument("--fold", default="0", help="fold number, or 'all' to train on all.txt")
    parser.add_argument("--variant", default="tempreg", choices=sorted(VARIANTS))
    parser.add_argument("--iters", type=int, help="training iterations (default: the recipe's)")
    init = parser.add_mutually_exclusive_group()
    init.add_argument("--weights", type=Path, help="ImageNet ZF caffemodel (recipes with imagenet_weights)")
    init.add_argument("--no-weights", action="store_true",
                      help="train an imagenet_weights recipe from the fillers (not the paper's)")
    parser.add_argument("--seed", type=int, help="solver and data-layer seed (default: the recipe's)")
    parser.add_argument("--out", type=Path, help="run folder (default runs/<recipe>_<variant>_fold<k>)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest .solverstate in --out")
    parser.add_argument("--force", action="store_true", help="delete an existing run folder and start over")
    parser.add_argument("--reuse", action="store_true",
                        help="do nothing if --out holds a finished run of the same settings")
    args = parser.parse_args(argv)
    try:
        if args.resume:
            if args.out is None:
                raise ValueError("--resume needs --out (the run folder)")
            train(None, None, None, out=args.out, resume=True, iters=args.iters)
            return 0
        if args.recipe is None or args.data is None:
            raise ValueError("--recipe and --data are required")
        recipe = load_recipe(args.recipe)
        if recipe.imagenet_weights and not (args.weights or args.no_weights):
            raise ValueError(f"recipe {recipe.name} needs --weights ZF.v2.caffemodel (the paper) "
                             "or --no-weights")
        out = args.out or default_run_dir(recipe.name, args.variant, args.fold)
        if args.reuse and finished_run(out, recipe, args.variant, args.fold,
                                       args.iters or recipe.iterations, bool(args.weights)):
            print(f"train: {out} holds this finished run; reusing it")
            return 0
        train(recipe, args.data, args.fold, args.variant, args.iters, args.weights, out,
              force=args.force, seed=args.seed)
    except (InputError, ValueError, RuntimeError) as err:
        print(f"train: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
