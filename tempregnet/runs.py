"""Run and model folders: the one writer of what a trained model needs to be used, and the one reader.

A run folder (tools.train) holds settings.json (the resolved recipe, fold, variant, seeds, ...),
contract.json (the sequence contract of the data it was trained on), <recipe>_<variant>_{train,
test,deploy,solver}.prototxt, train.log, snapshots/, final_model.txt (the final caffemodel,
relative to the folder) and training_curves.png. A model folder (a shipped model) needs only a
deploy prototxt (deploy.prototxt or one *_deploy.prototxt), the weights (final_model.txt or one
*.caffemodel) and contract.json; settings.json and a readme are optional. `read_model_folder`
reads both kinds. A folder with a Caffe Model Zoo readme.md (front matter naming `caffemodel` and
its `sha1`, as models/tempregnet_acdc_small96) has its weights' sha1 checked at every read: a
file that does not match is one clear error.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from data_prep.errors import InputError
from tempregnet.contract import SequenceContract, read_contract_file
from tempregnet.decoding import KEYS as DECODING_KEYS
from tempregnet.outputs import write_text_atomic

SETTINGS, CONTRACT, FINAL_MODEL, SNAPSHOTS = "settings.json", "contract.json", "final_model.txt", "snapshots"
README = "readme.md"                     # Model Zoo readme: front matter with caffemodel and sha1


def write_run_record(run_dir, settings: dict, contract: SequenceContract) -> None:
    """settings.json and contract.json of a run folder (atomically)."""
    run_dir = Path(run_dir)
    write_text_atomic(run_dir / CONTRACT, json.dumps(contract.to_dict(), indent=2) + "\n")
    write_text_atomic(run_dir / SETTINGS, json.dumps(settings, indent=2, sort_keys=True) + "\n")


def write_final_model(run_dir, caffemodel) -> None:
    """final_model.txt naming the final caffemodel relative to the run folder (so it can move)."""
    run_dir = Path(run_dir)
    write_text_atomic(run_dir / FINAL_MODEL, f"{Path(caffemodel).relative_to(run_dir)}\n")


def read_model_contract(folder) -> SequenceContract:
    """contract.json of a run or model folder."""
    return read_contract_file(Path(folder) / CONTRACT)


def read_settings(run_dir) -> dict:
    """settings.json of a run folder."""
    path = Path(run_dir) / SETTINGS
    if not path.is_file():
        raise InputError(run_dir, f"not a training run folder (no {SETTINGS})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(path, f"unreadable JSON ({err.msg})") from None


def final_model_path(run_dir) -> Path:
    """The caffemodel named by a run's final_model.txt (relative paths are to the run folder)."""
    run_dir = Path(run_dir)
    pointer = run_dir / FINAL_MODEL
    if not pointer.is_file():
        raise InputError(run_dir, f"training run has no {FINAL_MODEL} (not finished?)")
    model = Path(pointer.read_text().strip())
    return model if model.is_absolute() else run_dir / model


def snapshot_iteration(path) -> int:
    """N of a Caffe snapshot file named <prefix>_iter_N.caffemodel / .solverstate."""
    return int(re.search(r"_iter_(\d+)\.(caffemodel|solverstate)$", Path(path).name).group(1))


def newest_solverstate(run_dir) -> Path | None:
    """The complete .solverstate with the highest iteration number in run_dir/snapshots, if any: a
    run killed while Caffe wrote a snapshot leaves a truncated one, which is passed over."""
    states = (Path(run_dir) / SNAPSHOTS).glob("*_iter_*.solverstate")
    for state in sorted(states, key=snapshot_iteration, reverse=True):
        if complete_solverstate(state):
            return state
    return None


def complete_solverstate(path: Path) -> bool:
    """Whether a .solverstate parses whole and the .caffemodel it names is there."""
    from caffe.proto import caffe_pb2
    from google.protobuf.message import DecodeError
    state = caffe_pb2.SolverState()
    try:
        state.ParseFromString(Path(path).read_bytes())
    except (DecodeError, OSError):
        return False
    learned = Path(state.learned_net)
    return state.iter > 0 and (learned.is_file() or (Path(path).parent / learned.name).is_file())


def _one(folder: Path, preferred: str, pattern: str, what: str) -> Path:
    if (folder / preferred).is_file():
        return folder / preferred
    found = sorted(folder.glob(pattern))
    if len(found) != 1:
        raise InputError(folder, f"expected one {what} ({preferred} or {pattern}), found {len(found)}")
    return found[0]


def read_front_matter(readme) -> dict[str, str]:
    """The `key: value` lines between the two `---` lines that open a Model Zoo readme.md."""
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


