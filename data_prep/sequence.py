"""The one sequence type every reader returns."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np


@dataclass
class CineSequence:
    """One 2D+t cine sequence (one slice through one cardiac cycle).

    frames: T x H x W float32 in the scanner's units (rescale slope/intercept applied).
    ed, es: 0-based frames, or None when the source carries no labels.
    seq_id, group: anonymous keys (see `anonymous_key`); group is the patient, for splits.
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

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])


def anonymous_key(*parts: object, length: int = 10) -> str:
    """A short stable hash of identifying parts (paths, UIDs); the parts never leave memory."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()
    return digest[:length]
