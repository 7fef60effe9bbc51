#!/usr/bin/env bash
# Build the OpenBLAS that Caffe links, from Debian's source package, into a cache outside the
# clone, and print its install prefix (lib/libopenblas_tempreg.so*, include/cblas.h ...).
#
#   tools/caffe/build_openblas.sh          # called by build_caffe.sh; JOBS=N sets make's -j
#
# Why not Debian 12's libopenblas (0.3.21): it obeys OPENBLAS_CORETYPE, which some workplaces set
# (Haswell) for every process, so on an AVX-512 CPU Caffe ran AVX2 kernels there and AVX-512
# ones elsewhere. This build (docs/caffe.md, "BLAS"):
#   - Debian's openblas 0.3.29 source (trixie; the first release that knows AMD's Zen 5), with
#     the two of Debian's patches that are not about packaging (DEBIAN_PATCHES: an upstream
#     thread-safety fix, and no warning when called next to OpenMP; the others link Debian's
#     external LAPACK and split libblas.so.3, which a CBLAS-only build has no use for), then ours
#     in openblas-patches/ (0001: OPENBLAS_CORETYPE is not read);
#   - DYNAMIC_ARCH with the x86-64 cores whose GEMM kernels differ for a recent CPU: Haswell and
#     Zen (AVX2), SkylakeX (AVX-512), Cooperlake (AVX-512 + BF16), and Prescott for anything
#     older; the one that runs is chosen by cpuid when the library loads, so the same build
#     runs the widest kernels it has on any x86-64 machine (and in the GPU bundle);
#   - CBLAS only (Caffe calls nothing else), single and double precision, no LAPACK, no Fortran;
#     pthreads, as Debian's (Caffe's own OpenMP loops sleep between GEMMs: patch 0015);
#   - library name libopenblas_tempreg, so it never shares a soname with another OpenBLAS that
#     the same process might load (Debian's libopenblas.so.0).
# The cache key hashes the Debian version, the patches (Debian's named, ours), the make options
# and this script.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${TEMPREG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tempregnet}
JOBS=${JOBS:-$(nproc)}
SUITE=trixie
DEBIAN_VERSION=0.3.29+ds-3
DEBIAN_PATCHES=(39eb43d4410d0745ca2c78d1162d973abf3aa35b.patch remove-openmp-warning.patch)
MAKE_OPTIONS=(DYNAMIC_ARCH=1 "DYNAMIC_LIST=HASWELL ZEN SKYLAKEX COOPERLAKE" TARGET=GENERIC
              ONLY_CBLAS=1 NO_LAPACK=1 NO_LAPACKE=1 NOFORTRAN=1 BUILD_SINGLE=1 BUILD_DOUBLE=1
              USE_THREAD=1 USE_OPENMP=0 NUM_THREADS=128 NO_AFFINITY=1 NO_WARMUP=1
              LIBNAMESUFFIX=_tempreg)

die() { echo "build_openblas: $*" >&2; exit 1; }
log() { echo "build_openblas: $*" >&2; }
# shellcheck source=debian_source.sh
. "$HERE/debian_source.sh"

KEY=$( { echo "debian:$DEBIAN_VERSION ${DEBIAN_PATCHES[*]} ${MAKE_OPTIONS[*]}"; cat "$HERE"/openblas-patches/*.patch "$0"; } \
       | sha256sum | cut -c1-12)
PREFIX=$CACHE/openblas-$KEY
if [ -f "$PREFIX/.complete" ]; then
  echo "$PREFIX"
  exit 0
fi
for tool in gcc make patch dpkg-source; do
  command -v "$tool" >/dev/null || die "needs $tool (Debian packages gcc make patch dpkg-dev; build_caffe.sh installs them)"
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/openblas-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
log "building OpenBLAS (Debian $DEBIAN_VERSION) into $PREFIX"
fetch_debian_source "$WORK" "$SUITE" openblas "$DEBIAN_VERSION" "${DEBIAN_PATCHES[@]}"
for p in "$HERE"/openblas-patches/*.patch; do
  patch -s -d "$WORK/src" -p1 < "$p" || die "our patch $(basename "$p") no longer applies to openblas=$DEBIAN_VERSION"
done
( cd "$WORK/src" && make -j"$JOBS" "${MAKE_OPTIONS[@]}" libs shared > "$WORK/make.log" 2>&1 ) \
  || die "make failed: $(tail -20 "$WORK/make.log")"

STAGE=$PREFIX.tmp.$$
rm -rf "$STAGE"
( cd "$WORK/src" && make "${MAKE_OPTIONS[@]}" PREFIX="$STAGE" install > "$WORK/install.log" 2>&1 ) \
  || die "make install failed: $(tail -20 "$WORK/install.log")"
rm -f "$STAGE"/lib/*.a && rm -rf "$STAGE/lib/cmake" "$STAGE/lib/pkgconfig"
echo "debian:$DEBIAN_VERSION ${MAKE_OPTIONS[*]}" > "$STAGE/.complete"
mkdir -p "$CACHE" && rm -rf "$PREFIX" && mv "$STAGE" "$PREFIX"
log "done: $PREFIX"
echo "$PREFIX"
