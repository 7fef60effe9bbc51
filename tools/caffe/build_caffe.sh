#!/usr/bin/env bash
# Build BVLC Caffe from source into a cache outside the clone and print its install prefix.
#
#   tools/caffe/build_caffe.sh PYTHON          # PYTHON: the venv interpreter pycaffe is built for
#   tools/caffe/build_caffe.sh PYTHON --test   # make caffe-test: build BVLC's gtest suite from the same
#                                              # source, patches and OpenBLAS and run it (CPU tests) twice
#   CAFFE_SRC=/path/to/caffe ...               # build a local BVLC checkout instead of Debian's source
#   GPU=1 ...                                  # CUDA 13 build (CPU_ONLY=OFF, cuDNN off)
#   GPU=1 CUDA_HOME=/usr/local/cuda-13.0 CUDA_ARCH_BIN="80 90" CUDA_ARCH_PTX=90 ...   (the defaults)
#   BOOST_PYTHON_LIBRARY=/path/libboost_python3XX.so ...   # a Boost.Python Debian lacks (gpu_bundle.sh)
#
# OpenBLAS is our own build (build_openblas.sh, cached beside Caffe), not Debian's.
# The GPU build needs nvcc 13 (CUDA_HOME, else the nvcc on PATH); cuBLAS and cuRAND with their
# headers come from NVIDIA's PyPI wheels pinned in cuda.lock, installed into the cache.
# The cache key covers the source version, our patches, this script, the OpenBLAS build, the
# Python and numpy versions and the GPU switch (with cuda.lock, nvcc's version and the
# architectures), so a second run with the same inputs only prints the prefix.
set -euo pipefail

PYTHON=${1:?usage: build_caffe.sh PYTHON [--test]}
MODE=${2:-install}
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
[ "$MODE" = install ] || [ "$MODE" = --test ] || die "unknown option $MODE (usage: build_caffe.sh PYTHON [--test])"
DEBIAN_SOURCE_HINT="; set CAFFE_SRC to a BVLC Caffe checkout instead"
# shellcheck source=debian_source.sh
. "$HERE/debian_source.sh"

APT_DEPS=(cmake g++ make patch dpkg-dev libboost-system-dev libboost-thread-dev
          libboost-filesystem-dev libboost-python-dev libprotobuf-dev protobuf-compiler
          libgoogle-glog-dev libgflags-dev libhdf5-dev)

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

