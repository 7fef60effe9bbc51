"""aFD / STD of ED and ES per fold and pooled, from a predictions file or by running a trained net.

    python -m tools.evaluate_afd --predictions preds.csv --out results/eval
    python -m tools.evaluate_afd --run runs/demo_tempreg_fold0 --list data/prepared/demo/fold0_test.txt \
        --run runs/demo_tempreg_fold1 --list data/prepared/demo/fold1_test.txt ... --out results/eval
    python -m tools.evaluate_afd --model m.caffemodel --deploy deploy.prototxt --label cycle \
        --data data/prepared --list fold0_test.txt --out results/eval

Writes <out>/afd.md, afd.json and afd_per_sequence.csv (frames 0-based, original numbering), and
where every sequence has a confidence (nets always give one) confidence.md / .json / .png: error
against confidence decile (tempregnet.calibration).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from data_prep.errors import InputError
from data_prep.hdf5 import load_rows
from tempregnet import calibration
from tempregnet import evaluation as afd
from tempregnet.contract import read_list_contract
from tempregnet.labels import written_confidence
from tempregnet.inference import (check_rows, decode_stacks, load_model, load_net, predict_rows,
                                  quiet_caffe)
from tempregnet.labels import CONVENTIONS
from tempregnet.model_spec import TTA_TEXT, add_decoding_arguments, decoding_from_args, prior_of
from tempregnet.outputs import (OutputExists, refuse_overwrite, write_csv_atomic, write_json_atomic,
                                write_text_atomic)

OUTPUT_NAMES = {"markdown": "afd.md", "json": "afd.json", "csv": "afd_per_sequence.csv"}
# written when every sequence has a confidence (tempregnet.calibration)
CONFIDENCE_NAMES = {"markdown": "confidence.md", "json": "confidence.json",
                    "plot": "confidence.png"}
PER_SEQUENCE_COLUMNS = ["seq_id", "fold", "n_frames", "ed_true_0based", "ed_pred_0based",
                        "es_true_0based", "es_pred_0based", "ed_abs_diff", "es_abs_diff",
                        "confidence", "time_s"]
FIELDS = ("ed_true", "es_true", "ed_pred", "es_pred")


def fold_name(list_file) -> str:
    """'fold2_test.txt' -> 'fold2'; any other list file -> its stem."""
    stem = Path(list_file).stem
    return stem[: -len("_test")] if stem.endswith("_test") else stem


def _to_int(value, path, what) -> int:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise InputError(path, f"{what}: {value!r} is not a frame number") from None
    if f != int(f):
        raise InputError(path, f"{what}: {value!r} is not a whole frame number")
    return int(f)


def normalise_prediction(raw: dict, path, index: int) -> dict:
    """One prediction row -> a record with 0-based ed/es fields (accepts *_0based / *_1based)."""
    rec = {"seq_id": str(raw.get("seq_id", f"seq{index}")), "fold": str(raw.get("fold") or "all")}
    rec["n_frames"] = _to_int(raw.get("n_frames"), path, f"row {index} n_frames")
    for field in FIELDS:
        if raw.get(field) not in (None, ""):
            rec[field] = _to_int(raw[field], path, f"row {index} {field}")
        elif raw.get(f"{field}_0based") not in (None, ""):
            rec[field] = _to_int(raw[f"{field}_0based"], path, f"row {index} {field}_0based")
        elif raw.get(f"{field}_1based") not in (None, ""):
            rec[field] = _to_int(raw[f"{field}_1based"], path, f"row {index} {field}_1based") - 1
        else:
            raise InputError(path, f"row {index}: no {field} (or {field}_0based) value")
        if not 0 <= rec[field] < rec["n_frames"]:
            raise InputError(path, f"row {index}: {field} = {rec[field]} is outside "
                                   f"0..{rec['n_frames'] - 1}")
    t = raw.get("time_s")
    rec["time_s"] = float(t) if t not in (None, "") else None
    c = raw.get("confidence")
    if c not in (None, ""):
        try:
            rec["confidence"] = float(c)
        except (TypeError, ValueError):
            raise InputError(path, f"row {index} confidence: {c!r} is not a number") from None
    return rec


def read_predictions(path) -> list[dict]:
    """Records from a predictions CSV or JSON (a list, or {'sequences': [...]}) with ground truth."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "predictions file not found")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text())
            rows = data.get("sequences") if isinstance(data, dict) else data
            if not isinstance(rows, list):
                raise InputError(path, "expected a JSON list of sequences or {'sequences': [...]}")
        else:
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
    except (json.JSONDecodeError, UnicodeDecodeError, csv.Error) as err:
        raise InputError(path, f"unreadable predictions ({type(err).__name__})") from None
    if not rows:
        raise InputError(path, "no predictions in file")
    return [normalise_prediction(r, path, i) for i, r in enumerate(rows)]


