"""Reproduce the paper's Table 1 on a prepared dataset with patient-level k-fold cross-validation.

    python -m tools.table1 --data data/prepared --config small --iters 3000 --runs runs --out results

For every fold: train (or reuse a finished run of) cnn_reg, tempreg_notsc and tempreg with
tools.train.train, predict the test fold with the deploy net, run the level-set and graph-cut
baselines and the trivial reference on the same test sequences, then write <out>/table1.md,
table1.json, table1_per_sequence.csv, test_curves.png and training_curves/ (copied from the runs).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


from data_prep.errors import InputError
from data_prep.labels import DECODERS, step_positions
from tools import afd, baselines
from tools.outputs import (OutputExists, refuse_overwrite, save_figure_atomic, write_csv_atomic,
                           write_json_atomic, write_text_atomic)

NET_VARIANTS = ("cnn_reg", "tempreg_notsc", "tempreg")
SEGMENTATION = baselines.SEGMENTATION_METHODS
TRIVIAL = "trivial"
STACK = "_stack"     # suffix of a net variant decoded per cine stack (predict.decode_stacks)
METHOD_ORDER = ("level_set", "graph_cut", "cnn_reg", "tempreg_notsc", "tempreg",
                "cnn_reg" + STACK, "tempreg_notsc" + STACK, "tempreg" + STACK, TRIVIAL)
METHOD_NAMES = {
    "level_set": "Seg-based: Level set (auto-init)",
    "graph_cut": "Seg-based: Graph cut (auto-init)",
    "cnn_reg": "Reg-based: CNN + Reg",
    "tempreg_notsc": "TempReg-Net (without TSC)",
    "tempreg": "TempReg-Net",
    "cnn_reg" + STACK: "CNN + Reg, stack decoding (not the paper's)",
    "tempreg_notsc" + STACK: "TempReg-Net (without TSC), stack decoding (not the paper's)",
    "tempreg" + STACK: "TempReg-Net, stack decoding (not the paper's)",
    TRIVIAL: "Reference: ED = frame 0, ES = round(f x T)",
}
# Kong et al., MICCAI 2016, Table 1: aFD ED/ES, STD ED/ES, seconds per sequence.
PAPER = {
    "level_set": {"afd": (1.54, 1.24), "std": (1.93, 1.64), "time_s": 2.9},
    "graph_cut": {"afd": (2.27, 1.65), "std": (2.89, 1.96), "time_s": 3.5},
    "cnn_reg": {"afd": (1.30, 1.97), "std": (1.77, 2.42), "time_s": 1.5},
    "tempreg_notsc": {"afd": (0.47, 0.52), "std": (0.49, 0.53), "time_s": 1.4},
    "tempreg": {"afd": (0.38, 0.44), "std": (0.39, 0.46), "time_s": 1.4},
}
OUTPUTS = {"markdown": "table1.md", "json": "table1.json", "csv": "table1_per_sequence.csv",
           "curves": "test_curves.png"}
CSV_COLUMNS = ["method", "fold", "seq_id", "n_frames", "ed_true_0based", "ed_pred_0based",
               "es_true_0based", "es_pred_0based", "time_s"]
N_CURVE_PLOTS = 4


def discover_folds(data: Path) -> list[int]:
    """Fold numbers k with both fold<k>_train.txt and fold<k>_test.txt in the prepared folder."""
    if not (data / "sequences.h5").is_file():
        raise InputError(data, "not a prepared dataset (no sequences.h5)")
    folds = sorted(int(p.stem[4:-5]) for p in data.glob("fold*_test.txt")
                   if p.stem[4:-5].isdigit() and (data / f"fold{p.stem[4:-5]}_train.txt").is_file())
    if not folds:
        raise InputError(data, "no fold<k>_train.txt / fold<k>_test.txt split lists")
    return folds


def run_dir_for(runs: Path, config: str, variant: str, fold: int) -> Path:
    """tools.train's default run directory name, under runs/."""
    return runs / f"{config}_{variant}_fold{fold}"


