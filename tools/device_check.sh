#!/usr/bin/env bash
# The whole GPU-machine run in one call (docs/caffe.md, "GPU"): unpack the bundle that
# `make gpu-bundle` wrote, point the loader at it and at the machine's own CUDA libraries, then
# `python -m tools.device_check`. From the repository root:
#
#   tools/device_check.sh OUT_DIR [BUNDLE]     # BUNDLE: device-bundle/caffe-gpu-py312.tar.xz
#
# Needs: an NVIDIA driver, a Python 3.12 (`python3`, or PYTHON=...) whose packages include numpy,
# h5py, scipy, opencv and the NVIDIA cuBLAS/cuRAND/CUDA-runtime wheels (as PyTorch's venv does).
set -euo pipefail
OUT=${1:?usage: device_check.sh OUT_DIR [BUNDLE]}
BUNDLE=${2:-device-bundle/caffe-gpu-py312.tar.xz}
PYTHON=${PYTHON:-python3}
W=${TMPDIR:-/tmp}/tempregnet-gpu
mkdir -p "$OUT" && rm -rf "$W" && mkdir -p "$W"
tar -xJf "$BUNDLE" -C "$W"
echo "bundle: $(cat "$W/caffe/BUILD")"

# CUDA libraries: the directories of the Python environment's nvidia-* wheels that hold them.
cuda_dirs=$("$PYTHON" - <<'EOF'
import glob, os, site
roots = site.getsitepackages() + [site.getusersitepackages()]
want = ("libcudart.so.13", "libcublas.so.13", "libcurand.so.10")
dirs = {os.path.dirname(p) for r in roots for w in want for p in glob.glob(f"{r}/nvidia/**/{w}", recursive=True)}
print(":".join(sorted(dirs)))
EOF
)
[ -n "$cuda_dirs" ] || { echo "device_check: no cuBLAS/cuRAND/CUDA runtime wheels in $PYTHON's environment" >&2; exit 1; }
# libpython: the machine's own where it has one, else the bundle's (same 3.12 ABI).
pylibdir=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')
pylib=$W/pylib
[ -f "$pylibdir/libpython3.12.so.1.0" ] && pylib=$pylibdir
export LD_LIBRARY_PATH=$W/caffe/lib:$W/lib:$cuda_dirs:$pylib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

# Wheels the environment lacks, into a private folder; pycaffe and the project on the path.
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$W/site" "$W"/wheels/*.whl
site_dirs=$("$PYTHON" -c 'import site; print(":".join(site.getsitepackages()))')
export PYTHONPATH=$W/caffe/python:$PWD:$W/site:$site_dirs
# The caffe binary embeds Python: a wrapper gives it this interpreter's standard library.
home=$("$PYTHON" -c 'import sys; print(sys.base_prefix)')
mkdir -p "$W/bin"
printf '#!/bin/sh\nPYTHONHOME="%s" exec "%s" "$@"\n' "$home" "$W/caffe/bin/caffe" > "$W/bin/caffe"
chmod +x "$W/bin/caffe"
export CAFFE_BIN=$W/bin/caffe PYTHONUNBUFFERED=1
"$PYTHON" -c 'import caffe; print("pycaffe:", caffe.__file__)'
"$PYTHON" -m tools.device_check --out "$OUT" "${@:3}"
