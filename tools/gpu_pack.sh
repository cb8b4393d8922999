#!/usr/bin/env bash
# Here (the build machine): packs CUDA binaries of a build directory and the shared libraries
# the GPU box's image lacks (OpenBLAS, PCRE2, utf8proc, cpp-httplib, ...) into
# $DEST/bundle.tar.xz, for `run` with carry ["$DEST"]; tools/gpu_check.sh (DEST .gpu) and
# tools/gpu_dflash.sh (DEST .gpu-dflash) unpack it there.
#   BUILD (build-cuda), DEST (.gpu), BINS (paths inside BUILD; default: what gpu_check.sh runs)
set -euo pipefail
cd "$(dirname "$0")/.."
B=${BUILD:-build-cuda}
D=${DEST:-.gpu}
BINS=${BINS:-blockflash tests/test_cuda tests/test_backend tests/test_engine tests/bench_cuda}
X="$(git rev-parse --git-common-dir)/info/exclude"  # works in a worktree too
grep -qx "/$D/" "$X" || echo "/$D/" >> "$X"
rm -rf "$D" && mkdir -p "$D/stage/bin" "$D/stage/lib"
for bin in $BINS; do cp "$B/$bin" "$D/stage/bin/"; done
for l in libopenblas.so.0 libgfortran.so.5 libquadmath.so.0 libpcre2-8.so.0 libutf8proc.so.2 \
         libcpp-httplib.so.0.11 libbrotlidec.so.1 libbrotlienc.so.1 libbrotlicommon.so.1; do
  cp -L "/lib/x86_64-linux-gnu/$l" "$D/stage/lib/"
done
tar -C "$D/stage" -cJf "$D/bundle.tar.xz" bin lib
rm -rf "$D/stage"
ls -la "$D"
