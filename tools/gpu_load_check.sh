#!/usr/bin/env bash
# On the GPU box: times loading a real-sized safetensors checkpoint (Qwen3.5-27B shapes, the
# first N layers, random bf16, written by tools/make_synthetic_checkpoint.py) with
# `blockflash generate --device cuda`, cold (page cache dropped, where the machine allows) and
# warm, and prints the loader's GB/s log line. BIN: the blockflash binary; LAYERS (16).
set -uo pipefail
BIN=${BIN:-blockflash}
LAYERS=${LAYERS:-16}
CK=${CK:-/tmp/synthetic-27b}
t0=$(date +%s%N)
python3 tools/make_synthetic_checkpoint.py bench/configs/qwen3.5-27b.json "$CK" --layers "$LAYERS" \
  --tokenizer-from tests/goldens/dense_flat || exit 1
echo "written in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
# The disk's own read rate, the loader's ceiling: every shard read by cat, four at a time.
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null
t0=$(date +%s%N)
ls "$CK"/*.safetensors | xargs -P4 -n1 sh -c 'cat "$0" > /dev/null'
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
echo "disk: all shards read by 4 parallel cat in $ms ms ($(du -sb "$CK" | cut -f1) bytes)"
for run in cold warm; do
  if [ $run = cold ]; then sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null && echo "page cache dropped" || echo "could not drop the page cache (cold = as written)"; fi
  t0=$(date +%s%N)
  BLOCKFLASH_LOG_LEVEL=info "$BIN" generate --model "$CK" --device cuda --prompt-ids 1,2,3 \
    --max-tokens 2 --temperature 0 --max-model-len 4096 2>&1 | grep -E "uploaded|loaded|rror" | sed "s/^/$run: /"
  echo "$run: whole command $(( ($(date +%s%N) - t0) / 1000000 )) ms"
done
