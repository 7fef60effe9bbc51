"""Table 1 of the paper on a prepared dataset, for one recipe, with patient-level k-fold cross-validation.

For every fold: train (or reuse a finished run of) the recipe's variants with
tempregnet.training.train, predict the test fold with the deploy net, run the level-set and
graph-cut baselines and the trivial reference on the same test sequences, then write
<out>/table1.md, table1.json, table1_per_sequence.csv, test_curves.png and training_curves/.
"""
from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from data_prep.errors import InputError
from data_prep.hdf5 import load_provenance, load_rows
from tempregnet import baselines, evaluation as afd, runs
from tempregnet.contract import read_contract
from tempregnet.inference import decode_stacks, load_model, predict_rows
from tempregnet.labels import step_positions
from tempregnet.model_spec import prior_of
from tempregnet.outputs import (refuse_overwrite, save_figure_atomic, write_csv_atomic,
                                write_json_atomic, write_text_atomic)
from tempregnet.recipes import Recipe
from tempregnet.training import check_data, finished_run, resumable_run, train

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


@dataclass
class Table1Job:
    """What one Table 1 needs: the recipe, its prepared data, where runs and results go."""
    recipe: Recipe
    data: Path
    runs: Path
    out: Path
    iters: int                    # per training run (the recipe's unless overridden)
    seed: int
    weights: Path | None = None   # ImageNet ZF caffemodel (recipes with imagenet_weights)
    folds: list | None = None     # test folds (default: every fold found)
    variants: tuple = ()          # default: the recipe's
    baselines: bool = True
    retrain: bool = False
    batch: int = 1                # sequences per forward pass (timing: 1)
    jobs: int = 1                 # training runs side by side, one BLAS thread each
    force: bool = False


def run_dir_for(runs: Path, recipe: str, variant: str, fold: int) -> Path:
    """tools.train's default run folder name, under runs/."""
    return runs / f"{recipe}_{variant}_fold{fold}"


def train_missing(job: Table1Job, variants, folds) -> None:
    """Train every (variant, fold) run not finished yet, job.jobs at a time (one BLAS thread each)."""
    todo = []
    for f in folds:
        for v in variants:
            run_dir = run_dir_for(job.runs, job.recipe.name, v, f)
            if not job.retrain and finished_run(run_dir, job.recipe, v, f, job.iters, bool(job.weights)):
                print(f"[table1] reusing {run_dir}", flush=True)
            else:
                resume = not job.retrain and resumable_run(run_dir, job.recipe, v, f, job.iters,
                                                           bool(job.weights))
                if resume:
                    print(f"[table1] resuming {run_dir} from {runs.newest_solverstate(run_dir).name}",
                          flush=True)
                todo.append((v, f, resume))
    if not todo:
        return
    parallel = job.jobs > 1 and len(todo) > 1
    print(f"[table1] training {len(todo)} runs (recipe {job.recipe.name}, {job.iters} iterations "
          f"each, {job.jobs if parallel else 1} at a time)", flush=True)

    def one(item):
        variant, fold, resume = item
        train(job.recipe, job.data, fold, variant=variant, iters=job.iters, weights=job.weights,
              out=run_dir_for(job.runs, job.recipe.name, variant, fold), resume=resume,
              force=not resume, seed=job.seed, quiet=parallel,
              blas_threads=1 if parallel else None)
        return variant, fold

    with ThreadPoolExecutor(max_workers=job.jobs if parallel else 1) as pool:
        for done, (variant, fold) in enumerate(pool.map(one, todo), 1):
            print(f"[table1] trained {variant} on fold {fold} ({done}/{len(todo)})", flush=True)


def net_records(run_dir: Path, rows: dict, fold: int, method: str, job: Table1Job):
    """Per-sequence records of one trained variant on one test fold, and its net description."""
    loaded = load_model(run_dir)
    decoding = job.recipe.decoding()
    prior = prior_of(loaded, decoding.es_prior)
    records = predict_rows(loaded, rows, batch=job.batch, method=decoding.decoder,
                           augment=decoding.augment, prior=prior)
    for r in records:
        r.update(method=method, fold=f"fold{fold}")
    stacked = decode_stacks(records, loaded.contract.label, decoding.decoder,
                            weights=decoding.stack_weights, prior=prior)
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
    fraction = baselines.rows_es_fraction(train_rows)
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
    prov = load_provenance(data)
    contract = read_contract(data)
    counts = prov.get("counts", {})
    line = (f"{prov.get('source', '?')} data '{prov.get('input', data.name)}'"
            + (f", {counts.get('written')} sequences of {counts.get('patients')} patients"
               if counts else ""))
    return line, {"source": prov.get("source"), "input": prov.get("input"),
                  "contract": contract.to_dict(), "counts": counts}


