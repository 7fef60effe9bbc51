"""Keyed identities (data_prep.keys): the secret's life cycle, a planted PatientID that hashing
candidates cannot find, and folds that do not depend on the secret."""
from __future__ import annotations

import hashlib
import hmac
import multiprocessing
import os
import stat

import h5py
import numpy as np
import pytest

from data_prep import keys, prepare
from data_prep.errors import InputError
from data_prep.readers import find_sequences
from data_prep.splits import assign_folds
from data_prep.synthetic import write_dicom_cohort, write_dicom_series

PLANTED_ID = "PX48213"         # a short, guessable PatientID: PX + 5 digits
CANDIDATES = [f"PX{n:05d}" for n in range(100_000)]


@pytest.fixture
def secret_file(tmp_path, monkeypatch):
    """A fresh secret location for one test (the session's is restored afterwards)."""
    path = tmp_path / "config" / "tempregnet" / "identity.key"
    monkeypatch.setenv(keys.SECRET_ENV, str(path))
    keys._secret_at.cache_clear()
    yield path
    keys._secret_at.cache_clear()


def test_secret_created_on_first_use_with_0600(secret_file):
    assert not secret_file.exists()
    key = keys.keyed_key("dicom", "patient", "P1")
    assert secret_file.is_file() and keys.secret_path() == secret_file
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(secret_file.parent.stat().st_mode) == 0o700
    assert len(bytes.fromhex(secret_file.read_text().strip())) == keys.SECRET_BYTES
    keys._secret_at.cache_clear()                      # read back from the file: same key
    assert keys.keyed_key("dicom", "patient", "P1") == key
    assert len(key) == keys.KEY_LENGTH and int(key, 16) >= 0
    # HMAC-SHA256 exactly, parts joined by the unit separator
    expected = hmac.new(bytes.fromhex(secret_file.read_text().strip()),
                        "dicom\x1fpatient\x1fP1".encode(), hashlib.sha256).hexdigest()
    assert key == expected[:keys.KEY_LENGTH]


def test_another_secret_other_keys(secret_file, tmp_path, monkeypatch):
    first = keys.keyed_key("a", 1)
    monkeypatch.setenv(keys.SECRET_ENV, str(tmp_path / "other.key"))
    assert keys.keyed_key("a", 1) != first
    assert keys.fingerprint() != hmac.new(b"", b"", hashlib.sha256).hexdigest()[:12]


def test_readable_secret_is_refused(secret_file):
    keys.secret()
    os.chmod(secret_file, 0o644)
    keys._secret_at.cache_clear()
    with pytest.raises(InputError, match="readable by others"):
        keys.keyed_key("x")


def _key_in_child(_):
    return keys.keyed_key("race")


def test_concurrent_first_use_agrees_on_one_secret(secret_file):
    """Four processes that all find no secret still end up with one and the same."""
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        got = pool.map(_key_in_child, range(8))
    assert len(set(got)) == 1 and got[0] == keys.keyed_key("race")
    assert [p.name for p in secret_file.parent.iterdir()] == ["identity.key"]   # no temp left


def test_output_folder_holding_the_secret_is_refused(secret_file, tmp_path):
    keys.secret()
    with pytest.raises(InputError, match="identity secret"):
        keys.ensure_outside(secret_file.parent.parent)
    keys.ensure_outside(tmp_path / "elsewhere")


def _old_key(*parts) -> str:
    """The unkeyed key the code wrote before (SHA-256 of the parts, 10 hex characters)."""
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:10]


def test_planted_patient_id_cannot_be_found_without_the_secret(secret_file, tmp_path):
    """An attacker holds the prepared HDF5 and knows the ID format (PX + 5 digits) and how keys
    are made: hashing all 100,000 candidates finds the planted ID under the old unkeyed scheme
    and with the secret, and finds nothing without it."""
    frames = np.random.default_rng(0).integers(0, 400, (12, 24, 24)).astype(float)
    frames += 50 * np.sin(np.arange(12) * 2 * np.pi / 12)[:, None, None]
    write_dicom_series(tmp_path / "study", frames, series_uid="1.2.826.0.1.77",
                       slice_location=0.0, patient_id=PLANTED_ID)
    out = tmp_path / "prepared"
    assert prepare.main(["--source", "dicom", str(tmp_path / "study"), str(out), "--size", "16",
                         "--workers", "1"]) == 0
    with h5py.File(out / "sequences.h5") as f:
        (group,) = {g.decode() for g in f["group"][:]}
    written = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    assert PLANTED_ID.encode() not in written

    def search(make_key):
        return [c for c in CANDIDATES if make_key(c) == group]

    # The old scheme gave itself away: its key of the planted ID is found among the candidates.
    old = _old_key("dicom", "patient", PLANTED_ID)
    assert [c for c in CANDIDATES if _old_key("dicom", "patient", c) == old] == [PLANTED_ID]
    # The written key: the same search without the secret finds nothing, at any prefix length
    # and with a guessed (empty) key; with the secret it finds exactly the planted ID.
    full = lambda c: hashlib.sha256(f"dicom\x1fpatient\x1f{c}".encode()).hexdigest()  # noqa: E731
    assert search(lambda c: full(c)[:len(group)]) == []
    assert search(lambda c: hmac.new(b"", f"dicom\x1fpatient\x1f{c}".encode(),
                                     hashlib.sha256).hexdigest()[:len(group)]) == []
    assert search(lambda c: keys.keyed_key("dicom", "patient", c)) == [PLANTED_ID]
    assert secret_file.read_text().strip().encode() not in written


def _fold_of_rows(folder, k):
    rows = {}
    for f in range(k):
        for line in (folder / f"fold{f}_test.txt").read_text().splitlines():
            rows[int(line.split()[1])] = f
    return rows


def test_folds_do_not_depend_on_the_secret(secret_file, tmp_path, monkeypatch):
    """Two secrets: other keys, the same fold lists, and those are the folds the unkeyed keys of
    before gave (assign_folds over the old keys, computed here independently)."""
    cohort = tmp_path / "cohort"
    write_dicom_cohort(cohort, 5, seed=3, size=32)
    outs = []
    for name in ("a", "b"):
        monkeypatch.setenv(keys.SECRET_ENV, str(tmp_path / f"secret-{name}"))
        out = tmp_path / f"prep-{name}"
        assert prepare.main(["--source", "dicom", str(cohort), str(out), "--size", "16",
                             "--folds", "3", "--workers", "1"]) == 0
        outs.append(out)
    groups = [[g.decode() for g in h5py.File(o / "sequences.h5")["group"][:]] for o in outs]
    assert set(groups[0]).isdisjoint(groups[1])                      # keys differ ...
    for f in range(3):                                               # ... the folds do not
        for part in ("test", "train"):
            name = f"fold{f}_{part}.txt"
            assert (outs[0] / name).read_text() == (outs[1] / name).read_text()
    found, problems = find_sequences("dicom", cohort)
    assert not problems
    patients = [item.images[0].patient for item in found]            # the rows, in order
    old_groups = [_old_key("dicom", "patient", p) for p in patients]
    assert [item.group_order for item in found] == old_groups
    old_fold = assign_folds(old_groups, 3, 0)
    assert _fold_of_rows(outs[0], 3) == {r: old_fold[g] for r, g in enumerate(old_groups)}
