"""The sequence contract: what one prepared row is (steps, stored size, crop, label, ROI, intensity).

`data_prep.prepare` writes it once into the HDF5 provenance ("contract"); every consumer (the data
layer, training, inference, the learning curve) reads it back through `read_contract` or
`read_list_contract` here and nothing else. Reading never fills in a missing field: a file without
the contract, or with another one than the consumer expects, is one clear error.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from data_prep.errors import InputError
from tempregnet.labels import CONVENTIONS

PROVENANCE_KEY = "contract"
# "centre square": the central roi of the frame (the paper's whole frame at roi 1); with
# mm_per_px, "lv": around the LV found in the images (data_prep.heart_crop), "image centre":
# around the image centre.
CROPS = ("centre square", "lv", "image centre")


@dataclass(frozen=True)
class SequenceContract:
    """How the stored frames and labels of a prepared dataset were made. To add a fact (say
    `mm_per_px`), add one field here with the value new data is prepared with."""
    steps: int                 # T: time steps per cycle; the LSTM is unrolled over them
    stored_size: int           # S: stored frames are S x S uint8; nets crop C <= S from them
    label: str                 # Eq. 4 convention of the labels (tempregnet.labels.CONVENTIONS)
    roi: float                 # central fraction of the frame's square field of view kept
    crop: str = "centre square"                 # how the square was cut from the frame (CROPS)
    # Physical scale (docs/scale-and-crop.md): None, the scanner's pixels (the central roi of
    # the square field of view, as the paper); else every stored pixel is this many mm, the
    # stored square mm_per_px x stored_size mm around the crop centre, on every scanner.
    mm_per_px: float | None = None
    squash_percentiles: tuple = (1.0, 99.0)     # per-sequence grey range mapped onto 0..255
    percentile_stride: int = 2                  # percentiles from every 2nd row and column
    time: str = "cyclic linear at step_positions(n_frames, steps)"
    resize: str = "cv2 INTER_AREA (shrink) / INTER_LINEAR (enlarge)"

    def __post_init__(self):
        if not isinstance(self.steps, int) or self.steps < 2:
            raise ValueError(f"contract: steps must be an integer >= 2, got {self.steps!r}")
        if not isinstance(self.stored_size, int) or self.stored_size < 1:
            raise ValueError(f"contract: stored_size must be a positive integer, got {self.stored_size!r}")
        if self.label not in CONVENTIONS:
            raise ValueError(f"contract: label must be one of {CONVENTIONS}, got {self.label!r}")
        if not 0 < self.roi <= 1:
            raise ValueError(f"contract: roi must be in (0, 1], got {self.roi!r}")
        if self.crop not in CROPS:
            raise ValueError(f"contract: crop must be one of {CROPS}, got {self.crop!r}")
        if self.mm_per_px is not None:
            if not isinstance(self.mm_per_px, (int, float)) or not self.mm_per_px > 0:
                raise ValueError(f"contract: mm_per_px must be > 0 or None, got {self.mm_per_px!r}")
            if self.roi != 1.0:
                raise ValueError("contract: mm_per_px replaces roi (keep roi = 1)")
            object.__setattr__(self, "mm_per_px", float(self.mm_per_px))
        if (self.crop == "centre square") != (self.mm_per_px is None):
            raise ValueError(f"contract: crop {self.crop!r} goes with "
                             f"{'no ' if self.crop == 'centre square' else ''}mm_per_px")
        object.__setattr__(self, "squash_percentiles", tuple(float(p) for p in self.squash_percentiles))

    @property
    def physical(self) -> bool:
        """True when stored pixels are a fixed size in mm (mm_per_px given)."""
        return self.mm_per_px is not None

    @property
    def field_mm(self) -> float | None:
        """Side of the stored square in mm (physical contracts only)."""
        return None if self.mm_per_px is None else self.mm_per_px * self.stored_size

    def replace(self, **changes) -> "SequenceContract":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON-ready fields."""
        out = dataclasses.asdict(self)
        out["squash_percentiles"] = list(self.squash_percentiles)
        return out

    @classmethod
    def from_dict(cls, fields: dict, where) -> "SequenceContract":
        """The contract recorded in `fields`; missing or unknown keys are an InputError at where."""
        if not isinstance(fields, dict):
            raise InputError(where, "no sequence contract recorded (prepared by an older version? "
                                    "re-run data_prep.prepare)")
        names = {f.name for f in dataclasses.fields(cls)}
        missing, unknown = sorted(names - set(fields)), sorted(set(fields) - names)
        if missing or unknown:
            raise InputError(where, f"sequence contract has missing fields {missing} / unknown "
                                    f"fields {unknown} (re-run data_prep.prepare)")
        try:
            return cls(**fields)
        except (TypeError, ValueError) as err:
            raise InputError(where, str(err)) from None

    def differences(self, other: "SequenceContract", fields=None) -> dict:
        """{field: (self's, other's)} for the fields (default all) where the two differ."""
        names = fields or [f.name for f in dataclasses.fields(self)]
        return {k: (getattr(self, k), getattr(other, k)) for k in names
                if getattr(self, k) != getattr(other, k)}

    def check(self, found: "SequenceContract", where, fields=None, what="expected") -> None:
        """One InputError naming every field in which found differs from this (expected) contract."""
        diff = self.differences(found, fields)
        if diff:
            said = "; ".join(f"{k} {b!r} (the {what} {a!r})" for k, (a, b) in diff.items())
            raise InputError(where, f"prepared data does not match: {said}")


def read_contract(path_or_dir) -> SequenceContract:
    """The contract of one prepared sequences.h5 (or of the folder holding it)."""
    from data_prep.hdf5 import h5_path, load_provenance
    path = h5_path(path_or_dir)
    return SequenceContract.from_dict(load_provenance(path).get(PROVENANCE_KEY), path)


def read_list_contract(list_file) -> SequenceContract:
    """The one contract shared by every prepared file a split list names."""
    from data_prep.hdf5 import read_list
    files = sorted({h5 for h5, _ in read_list(list_file)})
    found = {read_contract(h5) for h5 in files}
    if len(found) != 1:
        raise InputError(list_file, "names prepared files with different sequence contracts")
    return found.pop()


def read_contract_file(path) -> SequenceContract:
    """A contract saved as JSON (contract.json of a run or model folder)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "sequence contract not found")
    try:
        fields = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(path, f"unreadable JSON ({err.msg})") from None
    return SequenceContract.from_dict(fields, path)
