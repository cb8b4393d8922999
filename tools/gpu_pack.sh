#!/usr/bin/env bash
# Here (the build machine): packs the CUDA binaries of build-cuda and the shared libraries the
# GPU box's image lacks (OpenBLAS, PCRE2, utf8proc, cpp-httplib, ...) into .gpu/bundle.tar.xz,
# for `run` with carry [".gpu"]; tools/gpu_check.sh unpacks it there.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${BUILD:-build-cuda}
grep -qx '/.gpu/' .git/info/exclude || echo '/.gpu/' >> .git/info/exclude
rm -rf .gpu && mkdir -p .gpu/stage/bin .gpu/stage/lib
cp "$B/blockflash" "$B/tests/test_cuda" "$B/tests/test_backend" "$B/tests/bench_cuda" .gpu/stage/bin/
for l in libopenblas.so.0 libgfortran.so.5 libquadmath.so.0 libpcre2-8.so.0 libutf8proc.so.2 \
         libcpp-httplib.so.0.11 libbrotlidec.so.1 libbrotlienc.so.1 libbrotlicommon.so.1; do
  cp -L "/lib/x86_64-linux-gnu/$l" .gpu/stage/lib/
done
tar -C .gpu/stage -cJf .gpu/bundle.tar.xz bin lib
rm -rf .gpu/stage
ls -la .gpu