def finished_run(args, variant: str, fold: int) -> Path | None:
    """The run dir of variant on fold if it finished with the same settings; an error if it
    finished with others (never silently replaced); None if it still has to be trained."""
    run_dir = run_dir_for(Path(args.runs), args.config, variant, fold)
    settings_path = run_dir / "settings.json"
    if args.retrain or not (run_dir / "final_model.txt").is_file() or not settings_path.is_file():
        return None
    s = json.loads(settings_path.read_text())
    wanted = {"config": args.config, "variant": variant, "iters": args.iters,
              "fold": str(fold), "imagenet_init": bool(args.weights),
              "net_overrides": args.net_overrides}
    s.setdefault("net_overrides", {})                   # runs made before --set existed
    differs = {k: s.get(k) for k, v in wanted.items() if s.get(k) != v}
    if differs:
        raise InputError(run_dir, f"finished run with other settings {differs}; pass --retrain "
                                  "to replace it or --runs for another folder")
    return run_dir


def train_missing(args, variants, folds) -> None:
    """Train every (variant, fold) run not finished yet, --jobs at a time (one BLAS thread each)."""
    from tools.train import train
    todo = []
    for f in folds:
        for v in variants:
            found = finished_run(args, v, f)
            if found is None:
                todo.append((v, f))
            else:
                print(f"[table1] reusing {found}", flush=True)
    if not todo:
        return
    parallel = args.jobs > 1 and len(todo) > 1
    print(f"[table1] training {len(todo)} runs ({args.config}, {args.iters} iterations each, "
          f"{args.jobs if parallel else 1} at a time)", flush=True)

    def one(job):
        variant, fold = job
        train(args.data, fold, variant=variant, config=args.config, iters=args.iters,
              weights=args.weights, out=run_dir_for(Path(args.runs), args.config, variant, fold),
              force=True, seed=args.seed, quiet=parallel, blas_threads=1 if parallel else None,
              net_overrides=args.net_overrides)
        return job

    with ThreadPoolExecutor(max_workers=args.jobs if parallel else 1) as pool:
        for done, (variant, fold) in enumerate(pool.map(one, todo), 1):
            print(f"[table1] trained {variant} on fold {fold} ({done}/{len(todo)})", flush=True)


def net_records(run_dir: Path, rows: dict, fold: int, method: str, args):
    """Per-sequence records of one trained variant on one test fold, and its net description."""
    from tools import predict
    loaded = predict.load_run(run_dir)
    records = predict.predict_rows(loaded, rows, batch=args.batch, method=args.decoder)
    for r in records:
        r.update(method=method, fold=f"fold{fold}")
    stacked = predict.decode_stacks(records, loaded.convention, args.decoder)
    for r in stacked:
        r.update(method=method + STACK)
    return records + stacked, loaded


def baseline_records(rows: dict, fold: int, method: str) -> list[dict]:
    """Segmentation baseline on the stored 20-step frames, mapped to original frames."""
    out = []
    for i, frames in enumerate(rows["frames"]):
        n = int(rows["n_frames"][i])
        tic = time.perf_counter()
        ed, es = baselines.segmentation_ed_es_on_steps(frames, n, method)
        out.append(_record(rows, i, ed, es, time.perf_counter() - tic, method, fold))
    return out


def trivial_records(rows: dict, train_rows: dict, fold: int) -> tuple[list[dict], float]:
    """ED = 0, ES = round(f T), f the median systole fraction of the fold's training sequences."""
    labelled = train_rows["ed"] >= 0
    fraction = baselines.estimate_es_fraction(train_rows["ed"][labelled],
                                              train_rows["es"][labelled],
                                              train_rows["n_frames"][labelled])
    out = []
    for i in range(len(rows["n_frames"])):
        tic = time.perf_counter()
        ed, es = baselines.trivial_ed_es(int(rows["n_frames"][i]), fraction)
        out.append(_record(rows, i, ed, es, time.perf_counter() - tic, TRIVIAL, fold))
    return out, fraction


def _record(rows, i, ed, es, seconds, method, fold) -> dict:
    return {"method": method, "fold": f"fold{fold}", "seq_id": rows["seq_id"][i],
            "n_frames": int(rows["n_frames"][i]), "ed_true": int(rows["ed"][i]),
            "es_true": int(rows["es"][i]), "ed_pred": int(ed), "es_pred": int(es),
            "time_s": float(seconds)}


def _f(x, digits=2):
    return "-" if x is None else f"{x:.{digits}f}"


