"""Choose how a model's curves are read (decoder, stack weighting, test-time views, how many
models' curves are averaged, the systole prior's weight) on validation splits, then report the
choice on the test folds.

    python -m tools.decoding_study --data data/prepared/acdc_mm \\
        --validation V0 V1 V2 V3 --test R0 R1 R2 R3 --out results/decoding-acdc_mm

V<f>: a `tools.learning_curve --validation --out` folder of fold f (its final.caffemodel was
trained on fold f's training folds less fold f+1's patients; it is scored on those patients,
its fold<f>_validation.txt). R<f>: a `tools.train` run of fold f, scored on fold<f>_test.txt.
Several models per fold (other seeds) are given as comma-separated folders: their curves are
averaged (each model's curve standardised first). Every candidate is scored on the validation
predictions; the one with the least ES aFD per stack (then ES per sequence, then ED per stack by
Eq. 5, then the simplest) is chosen there and only then read on the test folds. Nothing here is
fitted to the test folds: the test table is reported, not used. The nets' curves are kept in
curves.json, so a rerun with other candidates (and --force) needs no forward pass.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

from data_prep.errors import InputError
from data_prep.hdf5 import load_rows
from tempregnet import evaluation as afd
from tempregnet.contract import read_list_contract
from tempregnet.decoding import KEYS, STACK_WEIGHTS, VIEWS, Decoding
from tempregnet.inference import (LoadedNet, decode_stacks, load_model, load_net,
                                  predict_rows, quiet_caffe, standardised)
from tempregnet.baselines import LABEL_KEYS, rows_es_fraction
from tempregnet.labels import DECODERS, SystolePrior, decode_detail
from tempregnet.outputs import OutputExists, refuse_overwrite, write_json_atomic, write_text_atomic
from tempregnet.recipes import load_recipe
from tempregnet.runs import training_symmetries

CURVES_FILE, STUDY_FILE = "curves.json", "decoding_study.json"


def validation_net(folder: Path, fold: int) -> tuple[LoadedNet, Path]:
    """The final net of a learning-curve folder and the validation list it was scored on."""
    curve = json.loads((folder / "learning_curve.json").read_text())
    recipe = load_recipe(curve["recipe"])
    listing = folder / f"fold{fold}_validation.txt"
    if curve.get("held_out") != "validation" or str(curve.get("fold")) != str(fold):
        raise InputError(folder, f"not a --validation learning curve of fold {fold}")
    desc = {"recipe": recipe.name, "decoder": recipe.decoder,
            **training_symmetries({"config": recipe.config, "overrides": recipe.overrides})}
    return load_net(folder / "deploy.prototxt", folder / "final.caffemodel",
                    read_list_contract(listing), description=desc), listing


def collect(kind: str, folders: list[str], data: Path) -> list[dict]:
    """Per-sequence records of every fold, with each model's curve, one view and TTA."""
    records = []
    for fold, group in enumerate(folders):
        per_model = []
        for folder in group.split(","):
            if kind == "validation":
                loaded, listing = validation_net(Path(folder), fold)
                trained_on = Path(folder) / f"fold{fold}_fit.txt"
            else:
                loaded, listing = load_model(folder), data / f"fold{fold}_test.txt"
                trained_on = data / f"fold{fold}_train.txt"
            fraction = rows_es_fraction(load_rows(trained_on, LABEL_KEYS))
            rows = load_rows(listing)
            one = predict_rows(loaded, rows, batch=8, method="fit")
            tta = predict_rows(loaded, rows, batch=8, method="fit", augment=True)
            per_model.append((one, tta))
        for i, rec in enumerate(per_model[0][0]):
            records.append({k: rec[k] for k in ("seq_id", "n_frames", "ed_true", "es_true", "group")}
                           | {"fold": f"fold{fold}", "systole_fraction": fraction,
                              "one": [m[0][i]["curve"] for m in per_model],
                              "tta": [m[1][i]["curve"] for m in per_model]})
    return records


def candidates(decoders, several_models: bool, priors) -> list[dict]:
    """Every combination considered: decoder x views x models averaged (the first model of each
    fold, or all of them where several were given) x stack weighting x systole prior weight."""
    models = ("first", "all") if several_models else ("first",)
    return [{"decoder": d, "views": v, "models": m, "stack_weights": w, "es_prior": p}
            for d, v, m, w, p in itertools.product(decoders, VIEWS, models, STACK_WEIGHTS, priors)]


def score(records: list[dict], cand: dict, convention: str) -> dict:
    """Pooled aFD ED / ES (and cyclic) per sequence and per stack for one candidate."""
    decoded, priors = [], []
    for rec in records:
        curves = rec[cand["views"]] if cand["models"] == "all" else rec[cand["views"]][:1]
        curve = standardised(np.array(curves)).mean(axis=0)
        prior = SystolePrior(rec["systole_fraction"], cand["es_prior"]) if cand["es_prior"] else None
        priors.append(prior)
        d = decode_detail(curve, rec["n_frames"], convention, cand["decoder"], prior=prior)
        decoded.append({**rec, "curve": curve.tolist(), "ed_pred": d.ed, "es_pred": d.es,
                        "confidence": d.confidence, "time_s": 0.0})
    stacked = []                 # per fold: one model per fold, so one prior per fold
    for fold in sorted({r["fold"] for r in decoded}):
        idx = [i for i, r in enumerate(decoded) if r["fold"] == fold]
        stacked += decode_stacks([decoded[i] for i in idx], convention, cand["decoder"],
                                 weights=cand["stack_weights"], prior=priors[idx[0]])
    out = {}
    for level, recs in (("sequence", decoded), ("stack", stacked)):
        pooled = afd.summarise(recs)[afd.POOLED]
        out[level] = {p: {"afd": pooled[p]["afd"], "cyclic": pooled[p]["cyclic_afd_not_paper"]}
                      for p in afd.PHASES}
    return out


