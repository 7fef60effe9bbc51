"""Where a detection net comes from: the model shipped in models/, a training run, or a caffemodel.

A model folder is a Caffe Model Zoo folder: readme.md whose front matter names the caffemodel and
its sha1 (checked before every load; a mismatch is one clear error), the deploy prototxt, and the
training run's settings.json and final_model.txt, so the run reader (tools.predict.load_run)
reads its crop, stored size, field of view and label convention from the same file a run has.
A ModelSpec says which net to load in a form that can travel to a Dask worker; the sha1 it
carries makes every worker check that it holds the client's weights.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
from pathlib import Path

from data_prep.errors import InputError
from data_prep.labels import CONVENTIONS, DECODERS

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
DEFAULT_MODEL = MODELS_DIR / "tempregnet_acdc_small96"      # the shipped model (its readme.md)
README = "readme.md"


def read_front_matter(readme) -> dict[str, str]:
    """The `key: value` lines between the two `---` lines that open a zoo readme.md."""
    path = Path(readme)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise InputError(path, f"cannot read the model readme ({exc.strerror})") from None
    if not lines or lines[0].strip() != "---" or "---" not in (s.strip() for s in lines[1:]):
        raise InputError(path, "no front matter (a block opened and closed by '---' lines)")
    fields = {}
    for line in lines[1:]:
        if line.strip() == "---":
            break
        key, sep, value = line.partition(":")
        if sep and key.strip():
            fields[key.strip()] = value.strip()
    return fields


def sha1_of(path) -> str:
    """Hex SHA-1 of a file's bytes (the Model Zoo's checksum)."""
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_model_folder(folder) -> bool:
    """A folder with a zoo readme.md (not a bare training run)."""
    return (Path(folder) / README).is_file()


def checked_caffemodel(folder, expected_sha1: str | None = None) -> Path:
    """The caffemodel a model folder's readme names, after its sha1 matched; InputError if not."""
    folder = Path(folder)
    meta = read_front_matter(folder / README)
    for key in ("caffemodel", "sha1"):
        if not meta.get(key):
            raise InputError(folder / README, f"front matter lacks '{key}'")
    weights = folder / meta["caffemodel"]
    if not weights.is_file():
        raise InputError(weights, "caffemodel named by readme.md not found")
    got = sha1_of(weights)
    want = expected_sha1 or meta["sha1"]
    if got != meta["sha1"].lower() or got != want.lower():
        raise InputError(weights, f"sha1 {got} does not match the expected {want}: the weights "
                                  "are damaged or not this model's (restore the file, e.g. "
                                  "`git checkout -- <folder>`)")
    return weights


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Which net to load and how to feed it (picklable: workers load it themselves).

    Exactly one of folder (model folder or training run) and weights (+ deploy, stored_size).
    sha1: the caffemodel's, as the client saw it; a loader whose copy differs refuses it.
    """
    folder: str | None = None
    weights: str | None = None
    deploy: str | None = None
    stored_size: int | None = None
    crop: int | None = None
    label: str = "cycle"
    roi: float | None = None          # None: what the training data kept
    gpu: int | None = None
    sha1: str | None = None


def model_spec(run=None, weights=None, deploy=None, stored_size=None, crop=None,
               label: str = "cycle", roi=None, gpu=None) -> ModelSpec:
    """A checked spec from command-line choices: the shipped model when neither run nor weights."""
    if roi is not None and not 0 < roi <= 1:
        raise ValueError("--roi must be in (0, 1]")
    if weights is not None:
        if not deploy or not stored_size:
            raise ValueError("--model needs --deploy and --size (the stored frame side it was "
                             "trained on, e.g. 72 for config small, 224 for zf)")
        if not Path(weights).is_file():
            raise InputError(weights, "caffemodel not found")
        return ModelSpec(weights=str(Path(weights).resolve()), deploy=str(Path(deploy).resolve()),
                         stored_size=stored_size, crop=crop, label=label, roi=roi, gpu=gpu,
                         sha1=sha1_of(weights))
    folder = Path(run) if run is not None else DEFAULT_MODEL
    if is_model_folder(folder):
        sha1 = sha1_of(checked_caffemodel(folder))
    else:
        from tools.predict import final_model_path, read_settings
        read_settings(folder)                   # a run folder, or one clear error
        sha1 = sha1_of(final_model_path(folder))
    return ModelSpec(folder=str(folder.resolve()), roi=roi, gpu=gpu, sha1=sha1)


def load_model(spec: ModelSpec):
    """The tools.predict.LoadedNet a spec names, its weights checked against spec.sha1."""
    from tools import predict
    if spec.weights is not None:
        if spec.sha1 and sha1_of(spec.weights) != spec.sha1:
            raise InputError(spec.weights, "caffemodel differs from the one the run was started "
                                           "with (sha1)")
        loaded = predict.load_net(spec.deploy, spec.weights, crop=spec.crop,
                                  convention=spec.label, stored_size=spec.stored_size,
                                  roi=spec.roi or 1.0, gpu=spec.gpu)
        return loaded
    folder = Path(spec.folder)
    if is_model_folder(folder):
        weights = checked_caffemodel(folder, spec.sha1)
        meta = read_front_matter(folder / README)
        extra = {"model": meta.get("name", folder.name), "sha1": sha1_of(weights)}
    else:
        weights = predict.final_model_path(folder)
        if spec.sha1 and sha1_of(weights) != spec.sha1:
            raise InputError(weights, "caffemodel differs from the one the run was started "
                                      "with (sha1)")
        extra = {}
    loaded = predict.load_run(folder, gpu=spec.gpu)
    loaded = dataclasses.replace(loaded, description={**loaded.description, **extra})
    return loaded if spec.roi is None else dataclasses.replace(loaded, roi=spec.roi)


def add_net_arguments(p: argparse.ArgumentParser) -> None:
    """The options that choose the net and its decoding (tools.detect and tools.cohort)."""
    net = p.add_mutually_exclusive_group()
    net.add_argument("--run", help="training run directory (tools/train.py) or model folder "
                                   "(default: the model shipped in models/)")
    net.add_argument("--model", help="caffemodel (with --deploy)")
    p.add_argument("--deploy", help="deploy prototxt (with --model)")
    p.add_argument("--size", type=int, help="stored frame side the model was trained on (--model)")
    p.add_argument("--roi", type=float,
                   help="central field-of-view fraction to keep: by default what the run's "
                        "training data kept (1.0 with --model); set it when this data's field of "
                        "view differs (e.g. 0.4 for full 350 mm frames and a model trained on "
                        "heart-cropped ACDC)")
    p.add_argument("--crop", type=int, help="net input side (--model; default: from the deploy)")
    p.add_argument("--label", choices=CONVENTIONS, default="cycle",
                   help="label convention the model was trained with (--model)")
    p.add_argument("--decoder", choices=DECODERS, default="fit")
    p.add_argument("--stack", action="store_true",
                   help="one ED/ES per patient stack: the standardised curves of its slices "
                        "(same frame count) averaged and decoded once (not the paper's protocol)")
    p.add_argument("--gpu", type=int, default=None, help="GPU id (default CPU)")


def spec_from_args(args) -> ModelSpec:
    """The ModelSpec of add_net_arguments' options (the shipped model by default)."""
    return model_spec(run=args.run, weights=args.model, deploy=args.deploy, stored_size=args.size,
                      crop=args.crop, label=args.label, roi=args.roi, gpu=args.gpu)