def table_markdown(summaries: dict, meta: dict) -> str:
    """Table 1 layout: our aFD/STD/time per method beside the paper's, then the notes."""
    lines = ["# Table 1: ED/ES frame detection, " + meta["dataset_line"], "",
             "| method | aFD ED | aFD ES | STD ED | STD ES | time/seq (s) | paper aFD ED / ES "
             "| paper STD ED / ES | paper time (s) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for method in METHOD_ORDER:
        if method not in summaries:
            continue
        s = summaries[method]["pooled"]
        p = PAPER.get(method)
        paper = (f"{p['afd'][0]:.2f} / {p['afd'][1]:.2f} | {p['std'][0]:.2f} / {p['std'][1]:.2f} "
                 f"| {p['time_s']:.1f}") if p else "- | - | -"
        lines.append(f"| {METHOD_NAMES[method]} | {_f(s['ed']['afd'])} | {_f(s['es']['afd'])} "
                     f"| {_f(s['ed']['std'])} | {_f(s['es']['std'])} "
                     f"| {_f(s['time_per_sequence_s'], 3)} | {paper} |")
    lines += ["", "## Per fold (aFD ED / ES)", "",
              "| method | " + " | ".join(meta["folds"]) + " | pooled cyclic aFD ED / ES (not the paper's) |",
              "|---|" + "---:|" * (len(meta["folds"]) + 1)]
    for method in METHOD_ORDER:
        if method not in summaries:
            continue
        folds = summaries[method]["folds"]
        cells = [f"{_f(folds[f]['ed']['afd'])} / {_f(folds[f]['es']['afd'])}" if f in folds
                 else "-" for f in meta["folds"]]
        pooled = summaries[method]["pooled"]
        cells.append(f"{_f(pooled['ed']['cyclic_afd_not_paper'])} / "
                     f"{_f(pooled['es']['cyclic_afd_not_paper'])}")
        lines.append(f"| {METHOD_NAMES[method]} | " + " | ".join(cells) + " |")
    lines += ["", "## Notes", ""] + [f"- {note}" for note in meta["notes"]] + [""]
    return "\n".join(lines)


def plot_test_curves(net_results: dict, path, n_plots: int = N_CURVE_PLOTS) -> None:
    """Predicted step curves of each net variant against the Eq. 4 label, a few test sequences."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    variants = [v for v in NET_VARIANTS if v in net_results]
    first = []                          # round-robin over folds: a few sequences of each
    by_fold = {}
    for r in net_results[variants[0]]:
        by_fold.setdefault(r["fold"], []).append(r)
    while len(first) < n_plots and any(by_fold.values()):
        for fold in list(by_fold):
            if by_fold[fold] and len(first) < n_plots:
                first.append(by_fold[fold].pop(0))
    fig, axes = plt.subplots(1, len(first), figsize=(4.2 * len(first), 3.4), squeeze=False)
    for ax, ref in zip(axes[0], first):
        n = ref["n_frames"]
        pos = step_positions(n, len(ref["curve"]))
        ax.plot(pos, ref["label"], "k-", lw=2, label="label (Eq. 4)")
        for v in variants:
            rec = next(r for r in net_results[v] if r["seq_id"] == ref["seq_id"]
                       and r["fold"] == ref["fold"])
            ax.plot(pos, rec["curve"], ".-", label=METHOD_NAMES[v])
        ax.axvline(ref["ed_true"], color="tab:red", ls=":", label="true ED")
        ax.axvline(ref["es_true"], color="tab:green", ls=":", label="true ES")
        ax.set_title(f"{ref['fold']} {ref['seq_id']} (T = {n})", fontsize=9)
        ax.set_xlabel("original frame (0-based)")
    axes[0][0].set_ylabel("volume-like output")
    axes[0][-1].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=100)
    plt.close(fig)


def _dataset_line(data: Path) -> tuple[str, dict]:
    from data_prep.hdf5 import load_prepared
    prov = load_prepared(data).get("provenance", {})
    params = prov.get("parameters", {})
    counts = prov.get("counts", {})
    line = (f"{prov.get('source', '?')} data '{prov.get('input', data.name)}'"
            + (f", {counts.get('written')} sequences of {counts.get('patients')} patients"
               if counts else ""))
    return line, {"source": prov.get("source"), "input": prov.get("input"),
                  "stored_size": params.get("size"), "label": params.get("label"),
                  "counts": counts}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="prepared dataset folder")
    p.add_argument("--config", default="small", help="net config (models/config.py)")
    p.add_argument("--iters", type=int, required=True, help="training iterations per run")
    p.add_argument("--weights", type=Path, help="ImageNet ZF caffemodel (config zf)")
    p.add_argument("--runs", type=Path, default=Path("runs"), help="where run dirs live")
    p.add_argument("--folds", help="comma-separated fold numbers (default: all found)")
    p.add_argument("--variants", default=",".join(NET_VARIANTS),
                   help=f"net variants to include (default {','.join(NET_VARIANTS)})")
    p.add_argument("--no-baselines", action="store_true", help="skip the segmentation baselines")
    p.add_argument("--retrain", action="store_true", help="retrain even when a run is finished")
    p.add_argument("--decoder", choices=DECODERS, default="fit")
    p.add_argument("--batch", type=int, default=1, help="sequences per forward pass (timing: 1)")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="training runs side by side, one BLAS thread each (default: up to 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", nargs="+", metavar="KEY=VALUE", default=[],
                   help="net/solver overrides of the config for every run (as tools.train --set)")
    p.add_argument("--out", type=Path, default=Path("results"), help="output folder")
    p.add_argument("--force", action="store_true", help="overwrite existing results")
    return p


def main(argv=None) -> int:
    from tools import predict           # first: it quiets Caffe's log before caffe is imported
    args = build_parser().parse_args(argv)
    try:
        from tools.train import parse_net_overrides
        args.net_overrides = parse_net_overrides(args.set)
        refuse_overwrite([args.out / name for name in OUTPUTS.values()], args.force)
        variants = [v for v in args.variants.split(",") if v]
        unknown = sorted(set(variants) - set(NET_VARIANTS))
        if unknown:
            raise ValueError(f"unknown variants {unknown}; expected some of {NET_VARIANTS}")
        folds = all_folds = discover_folds(args.data)
        if args.folds:
            wanted = [int(f) for f in args.folds.split(",")]
            missing = sorted(set(wanted) - set(folds))
            if missing:
                raise InputError(args.data, f"no split lists for folds {missing}")
            folds = wanted
        dataset_line, dataset = _dataset_line(args.data)
        train_missing(args, variants, folds)
        records, nets, fractions, curves_runs = [], {}, {}, []
        for fold in folds:
            rows = predict.load_rows(args.data / f"fold{fold}_test.txt")
            if (rows["ed"] < 0).any():
                raise InputError(args.data / f"fold{fold}_test.txt", "unlabelled test sequences")
            for variant in variants:
                run_dir = run_dir_for(Path(args.runs), args.config, variant, fold)  # trained above
                recs, loaded = net_records(run_dir, rows, fold, variant, args)
                records += recs
                nets.setdefault(variant, []).append(loaded.description)
                curves_runs.append(run_dir)
            if not args.no_baselines:
                for method in SEGMENTATION:
                    print(f"[table1] {method} on fold {fold} ({len(rows['n_frames'])} sequences)",
                          flush=True)
                    records += baseline_records(rows, fold, method)
            train_rows = predict.load_rows(args.data / f"fold{fold}_train.txt")
            trivial, fractions[f"fold{fold}"] = trivial_records(rows, train_rows, fold)
            records += trivial
    except (InputError, OutputExists, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    by_method = {}
    for r in records:
        by_method.setdefault(r["method"], []).append(r)
    summaries = {m: afd.summarise(rs) for m, rs in by_method.items()}
    meta = describe(args, folds, len(all_folds), dataset_line, dataset, nets, fractions)
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / OUTPUTS["markdown"], table_markdown(summaries, meta))
    write_json_atomic(args.out / OUTPUTS["json"], {
        "meta": meta, "paper": PAPER, "summary": summaries,
        "sequences": [{k: v for k, v in r.items() if k not in ("curve", "label", "group")}
                      for r in records]})
    write_csv_atomic(args.out / OUTPUTS["csv"], [_csv_row(r) for r in records], CSV_COLUMNS)
    net_results = {v: [r for r in records if r["method"] == v] for v in variants}
    if variants:
        plot_test_curves(net_results, args.out / OUTPUTS["curves"])
    copied = copy_training_curves(curves_runs, args.out / "training_curves")
    print(table_markdown(summaries, meta))
    print(f"[table1] wrote {', '.join(str(args.out / n) for n in OUTPUTS.values() if (args.out / n).exists())}"
          f" and {len(copied)} training curve plots under {args.out / 'training_curves'}")
    return 0


def _csv_row(r: dict) -> dict:
    row = {k: r[k] for k in ("method", "fold", "seq_id", "n_frames")}
    for field in ("ed_true", "ed_pred", "es_true", "es_pred"):
        row[f"{field}_0based"] = r[field]
    row["time_s"] = f"{r['time_s']:.4f}"
    return row


def copy_training_curves(run_dirs, dest: Path) -> list[Path]:
    """Copy each run's training_curves.png to dest/<run name>.png (tools.train writes them)."""
    copied = []
    for run_dir in run_dirs:
        src = Path(run_dir) / "training_curves.png"
        if src.is_file():
            dest.mkdir(parents=True, exist_ok=True)
            target = dest / f"{Path(run_dir).name}.png"
            shutil.copyfile(src, target)
            copied.append(target)
    return copied


def describe(args, folds, n_folds, dataset_line, dataset, nets, fractions) -> dict:
    """Everything a reader needs to judge the numbers, for the JSON and the table notes."""
    from models.config import CONFIGS
    cfg = CONFIGS.get(args.config)
    first = next(iter(nets.values()), [{}])[0]
    solver_modes = sorted({d.get("solver_mode") for ds in nets.values() for d in ds
                           if d.get("solver_mode")})
    stored = dataset.get("stored_size")
    notes = [
        f"Dataset: {dataset_line}; patient-level {n_folds}-fold cross-validation, test folds "
        f"{', '.join(map(str, folds))}" + ("" if len(folds) == n_folds else " only")
        + f"; label convention '{dataset.get('label')}'.",
        f"Configuration: '{args.config}'" + (f" ({cfg.description})" if cfg else "")
        + f", {args.iters} training iterations per run, seed {args.seed}"
        + (f", overrides {', '.join(f'{k}={v}' for k, v in args.net_overrides.items())}"
           if args.net_overrides else "") + ".",
        f"Input: stored frames {stored} x {stored} px, 20 steps per cycle; net input "
        f"{first.get('crop')} x {first.get('crop')} (centre crop at test time).",
        "ImageNet weights: " + (f"yes ({args.weights.name})" if args.weights else
                                "no (trained from scratch)") + ".",
        f"Hardware: training on {', '.join(solver_modes) or '?'}; evaluation with pycaffe on "
        f"{first.get('mode', 'cpu').upper()}, batch {args.batch}.",
        f"Decoder: '{args.decoder}' (data_prep.labels.decode_steps), ED/ES in original frames.",
        "aFD = Eq. 5, mean |predicted - true| in original frames, pooled over all test "
        "sequences of all folds; STD = population standard deviation of the same absolute "
        "differences (the paper does not say which).",
        "Time per sequence: wall time of preprocessing the stored frames, the forward pass and "
        "decoding (nets), or segmenting all steps (baselines), one sequence at a time on this "
        "machine; the paper's are on its own hardware with 256 x 256 frames.",
        "Segmentation baselines run unattended, not user-initialised as in the paper: the LV seed "
        "and radius are found automatically (round, moving, central bright region of the "
        "minimum-over-time image; see tools/baselines.py). They segment the stored uint8 frames "
        "(20 steps, the nets' input) and their area curve is mapped back to the original frames "
        "by the same cyclic interpolation before taking the largest / smallest area.",
        "Reference: ED = frame 0, ES = round(f x T), f = median systole fraction "
        "((ES - ED) mod T) / T of the fold's training sequences: "
        + ", ".join(f"{k} {v:.3f}" for k, v in fractions.items()) + ".",
    ]
    return {"dataset_line": dataset_line, "dataset": dataset, "folds": [f"fold{f}" for f in folds],
            "config": args.config, "iters": args.iters, "net_overrides": args.net_overrides,
            "imagenet_weights": bool(args.weights), "decoder": args.decoder,
            "batch": args.batch, "nets": nets, "es_fractions": fractions, "notes": notes}


if __name__ == "__main__":
    sys.exit(main())
