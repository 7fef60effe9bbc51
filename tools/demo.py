"""`make demo`: recipe demo end to end: synthetic cohort -> prepared HDF5 -> Table 1 (4-fold CV) -> results/.

The embedded default the project runs with no data at hand. The cohort and the prepared data are
reused when they are the recipe's (the cohort is keyed by its size and seed, the prepared data's
sequence contract must equal the recipe's); finished training runs are reused when their settings
match. Results always go to a new `results/demo-<time>/`, with `results/latest` pointing at it.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from data_prep import prepare, synthetic
from data_prep.errors import InputError
from tempregnet.inference import quiet_caffe
from tempregnet.outputs import OutputExists
from tempregnet.recipes import load_recipe
from tempregnet.table1 import Table1Job, run_table1
from tempregnet.training import check_data

RECIPE = "demo"


def banner(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.demo", description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default=RECIPE, help="a recipe with a synthetic data source")
    p.add_argument("--iters", type=int, help="iterations per training run (default: the recipe's)")
    p.add_argument("--cohorts", type=Path, default=Path("data/cohorts"), help="synthetic cohorts")
    p.add_argument("--prepared", type=Path, default=Path("data/prepared"), help="prepared data")
    p.add_argument("--runs", type=Path, default=Path("runs/demo"), help="training runs")
    p.add_argument("--results", type=Path, default=Path("results"))
    p.add_argument("--seed", type=int,
                   help="training seed (default: the recipe's; another seed's runs go to <runs>-seed<N>, "
                        "the cohort and the prepared data stay the recipe's): the spread of one draw")
    return p


def main(argv=None) -> int:
    quiet_caffe()
    args = build_parser().parse_args(argv)
    started = time.time()
    try:
        recipe = load_recipe(args.recipe)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    spec, contract = recipe.data, recipe.contract()
    if spec.source != "synthetic":
        print(f"error: recipe {recipe.name} does not use the synthetic cohort", file=sys.stderr)
        return 2
    cohort = args.cohorts / f"synthetic-p{spec.patients}-s{spec.seed}"
    prepared = args.prepared / recipe.name

    banner(f"1/3 synthetic cine MRI cohort: {spec.patients} patients (seed {spec.seed}) -> {cohort}")
    if (cohort / "truth.json").is_file():
        print("reusing the cohort already there")
    else:
        code = synthetic.main([str(cohort), "--patients", str(spec.patients),
                               "--seed", str(spec.seed), "--format", "dicom"])
        if code:
            return code

    banner(f"2/3 prepare DICOM -> HDF5 at {contract.stored_size} px, central {contract.roi:g} of "
           f"the field of view -> {prepared}")
    if (prepared / "sequences.h5").is_file():
        print("reusing the prepared data already there")
    else:
        code = prepare.main(["--recipe", recipe.name, str(cohort), str(prepared)])
        if code:
            return code

    out = args.results / time.strftime("demo-%Y%m%d-%H%M%S")
    iters = args.iters or recipe.iterations
    seed = recipe.seed if args.seed is None else args.seed
    runs = args.runs if seed == recipe.seed else args.runs.with_name(f"{args.runs.name}-seed{seed}")
    banner(f"3/3 Table 1: train {', '.join(recipe.variants)} on 4 folds (recipe {recipe.name}, "
           f"{iters} iterations each, seed {seed}), baselines, evaluation -> {out}")
    try:
        check_data(recipe, prepared)
        run_table1(Table1Job(recipe=recipe, data=prepared, runs=runs, out=out, iters=iters,
                             seed=seed, jobs=min(2, os.cpu_count() or 1)))
    except (InputError, OutputExists, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    latest = args.results / "latest"
    if latest.is_symlink() or not latest.exists():
        latest.unlink(missing_ok=True)
        latest.symlink_to(out.name)

    banner(f"Table 1 on the synthetic cohort (recipe {recipe.name})")
    print((out / "table1.md").read_text())
    print(f"results: {out}/ (table1.md, table1.json, table1_per_sequence.csv, test_curves.png, "
          f"training_curves/); also {latest}")
    print(f"demo took {(time.time() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
