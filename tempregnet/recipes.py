"""Named recipes: each reported experiment as data (recipes/<name>.toml), and the one loader of them.

A recipe names its net configuration (models/config.py) and the overrides on top of it, the Table 1
variants it trains, the iterations, its decoding (tempregnet.decoding: the decoder, and optionally
the test-time views, the stack weighting and the systole prior), whether it starts from ImageNet
weights, the seed, its folds and how its data is prepared (source, label convention, ROI). The stored size and step
count of that data come from the configuration, so `Recipe.contract()` is the sequence contract the
recipe's data must have.
"""
from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path

from data_prep.errors import InputError
from models.config import NetConfig, get_config, get_variant
from tempregnet.contract import SequenceContract
from tempregnet.decoding import Decoding

OPTIONAL_KEYS = {"test_data", "views", "stack_weights", "es_prior"}
RECIPE_DIR = Path(__file__).resolve().parent.parent / "recipes"
REPORTED = ("paper_zf", "paper_zf_cpu", "demo", "acdc", "cross_sunnybrook", "acdc_mm", "cross_sunnybrook_mm")   # one row each in the README's results table
FOLDS = ("cv", "all")          # cv: patient-level k-fold CV; all: train on all.txt
# NetConfig fields a recipe may not override: they name the config, size the stored data and the
# crop, or are not scalars.
FIXED_FIELDS = {"name", "description", "stored_size", "crop", "pool5_size", "n_steps", "conv_widths"}


@dataclass(frozen=True)
class DataSpec:
    """How a recipe's data is prepared: source reader, label convention, ROI or physical scale,
    split (and cohort) seed."""
    source: str
    label: str
    roi: float
    seed: int
    patients: int | None = None     # synthetic source only: cohort size
    # Physical scale (docs/scale-and-crop.md): stored pixel size in mm and where the square is
    # taken ("lv" or "image centre"); None and "centre square": the roi of the scanner's frame.
    mm_per_px: float | None = None
    crop: str = "centre square"
    # No input pixel size here: headers without one are estimated from the images
    # (data_prep.pixel_size); --input-mm-per-px overrides it per command.


@dataclass(frozen=True)
class Recipe:
    """One reported experiment (see the module docstring)."""
    name: str
    description: str
    config: str
    overrides: dict
    variants: tuple
    iterations: int
    decoder: str
    imagenet_weights: bool
    seed: int
    folds: str
    data: DataSpec
    test_data: DataSpec | None = None
    # The rest of the decoding (tempregnet.decoding.Decoding), optional in the TOML.
    views: str = "one"
    stack_weights: str = "equal"
    es_prior: float = 0.0

    def decoding(self) -> Decoding:
        """How ED/ES are read from this recipe's nets."""
        return Decoding(self.decoder, self.views, self.stack_weights, self.es_prior)

    def net_config(self) -> NetConfig:
        """The configuration with the recipe's overrides applied."""
        return get_config(self.config).replace(**self.overrides)

    def contract(self, which: str = "data") -> SequenceContract:
        """The sequence contract of the recipe's training ("data") or test ("test_data") data."""
        spec = self.data if which == "data" else self.test_data
        if spec is None:
            raise ValueError(f"recipe {self.name!r} has no {which}")
        cfg = self.net_config()
        return SequenceContract(steps=cfg.n_steps, stored_size=cfg.stored_size, label=spec.label,
                                roi=spec.roi, crop=spec.crop, mm_per_px=spec.mm_per_px)

    def to_dict(self) -> dict:
        """JSON-ready fields (recorded in every run's settings.json)."""
        out = dataclasses.asdict(self)
        out["variants"] = list(self.variants)
        return out


TYPES = {"int": int, "float": float, "bool": bool, "str": str}


def field_type(key: str, where) -> type:
    """The type of NetConfig field key, if a recipe may override it."""
    fields = {f.name: f for f in dataclasses.fields(NetConfig)}
    if key not in fields or key in FIXED_FIELDS:
        allowed = ", ".join(sorted(set(fields) - FIXED_FIELDS))
        raise InputError(where, f"override {key!r} is not a field a recipe may set ({allowed})")
    return TYPES[str(fields[key].type)]


def typed_override(key: str, value, where) -> object:
    """value for NetConfig field key, checked against the field's type (ints accepted as floats)."""
    kind = field_type(key, where)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not kind:
        raise InputError(where, f"override {key} = {value!r} is not a {kind.__name__}")
    return value


