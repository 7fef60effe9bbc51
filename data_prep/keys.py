"""Keyed anonymous identities: HMAC-SHA256 under a secret kept outside every output.

A sequence or patient key (`data_prep.sequence.anonymous_key`) is a prefix of
HMAC-SHA256(secret, parts). Without the secret nobody can confirm a guessed PatientID, however
short: an unkeyed hash of a 6-digit ID is found by trying the million candidates.

The secret: 32 random bytes, hex, in one file, created with mode 0600 on first use.
    location: $TEMPREG_SECRET_FILE if set, else $XDG_CONFIG_HOME/tempregnet/identity.key,
              else ~/.config/tempregnet/identity.key
Keys made under one secret match only keys made under the same secret: machines that must
produce the same keys (workers of one cluster, a team comparing per-sequence outputs) point
TEMPREG_SECRET_FILE at one copy. Losing the file only means new keys for new runs.

What must be the same on every machine (patient-level folds) is ordered by `public_order_key`,
which never leaves memory (see data_prep.splits.assign_folds).
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from functools import lru_cache
from pathlib import Path

from data_prep.errors import InputError

SECRET_ENV = "TEMPREG_SECRET_FILE"
SECRET_BYTES = 32
KEY_LENGTH = 16           # hex characters (64 bits): no collision among millions of sequences
SEPARATOR = "\x1f"        # unit separator: ("a", "bc") and ("ab", "c") hash differently


def secret_path() -> Path:
    """Where the secret lives (the environment is read at every call, so tests can move it)."""
    if os.environ.get(SECRET_ENV):
        return Path(os.environ[SECRET_ENV]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "tempregnet" / "identity.key"


def _create(path: Path) -> None:
    """Write a new secret at path, atomically and without replacing one that appeared meanwhile."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(SECRET_BYTES) + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)            # fails if another process created it first: keep theirs
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)


@lru_cache(maxsize=4)
def _secret_at(path: Path) -> bytes:
    if not path.exists():
        _create(path)
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InputError(path, f"identity secret is readable by others (mode "
                               f"{stat.S_IMODE(mode):o}); run: chmod 600 {path}")
    text = path.read_text().strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) < 16:
        raise InputError(path, "identity secret is not a hex string of at least 16 bytes")
    return secret


def secret() -> bytes:
    """The secret bytes, created on first use."""
    return _secret_at(secret_path().resolve())


def keyed_key(*parts: object, length: int = KEY_LENGTH) -> str:
    """Hex prefix of HMAC-SHA256(secret, parts joined); the parts never leave memory."""
    message = SEPARATOR.join(map(str, parts)).encode()
    return hmac.new(secret(), message, hashlib.sha256).hexdigest()[:length]


def public_order_key(*parts: object) -> str:
    """The unkeyed digest that keys were before they were keyed (10 hex characters of SHA-256).

    Guessable, so it is never written: it only orders patients for the fold assignment, which
    keeps the folds of every dataset the same on every machine and the same as before keys were
    keyed."""
    return hashlib.sha256(SEPARATOR.join(map(str, parts)).encode()).hexdigest()[:10]


def fingerprint() -> str:
    """A short public tag of the secret (not the secret): tells whether two processes share it."""
    return hmac.new(secret(), b"tempregnet secret fingerprint", hashlib.sha256).hexdigest()[:12]


def ensure_outside(folder) -> None:
    """Refuse an output folder that holds the secret (an output must never carry it)."""
    key = secret_path().resolve()
    out = Path(folder).resolve()
    if out == key.parent or out in key.parents:
        raise InputError(folder, f"output folder contains the identity secret {key}; "
                                 f"choose another --out or move the secret ({SECRET_ENV})")