def per_sequence_rows(records: list[dict]) -> list[dict]:
    """Records -> CSV rows whose column names say the numbering."""
    out = []
    for r in records:
        row = {"seq_id": r["seq_id"], "fold": r.get("fold", "all"), "n_frames": r["n_frames"],
               "ed_abs_diff": abs(r["ed_pred"] - r["ed_true"]),
               "es_abs_diff": abs(r["es_pred"] - r["es_true"]),
               "confidence": "" if r.get("confidence") is None
               else written_confidence(r["confidence"]),
               "time_s": "" if r.get("time_s") is None else f"{r['time_s']:.4f}"}
        for field in FIELDS:
            row[f"{field}_0based"] = r[field]
        out.append(row)
    return out


def write_results(out_dir, records: list[dict], meta: dict, force: bool, title: str) -> dict:
    """Write afd.md, afd.json and afd_per_sequence.csv; returns the summary."""
    out_dir = Path(out_dir)
    paths = {k: out_dir / v for k, v in OUTPUT_NAMES.items()}
    with_confidence = bool(records) and all(r.get("confidence") is not None for r in records)
    conf = {k: out_dir / v for k, v in CONFIDENCE_NAMES.items()} if with_confidence else {}
    refuse_overwrite([*paths.values(), *conf.values()], force)
    summary = afd.summarise(records)
    md = afd.markdown_table(summary, title)
    if meta:
        md += "\n" + "\n".join(f"- {k}: {v}" for k, v in meta.items()) + "\n"
    write_csv_atomic(paths["csv"], per_sequence_rows(records), PER_SEQUENCE_COLUMNS)
    write_json_atomic(paths["json"], {"meta": meta, "summary": summary,
                                      "sequences": per_sequence_rows(records)})
    write_text_atomic(paths["markdown"], md)
    if with_confidence:
        # as written in the CSV, so the table can be remade from it (--predictions)
        cal = calibration.calibration([{**r, "confidence": written_confidence(r["confidence"])}
                                       for r in records])
        write_json_atomic(conf["json"], {"meta": meta, **cal})
        write_text_atomic(conf["markdown"], calibration.markdown(cal, "Confidence against error"))
        calibration.plot(cal, conf["plot"], ", ".join(
            [f"{len(records)} detections"] + ([meta["decoding"]] if meta.get("decoding") else [])))
    return summary


