"""The prepared HDF5 file (docs/data.md, HDF5 layout): a row writer and the readers nets and evaluation use."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from data_prep.errors import InputError

H5_NAME = "sequences.h5"
KEYS = ("frames", "label", "ed", "es", "n_frames", "seq_id", "group")
TEXT_KEYS = ("seq_id", "group")
ID_BYTES = 16                     # fixed-length ASCII ids; anonymous_key gives 16 hex characters


def h5py_module():
    """h5py, imported so that its extension modules bind to h5py's own bundled libhdf5.

    Inside the `caffe` binary the system libhdf5 that libcaffe links is already loaded globally,
    and a plain import makes h5py resolve HDF5 symbols to it ("ValueError: Not a datatype").
    RTLD_DEEPBIND makes each h5py module prefer its own dependencies. Every reader and writer of
    this module imports h5py through here, at first use, never at import time.
    """
    if "h5py" in sys.modules:
        return sys.modules["h5py"]
    flags = sys.getdlopenflags()
    sys.setdlopenflags(flags | os.RTLD_DEEPBIND)
    try:
        import h5py
    finally:
        sys.setdlopenflags(flags)
    return h5py


class SequenceWriter:
    """Appends PreparedRows to sequences.h5: frames chunked one row each, uncompressed (fast reads).

    The file's shape comes from the sequence contract, which close() records in the provenance.
    """

    def __init__(self, path, contract):
        self.path = Path(path)
        self.contract = contract
        self.file = h5py_module().File(self.path, "w")
        self.n_rows = 0
        n_steps, size = contract.steps, contract.stored_size
        f = self.file
        f.create_dataset("frames", (0, n_steps, size, size), np.uint8,
                         maxshape=(None, n_steps, size, size), chunks=(1, n_steps, size, size))
        f.create_dataset("label", (0, n_steps), np.float32, maxshape=(None, n_steps),
                         chunks=(256, n_steps))
        for key in ("ed", "es", "n_frames"):
            f.create_dataset(key, (0,), np.int16, maxshape=(None,), chunks=(1024,))
        for key in TEXT_KEYS:
            f.create_dataset(key, (0,), f"S{ID_BYTES}", maxshape=(None,), chunks=(1024,))

    def append(self, row) -> int:
        """Write one row; returns its index."""
        i = self.n_rows
        for key in KEYS:
            self.file[key].resize(i + 1, axis=0)
        self.file["frames"][i] = row.frames
        self.file["label"][i] = row.label
        self.file["ed"][i], self.file["es"][i], self.file["n_frames"][i] = row.ed, row.es, row.n_frames
        for key in TEXT_KEYS:
            value = getattr(row, key)
            if len(value) > ID_BYTES or not value.isascii():
                raise ValueError(f"{key} {value!r} is not an ASCII id of <= {ID_BYTES} characters")
            self.file[key][i] = value.encode("ascii")
        self.n_rows += 1
        return i

    def close(self, provenance: dict) -> None:
        """Record how the file was made, the sequence contract included (JSON attribute), and close it."""
        provenance = {**provenance, "contract": self.contract.to_dict()}
        self.file.attrs["provenance"] = json.dumps(provenance, sort_keys=True)
        self.file.close()

    def abort(self) -> None:
        """Close without provenance (the caller deletes the temporary folder)."""
        if self.file.id.valid:
            self.file.close()


def h5_path(path_or_dir) -> Path:
    path = Path(path_or_dir)
    return path / H5_NAME if path.is_dir() else path


def _text(values) -> list[str]:
    return [v.decode("ascii") if isinstance(v, bytes) else str(v) for v in values]


def load_provenance(path_or_dir) -> dict:
    """Only the provenance of a prepared file (source, parameters, counts), without its arrays."""
    path = h5_path(path_or_dir)
    try:
        with h5py_module().File(path, "r") as f:
            return json.loads(f.attrs.get("provenance", "{}"))
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot read the provenance of a prepared file ({exc})") from None


def load_prepared(path_or_dir) -> dict:
    """Every dataset of a prepared file as arrays (seq_id/group as str lists) plus 'provenance' (dict)."""
    path = h5_path(path_or_dir)
    if not path.is_file():
        raise InputError(path, "prepared HDF5 file not found")
    try:
        with h5py_module().File(path, "r") as f:
            out = {k: (_text(f[k][()]) if k in TEXT_KEYS else f[k][()]) for k in KEYS}
            out["provenance"] = json.loads(f.attrs.get("provenance", "{}"))
    except (OSError, KeyError) as exc:
        raise InputError(path, f"not a prepared sequences file ({exc})") from None
    return out


def read_list(list_file) -> list[tuple[Path, int]]:
    """A split list file's (h5 path, row) pairs; h5 paths in it are relative to the list file."""
    list_file = Path(list_file)
    if not list_file.is_file():
        raise InputError(list_file, "split list not found")
    entries = []
    for line_no, line in enumerate(list_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise InputError(list_file, f"line {line_no}: expected '<h5 file> <row>', got {line!r}")
        entries.append((list_file.parent / parts[0], int(parts[1])))
    if not entries:
        raise InputError(list_file, "split list is empty")
    return entries


def load_rows(list_file, keys=KEYS) -> dict:
    """The rows a list file names, in list order: frames, label, ed, es, n_frames, seq_id, group
    (or only `keys` of them)."""
    entries = read_list(list_file)
    by_file: dict[Path, list[int]] = {}
    for h5_file, row in entries:
        by_file.setdefault(h5_file, []).append(row)
    fetched = {}
    for h5_file, rows in by_file.items():
        if not h5_file.is_file():
            raise InputError(h5_file, f"named in {list_file} but not found")
        with h5py_module().File(h5_file, "r") as f:
            n = f["frames"].shape[0]
            for row in sorted(set(rows)):
                if row >= n:
                    raise InputError(list_file, f"row {row} beyond the {n} rows of {h5_file.name}")
                fetched[(h5_file, row)] = {k: f[k][row] for k in keys}
    out = {}
    for k in keys:
        values = [fetched[e][k] for e in entries]
        out[k] = _text(values) if k in TEXT_KEYS else np.stack(values)
    return out
