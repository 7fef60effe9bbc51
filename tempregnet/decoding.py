"""How ED and ES are read from a trained net's curves: one Decoding per recipe.

A recipe names its decoding (recipes/<name>.toml: `decoder`, and optionally `views`,
`stack_weights`, `es_prior`), chosen on a validation split (tools.decoding_study); every run and
model records it (settings.json), and tools.detect, tools.cohort and tools.evaluate_afd use the
model's unless a flag overrides one part. The paper's decoding is Decoding("extrema"). Nothing here
changes training: a run trained under one decoding is the same run under another.
"""
from __future__ import annotations

from dataclasses import dataclass

from tempregnet.labels import DECODERS

VIEWS = ("one", "tta")            # one forward pass, or the mean curve over the training symmetries
STACK_WEIGHTS = ("equal", "fit")  # how a stack's standardised curves are averaged (inference.decode_stacks)
KEYS = ("decoder", "views", "stack_weights", "es_prior")     # the recipe keys that are decoding


@dataclass(frozen=True)
class Decoding:
    """decoder: labels.DECODERS; views: VIEWS ("tta": inference.augmentation_views); stack_weights:
    STACK_WEIGHTS, used where a stack is decoded as one; es_prior: weight of labels.SystolePrior
    (0: none) in the fit decoders."""
    decoder: str = "fit"
    views: str = "one"
    stack_weights: str = "equal"
    es_prior: float = 0.0

    def __post_init__(self):
        for value, allowed, what in ((self.decoder, DECODERS, "decoder"),
                                     (self.views, VIEWS, "views"),
                                     (self.stack_weights, STACK_WEIGHTS, "stack_weights")):
            if value not in allowed:
                raise ValueError(f"{what} {value!r} is not one of {allowed}")
        if isinstance(self.es_prior, bool) or not isinstance(self.es_prior, (int, float)) \
                or not self.es_prior >= 0:
            raise ValueError(f"es_prior must be a number >= 0, got {self.es_prior!r}")

    @property
    def augment(self) -> bool:
        """Whether the curve is the mean over test-time views."""
        return self.views == "tta"

    def note(self) -> str:
        """What this decoding adds to the paper's reading of one curve (nothing: ""), as a clause
        that starts with "; "."""
        parts = []
        if self.augment:
            parts.append("the curve is the mean over the training symmetries' test-time views")
        if self.es_prior:
            parts.append(f"systole prior weight {self.es_prior:g} (labels.SystolePrior)")
        if self.stack_weights != "equal":
            parts.append(f"per stack, each slice weighted by its {self.stack_weights} share")
        return "".join("; " + part for part in parts)

    def describe(self) -> dict:
        """JSON-ready fields (written with every detection and evaluation)."""
        return {"decoder": self.decoder, "views": self.views, "stack_weights": self.stack_weights,
                "es_prior": float(self.es_prior)}


    def recipe_lines(self) -> str:
        """This decoding as a recipe's top-level TOML lines (in place of its `decoder` line)."""
        return "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in self.describe().items())


def decoding_of(recorded: dict, decoder=None, views=None, stack_weights=None,
                es_prior=None) -> Decoding:
    """Each part given here, else the one recorded (a recipe dict or a model's description), else
    Decoding's default."""
    given = {"decoder": decoder, "views": views, "stack_weights": stack_weights,
             "es_prior": es_prior}
    return Decoding(**{k: given[k] if given[k] is not None else recorded[k]
                       for k in KEYS if given[k] is not None or recorded.get(k) is not None})
