"""Which net a detection runs: the model shipped in models/, a run or model folder, or a caffemodel.

A ModelSpec names it in a form that travels to a Dask worker (tempregnet.cohort), with the sha1
of the weights the client saw, so a worker whose copy differs refuses to load it. Folders are
read by the one run/model reader (tempregnet.runs.read_model_folder), which also checks a Model
Zoo folder's sha1 against its readme.md.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from data_prep.errors import InputError
from tempregnet.labels import CONVENTIONS, DECODERS

TTA_TEXT = ("mean curve over the flips and 4 rolled starts the model was trained with "
            "(tempregnet.inference.augmentation_views; not the paper's)")
TTA_HELP = "test-time augmentation: " + TTA_TEXT
MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
DEFAULT_MODEL = MODELS_DIR / "tempregnet_acdc_small96"     # the shipped model (its readme.md)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Exactly one of folder (model or run folder) and weights (with deploy and stored_size).

    roi: None keeps the field of view the training data kept. sha1: of the caffemodel as the
    client saw it; load_spec refuses weights that differ.
    """
    folder: str | None = None
    weights: str | None = None
    deploy: str | None = None
    stored_size: int | None = None
    label: str = "cycle"
    roi: float | None = None
    gpu: int | None = None
    sha1: str | None = None


def model_spec(run=None, weights=None, deploy=None, stored_size=None, label: str = "cycle",
               roi=None, gpu=None) -> ModelSpec:
    """A checked spec from command-line choices: the shipped model when neither run nor weights."""
    from tempregnet.runs import read_model_folder, sha1_of
    if roi is not None and not 0 < roi <= 1:
        raise ValueError("--roi must be in (0, 1]")
    if weights is not None:
        if not deploy or not stored_size:
            raise ValueError("--model needs --deploy and --size (the stored frame side it was "
                             "trained on, e.g. 72 for recipe demo, 224 for paper_zf)")
        if not Path(weights).is_file():
            raise InputError(weights, "caffemodel not found")
        return ModelSpec(weights=str(Path(weights).resolve()), deploy=str(Path(deploy).resolve()),
                         stored_size=stored_size, label=label, roi=roi, gpu=gpu,
                         sha1=sha1_of(weights))
    folder = Path(run) if run is not None else DEFAULT_MODEL
    model = read_model_folder(folder)            # a zoo folder's sha1 is checked here
    return ModelSpec(folder=str(folder.resolve()), roi=roi, gpu=gpu, sha1=sha1_of(model.weights))


def decoding_from_args(loaded, args):
    """The tempregnet.decoding.Decoding a command uses: each part its flags give (--decoder, --tta /
    --no-tta, --stack-weights, --es-prior), else the model's recipe's, else the default."""
    from tempregnet.decoding import decoding_of
    views = None if args.tta is None else ("tta" if args.tta else "one")
    return decoding_of(loaded.description, args.decoder, views, args.stack_weights, args.es_prior)


def prior_of(loaded, weight: float):
    """The systole prior of a detection (labels.SystolePrior): None for weight 0, else the model's
    training sequences' median systole fraction (settings.json systole_fraction) at that weight."""
    from tempregnet.labels import SystolePrior
    if not weight:
        return None
    fraction = loaded.description.get("systole_fraction")
    if fraction is None:
        raise ValueError(f"--es-prior needs the systole fraction of the model's training "
                         f"sequences, which {loaded.description.get('run') or 'this model'} does "
                         f"not record (trained before 2026-12-07, or a bare --model): retrain it, "
                         f"or leave --es-prior out")
    return SystolePrior(float(fraction), float(weight))


ES_PRIOR_HELP = ("weight of a prior on the systole's share of the cycle (the median of the "
                 "model's training sequences; tempregnet.labels.SystolePrior) in the fit "
                 "decoders; 0: none (the paper's decoding). Default: the model's recipe's")
STACK_WEIGHTS_HELP = ("how --stack averages a stack's standardised curves: equal, or each slice "
                      "by the share of its curve its own Eq. 4 fit explains (fit). Default: the "
                      "model's recipe's")