def records_from_nets(args) -> tuple[list[dict], dict]:
    """Run the deploy net(s) over the test lists; fold i uses the i-th --run (or the one model)."""
    lists = [Path(args.data) / l if args.data and not Path(l).is_file() else Path(l)
             for l in args.list]
    if args.run and len(args.run) not in (1, len(lists)):
        raise ValueError(f"give one --run, or one per --list ({len(args.run)} runs, "
                         f"{len(lists)} lists)")
    gpu = args.gpu if args.gpu is not None and args.gpu >= 0 else None
    records, nets, decodings = [], [], set()
    for i, list_file in enumerate(lists):
        data_contract = read_list_contract(list_file)
        if args.run:
            loaded = load_model(args.run[i if len(args.run) > 1 else 0], gpu=gpu)
            check_rows(loaded, data_contract, list_file)
        else:       # a bare model: trained on data like this, labelled as --label says
            loaded = load_net(args.deploy, args.model, data_contract.replace(label=args.label),
                              gpu=gpu)
        decoding = decoding_from_args(loaded, args)
        decodings.add(decoding)
        rows = load_rows(list_file)
        unlabelled = int((rows["ed"] < 0).sum())
        if unlabelled:
            raise InputError(list_file, f"{unlabelled} of its sequences have no ED/ES labels")
        prior = prior_of(loaded, decoding.es_prior)
        fold = predict_rows(loaded, rows, batch=args.batch, method=decoding.decoder,
                            augment=decoding.augment, prior=prior)
        if args.stack:
            fold = decode_stacks(fold, loaded.contract.label, decoding.decoder,
                                 weights=decoding.stack_weights, prior=prior)
        for rec in fold:
            rec["fold"] = fold_name(list_file)
            records.append(rec)
        nets.append(loaded.description)
    if len(decodings) > 1:
        raise ValueError(f"the runs record different decodings ({sorted(map(str, decodings))}); "
                         "give --decoder, --tta/--no-tta, --stack-weights and --es-prior")
    decoding = decodings.pop()
    meta = {**decoding.describe(), "batch": args.batch, "nets": nets,
            "lists": [p.name for p in lists],
            "decoding": "per cine stack (not the paper's)" if args.stack else "per sequence",
            "test_augmentation": TTA_TEXT if decoding.augment else "none"}
    return records, meta


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--predictions", help="CSV or JSON with seq_id, n_frames, ed_true, es_true, "
                     "ed_pred, es_pred (0-based; *_1based columns accepted), optional fold, time_s")
    src.add_argument("--run", action="append", help="training run dir (repeat, one per --list)")
    src.add_argument("--model", help="caffemodel (with --deploy)")
    p.add_argument("--deploy", help="deploy prototxt (with --model)")
    p.add_argument("--label", choices=CONVENTIONS, default="cycle",
                   help="label convention the model was trained with (with --model)")
    p.add_argument("--data", help="prepared dataset dir that holds the list files")
    p.add_argument("--list", action="append", default=[], help="split list, e.g. fold0_test.txt")
    add_decoding_arguments(p)
    p.add_argument("--batch", type=int, default=1, help="sequences per forward pass (default 1)")
    p.add_argument("--stack", action="store_true",
                   help="decode each patient's slices with the same frame count together "
                        "(tempregnet.inference.decode_stacks; not the paper's protocol)")
    p.add_argument("--gpu", type=int, default=None, help="GPU id (default CPU)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    return p


def main(argv=None) -> int:
    quiet_caffe()
    args = build_parser().parse_args(argv)
    try:
        if args.predictions:
            records = read_predictions(args.predictions)
            meta = {"predictions": Path(args.predictions).name}
        else:
            if args.model and not args.deploy:
                raise ValueError("--model needs --deploy")
            if not args.list:
                raise ValueError("running a net needs --list (and usually --data)")
            if args.batch < 1:
                raise ValueError("--batch must be at least 1")
            refuse_overwrite([Path(args.out) / v for v in (*OUTPUT_NAMES.values(),
                                                            *CONFIDENCE_NAMES.values())],
                             args.force)
            records, meta = records_from_nets(args)
        summary = write_results(args.out, records, meta, args.force, "ED/ES frame detection")
    except (InputError, OutputExists, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    pooled = summary["pooled"]
    print(afd.markdown_table(summary))
    print(f"pooled over {pooled['n_sequences']} sequences; wrote "
          f"{', '.join(str(Path(args.out) / v) for v in OUTPUT_NAMES.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