def run_table1(job: Table1Job) -> dict:
    """Train what is missing, evaluate every method on every test fold, write the outputs;
    returns the summaries. Raises InputError / OutputExists / ValueError / RuntimeError."""
    refuse_overwrite([job.out / name for name in OUTPUTS.values()], job.force)
    variants = list(job.variants or job.recipe.variants)
    unknown = sorted(set(variants) - set(NET_VARIANTS))
    if unknown:
        raise ValueError(f"unknown variants {unknown}; expected some of {NET_VARIANTS}")
    if job.recipe.folds != "cv":
        raise ValueError(f"recipe {job.recipe.name} trains on all its data (folds = "
                         f"{job.recipe.folds!r}): no Table 1 cross-validation")
    folds = all_folds = discover_folds(job.data)
    if job.folds:
        missing = sorted(set(job.folds) - set(folds))
        if missing:
            raise InputError(job.data, f"no split lists for folds {missing}")
        folds = list(job.folds)
    check_data(job.recipe, job.data)
    dataset_line, dataset = _dataset_line(job.data)
    train_missing(job, variants, folds)
    records, nets, fractions, curves_runs = [], {}, {}, []
    for fold in folds:
        rows = load_rows(job.data / f"fold{fold}_test.txt")
        if (rows["ed"] < 0).any():
            raise InputError(job.data / f"fold{fold}_test.txt", "unlabelled test sequences")
        for variant in variants:
            run_dir = run_dir_for(job.runs, job.recipe.name, variant, fold)  # trained above
            recs, loaded = net_records(run_dir, rows, fold, variant, job)
            records += recs
            nets.setdefault(variant, []).append(loaded.description)
            curves_runs.append(run_dir)
        if job.baselines:
            for method in SEGMENTATION:
                print(f"[table1] {method} on fold {fold} ({len(rows['n_frames'])} sequences)",
                      flush=True)
                records += baseline_records(rows, fold, method)
        train_rows = load_rows(job.data / f"fold{fold}_train.txt")
        trivial, fractions[f"fold{fold}"] = trivial_records(rows, train_rows, fold)
        records += trivial

    by_method = {}
    for r in records:
        by_method.setdefault(r["method"], []).append(r)
    summaries = {m: afd.summarise(rs) for m, rs in by_method.items()}
    meta = describe(job, folds, len(all_folds), dataset_line, dataset, nets, fractions)
    job.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(job.out / OUTPUTS["markdown"], table_markdown(summaries, meta))
    write_json_atomic(job.out / OUTPUTS["json"], {
        "meta": meta, "paper": PAPER, "summary": summaries,
        "sequences": [{k: v for k, v in r.items() if k not in ("curve", "label", "group")}
                      for r in records]})
    write_csv_atomic(job.out / OUTPUTS["csv"], [_csv_row(r) for r in records], CSV_COLUMNS)
    net_results = {v: [r for r in records if r["method"] == v] for v in variants}
    if variants:
        plot_test_curves(net_results, job.out / OUTPUTS["curves"])
    copied = copy_training_curves(curves_runs, job.out / "training_curves")
    print(table_markdown(summaries, meta))
    print(f"[table1] wrote {', '.join(str(job.out / n) for n in OUTPUTS.values() if (job.out / n).exists())}"
          f" and {len(copied)} training curve plots under {job.out / 'training_curves'}")
    return summaries


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


def describe(job: Table1Job, folds, n_folds, dataset_line, dataset, nets, fractions) -> dict:
    """Everything a reader needs to judge the numbers, for the JSON and the table notes."""
    recipe = job.recipe
    cfg = recipe.net_config()
    contract = dataset["contract"]
    first = next(iter(nets.values()), [{}])[0]
    solver_modes = sorted({d.get("solver_mode") for ds in nets.values() for d in ds
                           if d.get("solver_mode")})
    stored = contract["stored_size"]
    notes = [
        f"Dataset: {dataset_line}; patient-level {n_folds}-fold cross-validation, test folds "
        f"{', '.join(map(str, folds))}" + ("" if len(folds) == n_folds else " only")
        + f"; label convention '{contract['label']}'.",
        f"Recipe: '{recipe.name}' (recipes/{recipe.name}.toml, nets in prototxt/{recipe.name}/): "
        f"{recipe.description}; configuration '{recipe.config}' ({cfg.description}), "
        f"{job.iters} training iterations per run, seed {job.seed}"
        + (f", overrides {', '.join(f'{k}={v}' for k, v in recipe.overrides.items())}"
           if recipe.overrides else "") + ".",
        f"Input: stored frames {stored} x {stored} px, {contract['steps']} steps per cycle; net "
        f"input {first.get('crop')} x {first.get('crop')} (centre crop at test time).",
        "ImageNet weights: " + (f"yes ({job.weights.name})" if job.weights else
                                "no (trained from scratch)") + ".",
        f"Hardware: training on {', '.join(solver_modes) or '?'}; evaluation with pycaffe on "
        f"{first.get('mode', 'cpu').upper()}, batch {job.batch}.",
        f"Decoder: '{recipe.decoder}' (tempregnet.labels.decode_steps), ED/ES in original frames"
        + recipe.decoding().note() + ".",
        "aFD = Eq. 5, mean |predicted - true| in original frames, pooled over all test "
        "sequences of all folds; STD = population standard deviation of the same absolute "
        "differences (the paper does not say which).",
        "Time per sequence: wall time of preprocessing the stored frames, the forward pass and "
        "decoding (nets), or segmenting all steps (baselines), one sequence at a time on this "
        "machine; the paper's are on its own hardware with 256 x 256 frames.",
        "Segmentation baselines run unattended, not user-initialised as in the paper: the LV seed "
        "and radius are found automatically (round, moving, central bright region of the "
        "minimum-over-time image; see tempregnet/baselines.py). They segment the stored uint8 "
        f"frames ({contract['steps']} steps, the nets' input) and their area curve is mapped back "
        "to the original frames by the same cyclic interpolation before taking the largest / "
        "smallest area.",
        "Reference: ED = frame 0, ES = round(f x T), f = median systole fraction "
        "((ES - ED) mod T) / T of the fold's training sequences: "
        + ", ".join(f"{k} {v:.3f}" for k, v in fractions.items()) + ".",
    ]
    return {"dataset_line": dataset_line, "dataset": dataset, "folds": [f"fold{f}" for f in folds],
            "recipe": recipe.to_dict(), "iters": job.iters,
            "imagenet_weights": bool(job.weights), **recipe.decoding().describe(),
            "batch": job.batch, "nets": nets, "es_fractions": fractions, "notes": notes}
