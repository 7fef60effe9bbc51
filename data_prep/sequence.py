"""The one sequence type every reader returns."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from data_prep.keys import keyed_key


@dataclass
class CineSequence:
    """One 2D+t cine sequence (one slice through one cardiac cycle).

    frames: T x H x W float32 in the scanner's units (rescale slope/intercept applied).
    ed, es: 0-based frames, or None when the source carries no labels.
    seq_id, group: anonymous keys (see `anonymous_key`); group is the patient, for splits.
    group_order: the patient's secret-independent order key for the folds (memory only, never
    written; data_prep.keys.public_order_key).
    instances: DICOM InstanceNumber of each frame, when read from DICOM.
    """
    frames: np.ndarray
    seq_id: str
    group: str
    source: str
    ed: int | None = None
    es: int | None = None
    instances: list[int] | None = None
    meta: dict = field(default_factory=dict)   # non-identifying extras (slice index, spacing)
    group_order: str = ""

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])


def anonymous_key(*parts: object) -> str:
    """A keyed hash of identifying parts (paths, UIDs): HMAC under the secret of data_prep.keys,
    so it cannot be found by hashing guesses; the parts never leave memory."""
    return keyed_key(*parts)
