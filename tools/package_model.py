"""Package a finished training run as a Model Zoo folder under models/ (the shipped model).

    python -m tools.package_model --run runs/cross_sunnybrook \
        --eval results/cross-dataset/afd.json --eval-stack results/cross-dataset/stack/afd.json \
        [--cv results/acdc_mm/table1.json] --out models/tempregnet_acdc_small96

Copies the deploy prototxt, the final caffemodel, settings.json, contract.json and
final_model.txt (so the run/model reader, tempregnet.runs, loads the folder), and writes readme.md: the zoo front matter (name, caffemodel, sha1,
license, Caffe commit) and the recipe, data, licence, reproduction commands and the accuracy
that the given tools.evaluate_afd outputs measured (read from their afd.json, never typed).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from data_prep.errors import InputError
from tempregnet.decoding import decoding_of
from tempregnet.runs import CONTRACT, FINAL_MODEL, README, SETTINGS, read_model_folder, sha1_of

CAFFE_COMMIT = "99bd99795dcdf0b1d3086a8d67ab1782a8a08383"   # BVLC master of the Debian source
CAFFE_SOURCE = "Debian source package caffe 1.0.0+git20180821.99bd997-8 with tools/caffe/patches"


def accuracy_rows(afd_json, decoding=None) -> dict:
    """Pooled aFD/STD (and the cyclic difference) of an afd.json written by tools.evaluate_afd;
    refused if it was measured with another decoding than `decoding` (tempregnet.decoding)."""
    path = Path(afd_json)
    try:
        doc = json.loads(path.read_text())
        summary = doc["summary"]["pooled"]
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(path, f"not an afd.json of tools.evaluate_afd ({exc})") from None
    meta = doc.get("meta") or {}
    if decoding is not None:
        differ = sorted(k for k, v in decoding.describe().items() if meta.get(k) != v)
        if differ:
            raise InputError(path, f"measured with another {', '.join(differ)} than the model's "
                                   f"decoding ({decoding.describe()}); evaluate it again")
    return summary


def cv_rows(table1_json) -> tuple[dict, dict | None, str]:
    """TempReg-Net's pooled rows (per sequence, per stack) of a tools.table1 table1.json, and
    its recipe's name: the cross-validated accuracy of the recipe the model was trained with."""
    path = Path(table1_json)
    try:
        doc = json.loads(path.read_text())
        summary = doc["summary"]
        per_seq = summary["tempreg"]["pooled"]
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(path, f"not a table1.json of tools.table1 with a tempreg row ({exc})") \
            from None
    stack = (summary.get("tempreg_stack") or {}).get("pooled")
    recipe = (doc.get("meta") or {}).get("recipe") or {}
    return per_seq, stack, recipe.get("name", "") if isinstance(recipe, dict) else str(recipe)


def _row(label: str, s: dict) -> str:
    ed, es = s["ed"], s["es"]
    return (f"| {label} | {s['n_sequences']} | {ed['afd']:.2f} ({ed['std']:.2f}) | "
            f"{es['afd']:.2f} ({es['std']:.2f}) | {ed['cyclic_afd_not_paper']:.2f} / "
            f"{es['cyclic_afd_not_paper']:.2f} |")


def use_text(contract: dict) -> str:
    """How to run the model on new scans: physical models need no field-of-view setting."""
    if contract.get("mm_per_px"):
        side = contract["mm_per_px"] * contract["stored_size"]
        return f"""    python -m tools.detect STUDY/ --out det/ --plot
    python -m tools.detect STUDY/ --out det/ --input-mm-per-px 1.4   # override a missing pixel size

Any field of view and pixel size: each slice is read at its header's pixel size (DICOM
PixelSpacing, NIfTI pixdim; where the header has none, estimated from the images), a {side:g} mm square around the left ventricle is found in the
images (per patient stack) and resampled to {contract['stored_size']} px ({contract['mm_per_px']:.3f} mm per pixel), as in
training; the square's centre and size are written with each detection. Labels follow the
`{contract.get('label')}` convention: ED and ES anywhere in the sequence (docs/scale-and-crop.md).
"""
    return """    python -m tools.detect STUDY/ --out det/                 # frames centred on the heart
    python -m tools.detect STUDY/ --out det/ --roi 0.4       # frames of the whole chest (~350 mm)

It was trained on ACDC's heart-centred frames (about 140 mm field of view, `roi` 1.0): for
images of the whole chest keep the central 0.4 (`--roi 0.4`), as for Sunnybrook below. Labels
follow the `cycle` convention: ED and ES anywhere in the sequence.
"""


