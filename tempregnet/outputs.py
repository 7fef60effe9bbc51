"""The one atomic writer (temp file beside the target, then os.replace) and the no-silent-overwrite check."""
from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path


class OutputExists(Exception):
    """An output file exists and --force was not given."""


def refuse_overwrite(paths, force: bool) -> None:
    """Raise OutputExists naming the first existing path unless force."""
    if force:
        return
    for p in paths:
        if Path(p).exists():
            raise OutputExists(f"{p}: exists; pass --force to overwrite")


def write_bytes_atomic(path, data: bytes) -> Path:
    """Write to a temp file beside path, then os.replace (readers never see half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_text_atomic(path, text: str) -> Path:
    """Atomic UTF-8 text write."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path, obj) -> Path:
    """Atomic JSON write (indented, NaN written as null)."""
    return write_text_atomic(path, json.dumps(_nan_to_none(obj), indent=2) + "\n")


def write_csv_atomic(path, rows: list[dict], columns: list[str]) -> Path:
    """Atomic CSV write of dict rows restricted to columns, in that order."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_text_atomic(path, buf.getvalue())


def save_figure_atomic(fig, path, **kw) -> Path:
    """Atomic PNG write of a matplotlib figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", **kw)
    return write_bytes_atomic(path, buf.getvalue())


def _nan_to_none(obj):
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj
