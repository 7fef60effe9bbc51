#!/usr/bin/env bash
# Build BVLC Caffe from source into a cache outside the clone and print its install prefix.
#
#   tools/caffe/build_caffe.sh PYTHON          # PYTHON: the venv interpreter pycaffe is built for
#   CAFFE_SRC=/path/to/caffe ...               # build a local BVLC checkout instead of Debian's source
#   GPU=1 ...                                  # CUDA 13 build (CPU_ONLY=OFF, cuDNN off)
#   GPU=1 CUDA_HOME=/usr/local/cuda-13.0 CUDA_ARCH_BIN="80 90" CUDA_ARCH_PTX=90 ...   (the defaults)
#   BOOST_PYTHON_LIBRARY=/path/libboost_python3XX.so ...   # a Boost.Python Debian lacks (gpu_bundle.sh)
#
# The GPU build needs nvcc 13 (CUDA_HOME, else the nvcc on PATH); cuBLAS and cuRAND with their
# headers come from NVIDIA's PyPI wheels pinned in cuda.lock, installed into the cache.
# The cache key covers the source version, our patches, this script, the Python and numpy
# versions and the GPU switch (with cuda.lock, nvcc's version and the architectures), so a second
# run with the same inputs only prints the prefix.
set -euo pipefail

PYTHON=${1:?usage: build_caffe.sh PYTHON}
PYTHON=$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")   # absolute, venv link kept
GPU=${GPU:-0}
CAFFE_SRC=${CAFFE_SRC:-}
BOOST_PYTHON_LIBRARY=${BOOST_PYTHON_LIBRARY:-}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DEBIAN_VERSION=1.0.0+git20180821.99bd997-8       # BVLC master 99bd997 + Debian's patches
CACHE=${TEMPREG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tempregnet}
JOBS=${JOBS:-$(nproc)}
CUDA_ARCH_BIN=${CUDA_ARCH_BIN:-80 90}   # machine code for A100 (sm_80) and H100/H200 (sm_90)
CUDA_ARCH_PTX=${CUDA_ARCH_PTX:-90}      # PTX that newer chips' drivers compile at load time

die() { echo "build_caffe: $*" >&2; exit 1; }
log() { echo "build_caffe: $*" >&2; }

APT_DEPS=(cmake g++ make patch dpkg-dev libboost-system-dev libboost-thread-dev
          libboost-filesystem-dev libboost-python-dev libprotobuf-dev protobuf-compiler
          libgoogle-glog-dev libgflags-dev libhdf5-dev libopenblas-dev)

install_apt_deps() {
  local missing=()
  for p in "${APT_DEPS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "missing Debian packages: ${missing[*]}; run: sudo apt-get install ${missing[*]}"
  log "installing Debian packages: ${missing[*]}"
  apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2 \
    || die "apt-get install failed for: ${missing[*]}"
}

# Fetch Debian's source package from bullseye through a private apt configuration; the system's
# own sources are untouched and the mirror is the one the machine already uses.
fetch_debian_source() {
  local dest=$1 apt=$1/apt mirror
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$mirror" ] || die "no Debian mirror found in /etc/apt sources; set CAFFE_SRC to a BVLC Caffe checkout instead"
  mkdir -p "$apt/lists/partial" "$apt/parts"
  echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror bullseye main" > "$apt/sources.list"
  local opts=(-q -o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=$apt/parts"
              -o "Dir::State::Lists=$apt/lists" -o "APT::Sandbox::User=root")
  ( cd "$dest" && apt-get "${opts[@]}" update >apt.log 2>&1 \
      && apt-get "${opts[@]}" source --download-only "caffe=$DEBIAN_VERSION" >>apt.log 2>&1 ) \
    || die "could not fetch Debian source package caffe=$DEBIAN_VERSION (bullseye; see $dest/apt.log); set CAFFE_SRC to a BVLC Caffe checkout instead"
  ( cd "$dest" && dpkg-source --skip-patches -x caffe_"$DEBIAN_VERSION".dsc src >>apt.log 2>&1 ) \
    || die "dpkg-source could not unpack caffe_$DEBIAN_VERSION.dsc in $dest"
  local p
  while read -r p; do
    [ -n "$p" ] && patch -s -d "$dest/src" -p1 < "$dest/src/debian/patches/$p"
  done < "$dest/src/debian/patches/series"
}

