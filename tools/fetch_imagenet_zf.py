"""Fetch the ImageNet ZF model of the Faster R-CNN releases (imagenet_models.tgz -> ZF.v2.caffemodel), md5-checked.

    python -m tools.fetch_imagenet_zf                       # download, verify, extract
    python -m tools.fetch_imagenet_zf --from imagenet_models.tgz   # or a local copy of the archive
    python -m tools.fetch_imagenet_zf --from ZF.v2.caffemodel      # or the caffemodel itself
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from data_prep.errors import InputError

# py-faster-rcnn, data/scripts/fetch_imagenet_models.sh
URL = "https://dl.dropbox.com/s/gstw7122padlf0l/imagenet_models.tgz?dl=0"
MD5 = "ed34ca912d6782edfb673a8c3a0bda6d"
MEMBER = "ZF.v2.caffemodel"
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "data" / "imagenet" / MEMBER
FC6_SHAPE = (4096, 9216)   # fc6 of ZF on a 6 x 6 x 256 pool5 (models/config.py, ZF)


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, dest: Path) -> None:
    """Stream url to dest; any network problem becomes an InputError naming the url."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response, open(dest, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise InputError(url, f"download failed ({reason}); fetch it on a machine with internet "
                              "and pass --from imagenet_models.tgz") from None


def check_archive(path: Path) -> None:
    """The archive's md5 must be the release's."""
    got = md5sum(path)
    if got != MD5:
        raise InputError(path, f"md5 {got} is not the release's {MD5} (corrupt or wrong file)")


def extract_member(archive: Path, dest: Path) -> None:
    """Copy ZF.v2.caffemodel out of the archive to dest."""
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith("/" + MEMBER)]
        if not members:
            raise InputError(archive, f"no {MEMBER} inside")
        with tar.extractfile(members[0]) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)


def blob_shape(blob) -> tuple:
    if blob.shape.dim:
        return tuple(blob.shape.dim)
    return tuple(d for d in (blob.num, blob.channels, blob.height, blob.width) if d > 1) or (1,)


def check_caffemodel(path: Path) -> None:
    """The file parses as a Caffe model with conv1..fc7 and fc6 of 4096 x 9216 (V1 or V2 layers)."""
    from caffe.proto import caffe_pb2
    net = caffe_pb2.NetParameter()
    try:
        net.ParseFromString(path.read_bytes())
    except Exception as err:   # protobuf raises DecodeError and others for a non-model file
        raise InputError(path, f"not a caffemodel ({type(err).__name__})") from None
    layers = {layer.name: layer for layer in list(net.layer) + list(net.layers) if layer.blobs}
    missing = [n for n in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7") if n not in layers]
    if missing:
        raise InputError(path, f"no learned blobs for {missing}: not the ImageNet ZF model")
    shape = blob_shape(layers["fc6"].blobs[0])
    if tuple(d for d in shape if d > 1) != FC6_SHAPE:
        raise InputError(path, f"fc6 is {shape}, expected {FC6_SHAPE} (6 x 6 x 256 pool5)")


def fetch(out: Path = DEFAULT_OUT, source: Path | None = None, force: bool = False, url: str = URL) -> Path:
    """Put a verified ZF.v2.caffemodel at out, from the release URL or a local archive/caffemodel."""
    out = Path(out).resolve()
    if out.exists() and not force:
        raise InputError(out, "exists; pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".fetch.") as tmp:
        staged = Path(tmp) / MEMBER
        if source is not None and Path(source).suffix == ".caffemodel":
            if not Path(source).is_file():
                raise InputError(source, "file not found")
            shutil.copyfile(source, staged)
        else:
            archive = Path(source) if source is not None else Path(tmp) / "imagenet_models.tgz"
            if source is None:
                print(f"downloading {url}", flush=True)
                download(url, archive)
            elif not archive.is_file():
                raise InputError(archive, "file not found")
            check_archive(archive)               # right after download, before using it
            extract_member(archive, staged)
        check_caffemodel(staged)
        os.replace(staged, out)
    return out


def main(argv=None) -> int:
    """CLI; failures print one line and exit 1."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", type=Path, help="local imagenet_models.tgz or ZF.v2.caffemodel")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"destination (default {DEFAULT_OUT})")
    parser.add_argument("--force", action="store_true", help="replace an existing file")
    args = parser.parse_args(argv)
    try:
        path = fetch(args.out, args.source, args.force)
    except InputError as err:
        print(f"fetch_imagenet_zf: {err}", file=sys.stderr)
        return 1
    print(f"ImageNet ZF weights: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