def rwave_note(decoding) -> str:
    """Why Sunnybrook's Eq. 5 ED is about T - 2 frames for a decoder that puts ED at the R wave."""
    if decoding.decoder not in ("rwave_ed", "fit_trigger"):
        return ""
    return ("Sunnybrook labels ED about two frames before the R wave its series start at; this "
            f"decoding (`{decoding.decoder}`) puts ED at the R wave, as ACDC labels it, so Eq. 5 "
            "counts those two frames the long way round the cycle: the cyclic column is the "
            "distance (docs/scale-and-crop.md). ")


def cv_text(cv) -> str:
    """The cross-validated accuracy section of the readme (empty without --cv)."""
    if not cv:
        return ""
    per_seq, stack, recipe = cv
    rows = [_row("per sequence", per_seq)]
    if stack:
        rows.append(_row("per stack (not the paper's)", stack))
    return f"""
Patient-level 4-fold cross-validation of the same settings on the ACDC development patients
(each fold's model trained on the other three folds, {'recipe `' + recipe + '`, ' if recipe else ''}`tools.table1`'s
table1.json, TempReg-Net rows): the accuracy to expect on ACDC-like scans it has not seen.

| decoding | sequences | aFD ED (STD) | aFD ES (STD) | cyclic aFD ED / ES (not the paper's) |
|---|---:|---:|---:|---:|
{chr(10).join(rows)}
"""


def portable_settings(settings: dict) -> dict:
    """The run's settings without this machine's paths: absolute paths become their last part."""
    return {k: (Path(v).name if isinstance(v, str) and v.startswith("/") else v)
            for k, v in settings.items()}


def readme_text(name: str, caffemodel: str, sha1: str, settings: dict, contract: dict, crop: int,
                per_seq: dict, per_stack: dict | None, command: str, cv=None) -> str:
    """The folder's readme.md; cv: cv_rows() of the recipe's cross-validation, or None."""
    recipe = settings.get("recipe") or {}
    overrides = ", ".join(f"{k} = {json.dumps(v)}" for k, v in sorted(recipe.get("overrides", {}).items()))
    decoding = decoding_of(recipe)
    test_frames = ("read as for training: the LV crop at the scanner's pixel size"
                   if contract.get("mm_per_px") else
                   f"central {(recipe.get('test_data') or {}).get('roi', 1.0)} of the field of view")
    rows = [_row("per sequence", per_seq)]
    if per_stack:
        rows.append(_row("per stack (`--stack`, not the paper's)", per_stack))
    return f"""---
name: {name}
caffemodel: {caffemodel}
sha1: {sha1}
license: CC BY-NC-SA 4.0 (weights learnt from ACDC; non-commercial research only)
caffe_commit: {CAFFE_COMMIT}
caffe_source: {CAFFE_SOURCE}
recipe: {recipe.get('name')}
---
# {name}

TempReg-Net (Kong et al., MICCAI 2016), recipe `{recipe.get('name')}` (configuration `{recipe.get('config')}`),
trained from scratch on all of the ACDC development subset. `python -m tools.detect` and
`python -m tools.cohort` use it when given no `--run` or `--model`. It reads each cine slice as
{contract.get('steps')} steps of {contract.get('stored_size')} px frames (centre crop {crop} px; contrast and motion input channels)
and outputs a per-step volume-like curve that the `{decoding.decoder}` decoder turns into ED and ES frames{decoding.note()} (`tempregnet.decoding`; the detect flags override each part). **A small CPU model, not the paper's ZF net.**

## Use

{use_text(contract)}
## Recipe

`recipes/{recipe.get('name')}.toml` ({recipe.get('description')}): {recipe.get('iterations')} iterations,
seed {recipe.get('seed')}, {settings.get('solver_mode')}, no ImageNet weights. Overrides of the `{recipe.get('config')}` configuration:

    {overrides}

Its nets are `prototxt/{recipe.get('name')}/`; `deploy.prototxt` here is the deploy net of that training run,
`settings.json` and `contract.json` are the run's own record (every setting; the frames it was
trained on).

## Training data and licence

ACDC (Automated Cardiac Diagnosis Challenge) development subset: {settings.get('n_train')} slice sequences
of 50 patients (every short-axis slice of each 4-D cine; one skipped by preparation, a
constant frame). O. Bernard et al., IEEE TMI 37(11):2514-2525, 2018. ACDC is licensed
**CC BY-NC-SA 4.0**; these weights are learnt from it, and the same terms apply to them:
non-commercial research use only, with attribution, derivatives shared alike. The code of this
repository is BSD-2-Clause. No image or label of ACDC is in this folder.

## Reproduce

    {command}

(prepares ACDC and Sunnybrook from `ACDC=` and `SUNNYBROOK=` folders, trains, evaluates and
rewrites this folder). A retrain need not give these weights bit for bit; the sha1 and the
table below belong to this file.

## Accuracy (measured)

Trained on ACDC, tested on Sunnybrook (CC0; 3 patients, 35 sequences, another scanner and ED
convention; {test_frames}) by `tools.evaluate_afd`, whose afd.json the table
is read from; aFD = mean absolute frame difference (Eq. 5), original frames:

| decoding | sequences | aFD ED (STD) | aFD ES (STD) | cyclic aFD ED / ES (not the paper's) |
|---|---:|---:|---:|---:|
{chr(10).join(rows)}

{rwave_note(decoding)}Three test patients make this an anecdote, not an estimate. On the synthetic phantoms see
docs/detection.md.
{cv_text(cv)}
## Files

- `{caffemodel}`: the weights (sha1 above; the loaders refuse a file that does not match)
- `deploy.prototxt`: the net; inputs `frames` ((20 N) x 3 x C x C) and `cont` (20 x N), output
  `volume_pred` (20 x N)
- `settings.json`, `contract.json`, `final_model.txt`: the training run's record, which the
  run/model reader (`tempregnet.runs.read_model_folder`) reads
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.package_model",
                                description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="finished training run folder")
    p.add_argument("--eval", required=True, help="afd.json of tools.evaluate_afd (per sequence)")
    p.add_argument("--eval-stack", help="afd.json of tools.evaluate_afd --stack")
    p.add_argument("--cv", help="table1.json of tools.table1: the recipe's cross-validated accuracy")
    p.add_argument("--out", required=True, help="model folder to write (refused if it exists)")
    p.add_argument("--name", default="TempReg-Net small96, cross-dataset recipe, trained on ACDC")
    p.add_argument("--command", default="make shipped-model",
                   help="the command that reproduces the folder (written into readme.md)")
    p.add_argument("--force", action="store_true")
    args = p.parse_args(argv)
    run, out = Path(args.run), Path(args.out)
    try:
        if out.exists() and not args.force:
            raise InputError(out, "exists; pass --force to replace it")
        model = read_model_folder(run)
        if model.settings is None:
            raise InputError(run, "not a training run folder (no settings.json)")
        decoding = decoding_of(model.settings.get("recipe") or {})
        per_seq = accuracy_rows(args.eval, decoding)
        per_stack = accuracy_rows(args.eval_stack, decoding) if args.eval_stack else None
        cv = cv_rows(args.cv) if args.cv else None
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from tempregnet.inference import load_model, quiet_caffe
    quiet_caffe()
    crop = load_model(run).crop
    caffemodel = f"{out.name}.caffemodel"
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copyfile(model.weights, tmp / caffemodel)
    shutil.copyfile(model.deploy, tmp / "deploy.prototxt")
    (tmp / SETTINGS).write_text(json.dumps(portable_settings(model.settings), indent=2,
                                           sort_keys=True) + "\n")
    shutil.copyfile(run / CONTRACT, tmp / CONTRACT)
    (tmp / FINAL_MODEL).write_text(caffemodel + "\n")
    sha1 = sha1_of(tmp / caffemodel)
    (tmp / README).write_text(readme_text(args.name, caffemodel, sha1, model.settings,
                                          model.contract.to_dict(), crop, per_seq, per_stack,
                                          args.command, cv))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    print(f"wrote {out} (caffemodel sha1 {sha1})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