apply_our_patches() {  # our own patches, each with its reason on its first line
  local src=$1 p
  for p in "$HERE"/patches/*.patch; do
    if patch -s --dry-run -d "$src" -p1 < "$p" >/dev/null 2>&1; then
      patch -s -d "$src" -p1 < "$p"
    elif [ -n "$CAFFE_SRC" ]; then
      log "skipping $(basename "$p"): does not apply to $CAFFE_SRC (already applied?)"
    else
      die "our patch $(basename "$p") no longer applies to caffe=$DEBIAN_VERSION"
    fi
  done
}

"$PYTHON" -c 'import numpy' 2>/dev/null || die "$PYTHON cannot import numpy; create the venv first (make venv)"
read -r PY_VERSION NUMPY_VERSION PY_INCLUDE PY_LIBRARY < <("$PYTHON" - <<'EOF'
import os, sys, sysconfig, numpy
lib = os.path.join(sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY"))
print(sys.version.split()[0], numpy.__version__, sysconfig.get_paths()["include"], lib)
EOF
)
[ -f "$PY_LIBRARY" ] || die "$PYTHON has no shared libpython ($PY_LIBRARY); the caffe binary must embed the same Python as pycaffe"

if [ -n "$CAFFE_SRC" ]; then
  [ -f "$CAFFE_SRC/include/caffe/caffe.hpp" ] || die "CAFFE_SRC=$CAFFE_SRC is not a Caffe checkout (no include/caffe/caffe.hpp)"
  SOURCE_ID="local:$(cd "$CAFFE_SRC" && (git rev-parse HEAD 2>/dev/null || pwd))"
else
  SOURCE_ID="debian:$DEBIAN_VERSION"
fi
GPU_ID=""
if [ "$GPU" = 1 ]; then
  # The toolkit root: CUDA_HOME, else /usr/local/cuda, else where nvcc really lives (an nvcc on
  # PATH may be a wrapper script or a link, so its folder is not always the toolkit's).
  if [ -z "${CUDA_HOME:-}" ]; then
    for c in /usr/local/cuda "$(dirname "$(readlink -f "$(command -v nvcc || echo /nonexistent)")")/.."; do
      [ -x "$c/bin/nvcc" ] && [ -f "$c/include/cuda_runtime.h" ] && { CUDA_HOME=$(cd "$c" && pwd -P); break; }
    done
  fi
  [ -n "${CUDA_HOME:-}" ] && [ -x "$CUDA_HOME/bin/nvcc" ] && [ -f "$CUDA_HOME/include/cuda_runtime.h" ] \
    || die "GPU=1 needs a CUDA 13 toolkit: set CUDA_HOME (no bin/nvcc and include/cuda_runtime.h found)"
  NVCC=$CUDA_HOME/bin/nvcc
  NVCC_VERSION=$("$NVCC" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')
  [ "${NVCC_VERSION%%.*}" = 13 ] || die "GPU=1 is made for CUDA 13; $NVCC is release ${NVCC_VERSION:-unknown}"
  GPU_ID="nvcc$NVCC_VERSION arch[$CUDA_ARCH_BIN|$CUDA_ARCH_PTX] $(sha256sum < "$HERE/cuda.lock" | cut -c1-12)"
fi
KEY=$( { echo "$SOURCE_ID py$PY_VERSION numpy$NUMPY_VERSION gpu$GPU $GPU_ID $BOOST_PYTHON_LIBRARY"; cat "$HERE"/patches/*.patch "$0"; } \
       | sha256sum | cut -c1-12)
PREFIX=$CACHE/caffe-$KEY
if [ -f "$PREFIX/.complete" ]; then
  echo "$PREFIX"
  exit 0
fi

install_apt_deps
WORK=$(mktemp -d "${TMPDIR:-/tmp}/caffe-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
log "building Caffe ($SOURCE_ID, Python $PY_VERSION, numpy $NUMPY_VERSION, GPU=$GPU) into $PREFIX"
if [ -n "$CAFFE_SRC" ]; then
  cp -a "$CAFFE_SRC" "$WORK/src"
else
  fetch_debian_source "$WORK"
fi
apply_our_patches "$WORK/src"

# cuBLAS and cuRAND (headers and libraries) from the pinned wheels, once per lock file, with the
# unversioned .so links a -dev package would add (FindCUDA looks for libcublas.so).
install_cuda_libs() {
  local dest=$CACHE/cuda-libs-$(sha256sum < "$HERE/cuda.lock" | cut -c1-12) f
  if [ ! -f "$dest/.complete" ]; then
    log "installing CUDA libraries from cuda.lock into $dest"
    rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
    "$PYTHON" -m pip install -q --no-deps --no-compile --target "$dest.tmp" -r "$HERE/cuda.lock" >&2 \
      || die "pip could not install the CUDA libraries of $HERE/cuda.lock"
    for f in "$dest.tmp"/nvidia/cu13/lib/lib*.so.*; do ln -sf "$(basename "$f")" "${f%.so.*}.so"; done
    touch "$dest.tmp/.complete" && rm -rf "$dest" && mv "$dest.tmp" "$dest"
  fi
  CUDA_LIBS=$dest/nvidia/cu13
  [ -f "$CUDA_LIBS/include/cublas_v2.h" ] && [ -f "$CUDA_LIBS/lib/libcurand.so" ] \
    || die "$dest lacks cuBLAS/cuRAND headers or libraries (cuda.lock changed layout?)"
}

CPU_ONLY=ON
USE_OPENMP=ON       # patch 0015's CPU layer loops on all cores; the GPU build leaves them on one
GPU_FLAGS=()
if [ "$GPU" = 1 ]; then
  install_cuda_libs
  CPU_ONLY=OFF
  USE_OPENMP=OFF
  export PATH=$CUDA_HOME/bin:$PATH
  GPU_FLAGS=(-DCUDA_TOOLKIT_ROOT_DIR="$CUDA_HOME" -DCUDA_ARCH_NAME=Manual
             -DCUDA_ARCH_BIN="$CUDA_ARCH_BIN" -DCUDA_ARCH_PTX="$CUDA_ARCH_PTX"
             -DCMAKE_LIBRARY_PATH="$CUDA_LIBS/lib" -DCUDA_NVCC_FLAGS="-I$CUDA_LIBS/include"
             -DCMAKE_CXX_FLAGS="-isystem $CUDA_LIBS/include")
fi
PY_FLAGS=()
if [ -n "$BOOST_PYTHON_LIBRARY" ]; then
  [ -f "$BOOST_PYTHON_LIBRARY" ] || die "BOOST_PYTHON_LIBRARY=$BOOST_PYTHON_LIBRARY does not exist"
  PY_NODOT=$(echo "${PY_VERSION%.*}" | tr -d .)
  PY_FLAGS=(-DBoost_PYTHON${PY_NODOT}_LIBRARY_RELEASE="$BOOST_PYTHON_LIBRARY")
fi
mkdir -p "$WORK/build"
( cd "$WORK/build" && cmake ../src -DCMAKE_BUILD_TYPE=Release -DCPU_ONLY=$CPU_ONLY -DUSE_CUDNN=OFF "${GPU_FLAGS[@]}" "${PY_FLAGS[@]}" \
    -DBLAS=Open -DUSE_OPENMP=$USE_OPENMP -DBUILD_python=ON -DBUILD_python_layer=ON \
    -Dpython_version="${PY_VERSION%.*}" -DBoost_NO_BOOST_CMAKE=ON \
    `# FindBoost module: Boost 1.74's own config does not set the Boost_PYTHON3x_FOUND Caffe reads` \
    -DUSE_OPENCV=OFF -DUSE_LEVELDB=OFF -DUSE_LMDB=OFF -DBUILD_docs=OFF -DBUILD_matlab=OFF \
    -DPYTHON_EXECUTABLE="$PYTHON" -DPYTHON_INCLUDE_DIR="$PY_INCLUDE" -DPYTHON_LIBRARY="$PY_LIBRARY" \
    `# Caffe derives its RPATH from the prefix (cmake/Misc.cmake); link paths add libpython's` \
    -DCMAKE_INSTALL_PREFIX="$PREFIX" -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON \
    > cmake.log 2>&1 ) || die "cmake failed; see the log: $(cat "$WORK/build/cmake.log" | tail -20)"
( cd "$WORK/build" && make -j"$JOBS" caffe pycaffe caffe.bin > make.log 2>&1 ) \
  || die "make failed: $(tail -20 "$WORK/build/make.log")"

# Caffe's CMake falls back to a CPU-only build, with a warning, when it cannot find CUDA: refuse that.
if [ "$GPU" = 1 ] && ! ldd "$WORK"/build/lib/libcaffe.so | grep -q libcudart; then
  die "GPU=1 built Caffe without CUDA (CMake did not find the toolkit at $CUDA_HOME): $(grep -i cuda "$WORK/build/cmake.log" | tail -5)"
fi

# Install by hand: bin/caffe, lib/libcaffe*, python/caffe (pycaffe with _caffe.so and caffe_pb2).
STAGE=$PREFIX.tmp.$$
rm -rf "$STAGE" && mkdir -p "$STAGE/bin" "$STAGE/lib" "$STAGE/python"
cp -a "$WORK"/build/lib/libcaffe* "$STAGE/lib/"
cp "$WORK/build/tools/caffe" "$STAGE/bin/caffe"
cp -r "$WORK/src/python/caffe" "$STAGE/python/caffe"
rm -rf "$STAGE/python/caffe/test"
cp --remove-destination "$(readlink -f "$WORK/src/python/caffe/_caffe.so")" "$STAGE/python/caffe/_caffe.so"
echo "$SOURCE_ID py$PY_VERSION numpy$NUMPY_VERSION gpu$GPU $GPU_ID" > "$STAGE/.complete"
mkdir -p "$CACHE" && rm -rf "$PREFIX" && mv "$STAGE" "$PREFIX"
log "done: $PREFIX"
echo "$PREFIX"