def add_decoding_arguments(p: argparse.ArgumentParser) -> None:
    """The options that override parts of the model's decoding (decoding_from_args)."""
    from tempregnet.decoding import STACK_WEIGHTS
    p.add_argument("--decoder", choices=DECODERS, default=None,
                   help="how ED/ES are read from the curve (default: the model's recipe's "
                        "decoder, 'fit' for a bare --model)")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help=TTA_HELP + ". Default: the model's recipe's")
    p.add_argument("--stack-weights", choices=STACK_WEIGHTS, default=None, help=STACK_WEIGHTS_HELP)
    p.add_argument("--es-prior", type=float, default=None, metavar="WEIGHT", help=ES_PRIOR_HELP)


def load_spec(spec: ModelSpec):
    """The tempregnet.inference.LoadedNet a spec names, its weights' sha1 checked."""
    from tempregnet.contract import SequenceContract
    from tempregnet.inference import deploy_steps, load_model, load_net
    from tempregnet.runs import sha1_of
    if spec.weights is not None:
        if spec.sha1 and sha1_of(spec.weights) != spec.sha1:
            raise InputError(spec.weights, "caffemodel differs from the one the run started with "
                                           "(sha1)")
        contract = SequenceContract(steps=deploy_steps(spec.deploy), stored_size=spec.stored_size,
                                    label=spec.label, roi=spec.roi or 1.0)
        return load_net(spec.deploy, spec.weights, contract, gpu=spec.gpu)
    loaded = load_model(spec.folder, gpu=spec.gpu, expected_sha1=spec.sha1)
    if spec.roi is None:
        return loaded
    if loaded.contract.physical:
        raise ValueError(f"--roi does not apply to {Path(spec.folder).name}: it reads a "
                         f"{loaded.contract.mm_per_px * loaded.contract.stored_size:g} mm square "
                         "around the LV at the header's pixel size (docs/scale-and-crop.md); "
                         "drop --roi")
    return dataclasses.replace(loaded, contract=loaded.contract.replace(roi=spec.roi))


def add_net_arguments(p: argparse.ArgumentParser) -> None:
    """The options that choose the net and its decoding (tools.detect, tools.cohort)."""
    net = p.add_mutually_exclusive_group()
    net.add_argument("--run", help="run folder (tools.train) or model folder (default: the "
                                   "model shipped in models/, tempregnet.model_spec.DEFAULT_MODEL)")
    net.add_argument("--model", help="caffemodel (with --deploy)")
    p.add_argument("--deploy", help="deploy prototxt (with --model)")
    p.add_argument("--size", type=int, help="stored frame side the model was trained on (--model)")
    p.add_argument("--roi", type=float,
                   help="central field-of-view fraction to keep: by default what the run's "
                        "training data kept (1.0 with --model); set it when this data's field of "
                        "view differs (e.g. 0.4 for full 350 mm frames and a model trained on "
                        "heart-cropped ACDC, as the shipped one)")
    p.add_argument("--label", choices=CONVENTIONS, default="cycle",
                   help="label convention the model was trained with (--model)")
    p.add_argument("--stack", action="store_true",
                   help="one ED/ES per patient stack: the standardised curves of its slices "
                        "(same frame count) averaged and decoded once (not the paper's protocol)")
    add_decoding_arguments(p)
    p.add_argument("--gpu", type=int, default=None, help="GPU id (default CPU)")
    p.add_argument("--input-mm-per-px", type=float,
                   help="input pixel size for sequences whose header states none (no "
                        "PixelSpacing, NIfTI's 1 x 1 x 1 placeholder), for a model trained on "
                        "fixed-mm frames; default: estimated from the images "
                        "(docs/scale-and-crop.md)")


def spec_from_args(args) -> ModelSpec:
    """The ModelSpec of add_net_arguments' options."""
    if args.input_mm_per_px is not None and not args.input_mm_per_px > 0:
        raise ValueError("--input-mm-per-px must be > 0")
    return model_spec(run=args.run, weights=args.model, deploy=args.deploy, stored_size=args.size,
                      label=args.label, roi=args.roi, gpu=args.gpu)
