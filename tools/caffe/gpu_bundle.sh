#!/usr/bin/env bash
# Pack what a bare GPU machine lacks to run this project's Caffe, for the device check
# (tools/device_check.sh; docs/caffe.md, "GPU"):
#
#   tools/caffe/gpu_bundle.sh PY312 [OUT_DIR]     # make gpu-bundle; OUT_DIR defaults to device-bundle/
#
# PY312 is a Python 3.12 with a shared libpython, as the GPU machine's venv is Python 3.12 (pycaffe
# must be built for the interpreter that imports it). The bundle holds:
#   caffe/    the CUDA 13 build of Caffe for that Python (sm_90 + PTX), made by build_caffe.sh;
#   lib/      the shared libraries it needs that are not glibc, libstdc++ or CUDA's (glog, gflags,
#             protobuf, Boost, HDF5, OpenBLAS, ...), copied from this machine, and Boost.Python for
#             3.12 (Debian's Boost 1.74 has Python 3.11 only, so it is built from Debian's source);
#   pylib/    this machine's libpython3.12, used only where the GPU machine has none;
#   wheels/   pure-Python packages the project imports that the machine's venv lacks (pinned from
#             requirements.lock).
# cuBLAS, cuRAND and the CUDA runtime are the GPU machine's own (its PyTorch brings them).
set -euo pipefail

PY312=${1:?usage: gpu_bundle.sh PY312 [OUT_DIR]}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=${2:-$ROOT/device-bundle}
CACHE=${TEMPREG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tempregnet}
BOOST_VERSION=1.74.0+ds1-21            # Debian 12's Boost, whose headers the build uses
LIMIT_MIB=56                           # the device call carries 64 MiB with the repository

die() { echo "gpu_bundle: $*" >&2; exit 1; }
log() { echo "gpu_bundle: $*" >&2; }
# shellcheck source=debian_source.sh
. "$HERE/debian_source.sh"

"$PY312" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null \
  || die "$PY312 is not Python 3.12"
[ "$(dpkg-query -W -f='${Version}' libboost1.74-dev 2>/dev/null)" = "$BOOST_VERSION" ] \
  || die "needs Debian's libboost1.74-dev $BOOST_VERSION (run make caffe first)"

# 1. A venv of that Python with the numpy of requirements.lock (pycaffe's headers and ABI).
VENV=$CACHE/bundle-venv-py312
NUMPY_PIN=$(grep -E '^numpy==' "$ROOT/requirements.lock")
if ! "$VENV/bin/python" -c "import numpy, sys; sys.exit(numpy.__version__ != '${NUMPY_PIN#numpy==}')" 2>/dev/null; then
  log "venv $VENV with $NUMPY_PIN"
  rm -rf "$VENV" && "$PY312" -m venv "$VENV" && "$VENV/bin/pip" install -q "$NUMPY_PIN" >&2
fi