def checked_weights(folder, expected_sha1: str | None = None) -> tuple[Path, dict]:
    """(caffemodel, front matter) of a folder with a zoo readme.md, after the caffemodel's sha1
    matched the readme's (and expected_sha1, when given); InputError if it does not."""
    folder = Path(folder)
    meta = read_front_matter(folder / README)
    for key in ("caffemodel", "sha1"):
        if not meta.get(key):
            raise InputError(folder / README, f"front matter lacks '{key}'")
    weights = folder / meta["caffemodel"]
    if not weights.is_file():
        raise InputError(weights, "caffemodel named by readme.md not found")
    got, want = sha1_of(weights), (expected_sha1 or meta["sha1"]).lower()
    if got != meta["sha1"].lower() or got != want:
        raise InputError(weights, f"sha1 {got} is not the expected {want}: the weights are damaged "
                                  "or not this model's (restore the file, e.g. git checkout)")
    return weights, meta


@dataclass
class ModelFolder:
    """What inference needs of a run or model folder."""
    path: Path
    deploy: Path
    weights: Path
    contract: SequenceContract
    settings: dict | None          # a run folder's settings.json; None for a bare model folder
    zoo: dict | None = None        # a Model Zoo readme's front matter (its sha1 was checked)

    def description(self) -> dict:
        """Non-identifying provenance for result files."""
        s = self.settings or {}
        recipe = s.get("recipe") or {}
        zoo = self.zoo or {}
        desc = {"run": self.path.name, "model": zoo.get("name"), "sha1": zoo.get("sha1"),
                "recipe": recipe.get("name"), "config": recipe.get("config"),
                "variant": s.get("variant"), "iterations": s.get("iters"),
                "imagenet_init": s.get("imagenet_init"), "solver_mode": s.get("solver_mode"),
                "fold": s.get("fold"), **{k: recipe.get(k) for k in DECODING_KEYS},
                "systole_fraction": (s["systole_fraction"] if "systole_fraction" in s
                                     else training_fraction(s)),
                **training_symmetries(recipe)}
        return {k: v for k, v in desc.items() if v is not None}


def training_fraction(settings: dict) -> float | None:
    """The median systole fraction of a run's training sequences, for runs trained before
    tools.train recorded it (settings.json systole_fraction): computed, as tools.train does, from
    the training list the run names, when that list is still at hand; else None."""
    train_list = settings.get("train_list")
    if not train_list or not Path(train_list).is_file():
        return None
    from data_prep.hdf5 import load_rows
    from tempregnet.baselines import LABEL_KEYS, rows_es_fraction
    try:
        return rows_es_fraction(load_rows(train_list, LABEL_KEYS))
    except (InputError, OSError, KeyError, ValueError):
        return None


def training_symmetries(recipe: dict) -> dict:
    """train_flip / train_roll of a recipe's net configuration (for test-time augmentation);
    nothing for a configuration models.config does not know."""
    from models.config import get_config
    try:
        cfg = get_config(recipe["config"]).replace(**(recipe.get("overrides") or {}))
    except (KeyError, TypeError, ValueError):
        return {}
    return {"train_flip": cfg.train_flip, "train_roll": cfg.train_roll}


def read_model_folder(folder, expected_sha1: str | None = None) -> ModelFolder:
    """The deploy net, final weights, contract and (run folders) settings of a folder; a zoo
    folder's weights are the ones its readme names, sha1-checked (and against expected_sha1)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "model folder not found")
    settings = read_settings(folder) if (folder / SETTINGS).is_file() else None
    if not (folder / CONTRACT).is_file():
        what = "training run" if settings is not None else "model folder"
        raise InputError(folder, f"{what} has no {CONTRACT} (made by an older version? retrain)"
                         if settings is not None else f"not a {what} (no {CONTRACT})")
    contract = read_contract_file(folder / CONTRACT)
    deploy = _one(folder, "deploy.prototxt", "*_deploy.prototxt", "deploy prototxt")
    zoo = None
    if (folder / README).is_file():
        weights, zoo = checked_weights(folder, expected_sha1)
    else:
        weights = (final_model_path(folder) if (folder / FINAL_MODEL).is_file() or settings is not None
                   else _one(folder, "model.caffemodel", "*.caffemodel", "caffemodel"))
        if expected_sha1 and sha1_of(weights) != expected_sha1:
            raise InputError(weights, f"sha1 {sha1_of(weights)} is not the expected {expected_sha1} "
                                      "(the weights changed since the run started)")
    return ModelFolder(folder, deploy, weights, contract, settings, zoo)