def simplicity(cand: dict) -> tuple:
    """Ties go to the cheaper, plainer candidate."""
    return (cand["models"] == "all", cand["views"] == "tta", cand["stack_weights"] != "equal",
            cand["es_prior"])


def table(rows: list[tuple[dict, dict]], chosen: dict | None = None) -> str:
    head = ("| decoder | views | models | stack weights | systole prior | ED / ES per sequence | "
            "cyclic | ED / ES per stack | cyclic |\n|---|---|---|---|---:|---:|---:|---:|---:|\n")
    lines = []
    for cand, s in rows:
        mark = " (chosen)" if cand == chosen else ""
        cells = []
        for level in ("sequence", "stack"):
            cells.append(f"{s[level]['ed']['afd']:.2f} / {s[level]['es']['afd']:.2f}")
            cells.append(f"{s[level]['ed']['cyclic']:.2f} / {s[level]['es']['cyclic']:.2f}")
        lines.append(f"| {cand['decoder']}{mark} | {cand['views']} | {cand['models']} | "
                     f"{cand['stack_weights']} | {cand['es_prior']:g} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def recipe_text(chosen: dict) -> str:
    """The chosen decoding as the lines a recipe takes (averaging several models per fold is
    not a recipe's: it is said, not written as a key)."""
    lines = Decoding(**{k: chosen[k] for k in KEYS}).recipe_lines()
    if chosen["models"] == "all":
        lines += "# and the curves of every model given per fold averaged (not a recipe key)\n"
    return f"```toml\n{lines}```\n"


def run(args) -> dict:
    refuse_overwrite([args.out / STUDY_FILE], args.force)
    cache = args.out / CURVES_FILE
    sources = {"validation": args.validation, "test": args.test}
    if cache.is_file():
        curves = json.loads(cache.read_text())
        if curves.get("sources") != sources:
            raise InputError(cache, "holds the curves of other nets; give another --out")
    else:
        curves = {"sources": sources,
                  "validation": collect("validation", args.validation, args.data),
                  "test": collect("test", args.test, args.data)}
        write_json_atomic(cache, curves)
    convention = read_list_contract(args.data / "fold0_test.txt").label
    several = any(len(r["one"]) > 1 for r in curves["validation"] + curves["test"])
    cands = candidates(args.decoders, several, args.es_priors)
    val = [(c, score(curves["validation"], c, convention)) for c in cands]
    chosen = min(val, key=lambda cs: (round(cs[1]["stack"]["es"]["afd"], 6),
                                      round(cs[1]["sequence"]["es"]["afd"], 6),
                                      round(cs[1]["stack"]["ed"]["afd"], 6),
                                      simplicity(cs[0])))[0]
    test = [(c, score(curves["test"], c, convention)) for c in cands]
    result = {"chosen": chosen, "validation": val, "test": test,
              "n_validation": len(curves["validation"]), "n_test": len(curves["test"])}
    write_json_atomic(args.out / STUDY_FILE, result)
    text = (f"# Decoding chosen on validation ({result['n_validation']} sequences), "
            f"read on the test folds ({result['n_test']})\n\n"
            f"## Validation (choice: least ES aFD per stack, then per sequence, then ED)\n\n"
            f"{table(val, chosen)}\n"
            f"## Test folds (reported, not used)\n\n{table(test, chosen)}\n"
            f"## The choice as recipe lines\n\n{recipe_text(chosen)}")
    write_text_atomic(args.out / "decoding_study.md", text)
    print(text)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="the prepared data of the runs")
    p.add_argument("--validation", nargs="+", required=True, metavar="FOLDER[,FOLDER...]",
                   help="learning-curve folders (--validation), fold 0, 1, ... in order")
    p.add_argument("--test", nargs="+", required=True, metavar="RUN[,RUN...]",
                   help="tools.train runs, fold 0, 1, ... in order")
    p.add_argument("--decoders", nargs="+", choices=DECODERS,
                   default=["fit_rwave", "fit_trigger", "rwave_ed"])
    p.add_argument("--es-priors", nargs="+", type=float, default=[0.0, 1.0, 2.0, 4.0, 8.0],
                   help="systole prior weights to try (0: none; labels.SystolePrior, its fraction "
                        "the median of each model's training sequences)")
    p.add_argument("--out", type=Path, required=True,
                   help="curves.json (kept: a rerun with other candidates reads it), "
                        "decoding_study.md and .json")
    p.add_argument("--force", action="store_true", help="replace an earlier study's tables in --out")
    args = p.parse_args(argv)
    if len(args.validation) != len(args.test):
        print("decoding_study: give one --validation and one --test entry per fold", file=sys.stderr)
        return 1
    quiet_caffe()
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        run(args)
    except (InputError, OutputExists) as err:
        print(f"decoding_study: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