# make caffe-test: BVLC's gtest suite (src/caffe/test; CMake's test.testbin, as its `runtest`
# target runs it: shuffled, GPU tests filtered out in a CPU-only build) built in the configured tree,
# run twice: as configured, then with CAFFE_OMP_MIN_WORK=0 (patch 0016) on two OpenMP threads, so
# patch 0015's loops run in parallel on the tests' small blobs. Logs in $CAFFE_TEST_OUT.
run_caffe_tests() {
  local out=${CAFFE_TEST_OUT:-$WORK/test-logs} filter=() status=0 run
  [ "$GPU" = 1 ] || filter=(--gtest_filter=-*GPU*)
  mkdir -p "$out"
  log "building Caffe's tests (test.testbin; make.log in $out)"
  ( cd "$WORK/build" && make -j"$JOBS" test.testbin > "$out/make.log" 2>&1 ) \
    || die "building test.testbin failed: $(tail -20 "$out/make.log")"
  for run in default omp-min-work-0; do
    local env=(OMP_WAIT_POLICY=PASSIVE LD_LIBRARY_PATH="$WORK/build/lib")   # the library just built
    [ "$run" = default ] || env+=(CAFFE_OMP_MIN_WORK=0 OMP_NUM_THREADS=2)
    log "running Caffe's tests ($run: ${env[*]:2}); log in $out/$run.log"
    if ( cd "$WORK/src" && env "${env[@]}" GLOG_minloglevel=2 "$WORK/build/test/test.testbin" \
           --gtest_shuffle "${filter[@]}" > "$out/$run.log" 2>&1 ); then
      echo "caffe-test $run: $(grep -E '^\[  PASSED  \]' "$out/$run.log" | tail -1)"
    else
      status=1
      echo "caffe-test $run: FAILED: $(grep -E '^\[  (PASSED|FAILED)  \]|tests? ran' "$out/$run.log" | tr '\n' ' ')"
    fi
  done
  exit $status
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
install_apt_deps
OPENBLAS=$(JOBS=$JOBS "$HERE/build_openblas.sh")    # its prefix names its own key
OPENBLAS_LIB=$OPENBLAS/lib/libopenblas_tempreg.so
[ -f "$OPENBLAS_LIB" ] && [ -f "$OPENBLAS/include/cblas.h" ] || die "$OPENBLAS lacks libopenblas_tempreg.so or cblas.h"
KEY=$( { echo "$SOURCE_ID py$PY_VERSION numpy$NUMPY_VERSION gpu$GPU $GPU_ID $BOOST_PYTHON_LIBRARY $OPENBLAS"; cat "$HERE"/patches/*.patch "$0"; } \
       | sha256sum | cut -c1-12)
PREFIX=$CACHE/caffe-$KEY
if [ -f "$PREFIX/.complete" ] && [ "$MODE" = install ]; then
  echo "$PREFIX"
  exit 0
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/caffe-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
log "building Caffe ($SOURCE_ID, Python $PY_VERSION, numpy $NUMPY_VERSION, GPU=$GPU) into $PREFIX"
if [ -n "$CAFFE_SRC" ]; then
  cp -a "$CAFFE_SRC" "$WORK/src"
else
  fetch_debian_source "$WORK" bullseye caffe "$DEBIAN_VERSION"
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
    -DBLAS=Open -DOpenBLAS_INCLUDE_DIR="$OPENBLAS/include" -DOpenBLAS_LIB="$OPENBLAS_LIB" -DUSE_OPENMP=$USE_OPENMP -DBUILD_python=ON -DBUILD_python_layer=ON \
    -Dpython_version="${PY_VERSION%.*}" -DBoost_NO_BOOST_CMAKE=ON \
    `# FindBoost module: Boost 1.74's own config does not set the Boost_PYTHON3x_FOUND Caffe reads` \
    -DUSE_OPENCV=OFF -DUSE_LEVELDB=OFF -DUSE_LMDB=OFF -DBUILD_docs=OFF -DBUILD_matlab=OFF \
    -DPYTHON_EXECUTABLE="$PYTHON" -DPYTHON_INCLUDE_DIR="$PY_INCLUDE" -DPYTHON_LIBRARY="$PY_LIBRARY" \
    `# Caffe derives its RPATH from the prefix (cmake/Misc.cmake); link paths add libpython's` \
    -DCMAKE_INSTALL_PREFIX="$PREFIX" -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON \
    > cmake.log 2>&1 ) || die "cmake failed; see the log: $(cat "$WORK/build/cmake.log" | tail -20)"
if [ "$MODE" = --test ]; then
  run_caffe_tests       # (above) builds test.testbin, runs it twice, exits
fi
( cd "$WORK/build" && make -j"$JOBS" caffe pycaffe caffe.bin > make.log 2>&1 ) \
  || die "make failed: $(tail -20 "$WORK/build/make.log")"
LIBS=$(ldd "$WORK"/build/lib/libcaffe.so)    # (not piped into grep -q: pipefail and SIGPIPE)
grep -q "=> $OPENBLAS_LIB" <<< "$LIBS" || die "libcaffe.so does not load $OPENBLAS_LIB: $(grep -i blas <<< "$LIBS")"

# Caffe's CMake falls back to a CPU-only build, with a warning, when it cannot find CUDA: refuse that.
if [ "$GPU" = 1 ] && ! grep -q libcudart <<< "$LIBS"; then
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