# 2. Boost.Python for 3.12 from Debian's boost1.74 source with Debian's Python patches.
BOOST_PY=$CACHE/boost-python312-$BOOST_VERSION
if [ ! -f "$BOOST_PY/.complete" ]; then
  work=$(mktemp -d "${TMPDIR:-/tmp}/boost-python.XXXXXX")
  log "fetching Debian's boost1.74 $BOOST_VERSION source for Boost.Python"
  download_debian_source "$work" bookworm boost1.74 "$BOOST_VERSION"
  ( cd "$work" && tar -xJf boost1.74_*.orig.tar.xz --wildcards '*/libs/python/src/*' '*/libs/python/include/*' \
      && tar -xJf boost1.74_*.debian.tar.xz && cd boost \
      && for p in python3.10-file python3.10-pep-620 fix-enum python-enum; do
           patch -s -p1 < "../debian/patches/$p.patch"; done ) || die "could not unpack or patch Boost.Python"
  inc=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  mkdir -p "$work/obj"
  find "$work/boost/libs/python/src" -name '*.cpp' -not -path '*/numpy/*' | while read -r src; do
    echo "$src $work/obj/$(echo "${src#"$work"/}" | tr / _).o"
  done | xargs -P "$(nproc)" -n 2 sh -c 'g++ -O2 -fPIC -DNDEBUG -DBOOST_PYTHON_SOURCE -DBOOST_PYTHON_DYN_LINK \
      -DBOOST_ALL_NO_LIB -I"$0/../include" -I"$1" -c "$2" -o "$3"' "$work/boost/libs/python/src" "$inc" \
    || die "Boost.Python did not compile"
  mkdir -p "$BOOST_PY.tmp/lib"
  g++ -shared -Wl,-soname,libboost_python312.so.1.74.0 -o "$BOOST_PY.tmp/lib/libboost_python312.so.1.74.0" "$work"/obj/*.o
  ln -s libboost_python312.so.1.74.0 "$BOOST_PY.tmp/lib/libboost_python312.so"
  touch "$BOOST_PY.tmp/.complete" && rm -rf "$BOOST_PY" && mv "$BOOST_PY.tmp" "$BOOST_PY" && rm -rf "$work"
fi

# 3. Caffe: the same build script, GPU=1, for that venv; machine code for the H200 only.
PREFIX=$(GPU=1 CUDA_ARCH_BIN=${CUDA_ARCH_BIN:-90} CUDA_ARCH_PTX=${CUDA_ARCH_PTX:-90} \
         BOOST_PYTHON_LIBRARY=$BOOST_PY/lib/libboost_python312.so "$HERE/build_caffe.sh" "$VENV/bin/python")

# 4. Gather: Caffe, the libraries it needs beyond glibc/libstdc++/CUDA, libpython, wheels.
STAGE=$(mktemp -d "${TMPDIR:-/tmp}/gpu-bundle.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/caffe" "$STAGE/lib" "$STAGE/pylib" "$STAGE/wheels"
cp -a "$PREFIX/bin" "$PREFIX/lib" "$PREFIX/python" "$STAGE/caffe/"
cp "$PREFIX/.complete" "$STAGE/caffe/BUILD"
find "$STAGE/caffe/python" -name '__pycache__' -prune -exec rm -rf {} +
LD_LIBRARY_PATH=$BOOST_PY/lib ldd "$STAGE/caffe/bin/caffe" "$STAGE/caffe/python/caffe/_caffe.so" \
  | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | sort -u | while read -r name path; do
    case $name in
      libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libstdc++.so*|libgcc_s.so*) ;;
      libcudart.so*|libcublas*.so*|libcurand.so*|libcuda.so*|libcaffe.so*) ;;
      libpython3.12.so*) cp -L "$path" "$STAGE/pylib/$name" ;;
      *) cp -L "$path" "$STAGE/lib/$name" ;;
    esac
  done
grep -q . < <(ls "$STAGE/lib") || die "no libraries gathered (ldd failed?)"
grep -E '^(pydicom|nibabel)==' "$ROOT/requirements.lock" > "$STAGE/wheels/requirements.txt"
"$VENV/bin/pip" download -q --no-deps --only-binary=:all: -d "$STAGE/wheels" -r "$STAGE/wheels/requirements.txt" >&2 \
  || die "pip could not fetch the wheels of $STAGE/wheels/requirements.txt"
strip --strip-unneeded "$STAGE"/lib/*.so* "$STAGE"/pylib/*.so* "$STAGE"/caffe/lib/*.so* \
  "$STAGE"/caffe/bin/caffe "$STAGE"/caffe/python/caffe/_caffe.so 2>/dev/null || true

mkdir -p "$OUT"
tar -C "$STAGE" -cf - . | xz -T0 -6 > "$OUT/caffe-gpu-py312.tar.xz.tmp"
mv "$OUT/caffe-gpu-py312.tar.xz.tmp" "$OUT/caffe-gpu-py312.tar.xz"
size=$(du -m "$OUT/caffe-gpu-py312.tar.xz" | cut -f1)
[ "$size" -le "$LIMIT_MIB" ] || die "bundle is $size MiB, over the $LIMIT_MIB MiB the device call can carry"
log "wrote $OUT/caffe-gpu-py312.tar.xz ($size MiB)"
echo "$OUT/caffe-gpu-py312.tar.xz"