def parse_overrides(pairs, where="--set") -> dict:
    """`KEY=VALUE` strings -> typed NetConfig overrides (the learning curve's exploration loop)."""
    out = {}
    for pair in pairs or ():
        key, sep, text = pair.partition("=")
        if not sep:
            raise InputError(where, f"expected KEY=VALUE, got {pair!r}")
        kind = field_type(key, where)
        try:
            if kind is bool:
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(text)
                value = text.lower() in ("true", "1")
            else:
                value = kind(text)
        except ValueError:
            raise InputError(where, f"{key}: {text!r} is not a valid {kind.__name__}") from None
        out[key] = typed_override(key, value, where)
    return out


def _data_spec(table, where, what) -> DataSpec:
    if not isinstance(table, dict):
        raise InputError(where, f"[{what}] must be a table")
    names = {f.name for f in dataclasses.fields(DataSpec)}
    unknown = sorted(set(table) - names)
    if unknown:
        raise InputError(where, f"[{what}] has unknown keys {unknown}; known: {sorted(names)}")
    try:
        spec = DataSpec(**table)
    except TypeError as err:
        raise InputError(where, f"[{what}]: {err}") from None
    if (spec.source == "synthetic") != (spec.patients is not None):
        raise InputError(where, f"[{what}]: patients is given for, and only for, source 'synthetic'")
    return spec


def load_recipe(name_or_path) -> Recipe:
    """The recipe called name (recipes/<name>.toml) or read from a .toml path; strict keys."""
    text = str(name_or_path)
    path = Path(text) if text.endswith(".toml") else RECIPE_DIR / f"{text}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in RECIPE_DIR.glob("*.toml"))
        raise InputError(path, f"no such recipe; known: {', '.join(known)}")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise InputError(path, f"not valid TOML ({err})") from None
    names = {f.name for f in dataclasses.fields(Recipe)} - {"name"}
    missing = sorted(names - set(raw) - OPTIONAL_KEYS)
    unknown = sorted(set(raw) - names)
    if missing or unknown:
        raise InputError(path, f"recipe has missing keys {missing} / unknown keys {unknown}")
    overrides = {k: typed_override(k, v, path) for k, v in raw["overrides"].items()}
    recipe = Recipe(
        name=path.stem, description=str(raw["description"]), config=str(raw["config"]),
        overrides=overrides, variants=tuple(raw["variants"]), iterations=raw["iterations"],
        decoder=raw["decoder"], imagenet_weights=raw["imagenet_weights"], seed=raw["seed"],
        folds=raw["folds"], data=_data_spec(raw["data"], path, "data"),
        test_data=_data_spec(raw["test_data"], path, "test_data") if "test_data" in raw else None,
        **{k: raw[k] for k in ("views", "stack_weights") if k in raw},
        **({"es_prior": float(raw["es_prior"])} if isinstance(raw.get("es_prior"), int)
           and not isinstance(raw["es_prior"], bool) else
           {"es_prior": raw["es_prior"]} if "es_prior" in raw else {}))
    try:
        recipe.net_config()
        for variant in recipe.variants:
            get_variant(variant)
    except ValueError as err:
        raise InputError(path, str(err)) from None
    try:
        recipe.decoding()
    except ValueError as err:
        raise InputError(path, str(err)) from None
    if recipe.folds not in FOLDS:
        raise InputError(path, f"folds {recipe.folds!r} is not one of {FOLDS}")
    if not isinstance(recipe.iterations, int) or recipe.iterations < 1:
        raise InputError(path, f"iterations must be a positive integer, got {recipe.iterations!r}")
    if recipe.imagenet_weights and recipe.config != "zf":
        raise InputError(path, "imagenet_weights fits only config zf (the ImageNet ZF trunk)")
    try:
        recipe.contract()
        if recipe.test_data:
            recipe.contract("test_data")
    except ValueError as err:
        raise InputError(path, str(err)) from None
    if recipe.net_config().train_roll and recipe.data.label != "cycle":
        raise InputError(path, "train_roll needs 'cycle' labels (a rolled 'paper' label is not "
                               "Eq. 4 of the rolled sequence)")
    return recipe


def recipe_names() -> list[str]:
    """Every recipe in recipes/."""
    return sorted(p.stem for p in RECIPE_DIR.glob("*.toml"))
