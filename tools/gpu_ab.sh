#!/usr/bin/env bash
# On the GPU box: a same-call A/B of decode-step graph times across builds and environment
# settings, rounds interleaved so the spread between identical runs shows next to a difference
# (bench/NOTES.md's method). Each arm is a packed build (tools/gpu_pack.sh with DEST=.gpu-NAME,
# carried) and environment assignments; every arm runs `bench_cuda model CONFIG BATCHES` once
# per round and per model, and a table of the graph ms per arm and batch follows.
#   ARMS    arms separated by ';', each "NAME=BUNDLE_DIR[:VAR=VALUE[,VAR=VALUE...]]" (a value
#           may hold commas: BLOCKFLASH_SPREAD=gdn,router), e.g.
#           "base=.gpu-base;new=.gpu-new;new-nospread=.gpu-new:BLOCKFLASH_SPREAD=0"
#   MODELS  configs (default bench/configs/qwen3.5-35b-a3b.json)
#   BATCHES (default "1 2"), ROUNDS (default 3), BENCH (default bench_cuda, in each bundle's bin/)
#   MODE    graph (default: decode-step graph ms) or spec: the DFlash verify step's ms from
#           `blockflash bench spec` (each bundle's bin/blockflash, dummy weights, context 1024)
#           with the drafter config DRAFT (default bench/configs/qwen3.5-27b-dflash.json)
# Logs in $OUT (default /tmp/gpu_ab).
set -uo pipefail
OUT=${OUT:-/tmp/gpu_ab}
ROOT=/tmp/bf-ab
mkdir -p "$OUT" "$ROOT"
: "${ARMS:?set ARMS, e.g. base=.gpu-base;new=.gpu-new}"
MODELS=${MODELS:-bench/configs/qwen3.5-35b-a3b.json}
BATCHES=${BATCHES:-1 2}
ROUNDS=${ROUNDS:-3}
BENCH=${BENCH:-bench_cuda}

# "A=1,B=gdn,router,C=2" -> envs=(A=1 B=gdn,router C=2): a comma starts a new assignment only
# when a NAME= follows it, so values may hold commas (BLOCKFLASH_SPREAD=gdn,router).
split_assignments() {
  local part cur=""
  local -a parts
  envs=()
  IFS=',' read -ra parts <<< "$1"
  for part in "${parts[@]}"; do
    if [ -z "$cur" ]; then
      cur=$part
    elif [[ "$part" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]]; then
      envs+=("$cur")
      cur=$part
    else
      cur="$cur,$part"
    fi
  done
  [ -n "$cur" ] && envs+=("$cur")
}

IFS=';' read -ra arms <<< "$ARMS"
declare -A unpacked
for arm in "${arms[@]}"; do
  spec=${arm#*=}
  dir=${spec%%:*}
  [ -n "${unpacked[$dir]:-}" ] && continue
  dest="$ROOT/$(basename "$dir")"
  mkdir -p "$dest" && tar -C "$dest" -xJf "$dir/bundle.tar.xz" || { echo "cannot unpack $dir"; exit 2; }
  unpacked[$dir]=$dest
done

results="$OUT/results.tsv"  # arm, model, batch, round, graph ms
: > "$results"
for round in $(seq 1 "$ROUNDS"); do
  for model in $MODELS; do
    for arm in "${arms[@]}"; do
      name=${arm%%=*}
      spec=${arm#*=}
      dir=${spec%%:*}
      envs=()
      [[ "$spec" == *:* ]] && split_assignments "${spec#*:}"
      bin=${unpacked[$dir]}
      log="$OUT/${name}_$(basename "$model" .json)_r$round.log"
      if [ "${MODE:-graph}" = spec ]; then
        env LD_LIBRARY_PATH="$bin/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}" "${envs[@]}" \
          timeout 180 "$bin/bin/blockflash" bench spec --device cuda --load-format dummy \
          --model "$model" --draft "${DRAFT:-bench/configs/qwen3.5-27b-dflash.json}" \
          --batch-sizes "${BATCHES// /,}" --context-len 1024 --iters 8 --warmup 2 > "$log" 2>&1
        # Rows: "     1     18.627      2.581     24.353 ..." (batch, decode, draft, verify ms)
        awk -v a="$name" -v m="$(basename "$model" .json)" -v r="$round" \
          '/^ +[0-9]+ +[0-9.]+ +[0-9.]+ +[0-9.]+ / { print a "\t" m "\t" $1 "\t" r "\t" $4 }' \
          "$log" >> "$results"
        continue
      fi
      env LD_LIBRARY_PATH="$bin/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}" BENCH_SKIP_PREFILL=1 \
        "${envs[@]}" timeout 180 "$bin/bin/$BENCH" model "$model" $BATCHES > "$log" 2>&1
      # Rows: "| decode B=1 graph | 1 | 2.44 | ..."
      awk -F'|' -v a="$name" -v m="$(basename "$model" .json)" -v r="$round" \
        '/decode B=[0-9]+ graph/ { gsub(/ /, "", $3); gsub(/ /, "", $4); print a "\t" m "\t" $3 "\t" r "\t" $4 }' \
        "$log" >> "$results"
    done
  done
done

# The table: one row per (model, arm), one column per batch, the rounds' ms in order.
python3 - "$results" "${MODE:-graph}" <<'EOF'
import collections, sys
rows = collections.OrderedDict()
batches = []
for line in open(sys.argv[1]):
    arm, model, batch, rnd, ms = line.rstrip("\n").split("\t")
    rows.setdefault((model, arm), collections.defaultdict(list))[int(batch)].append(ms)
    if int(batch) not in batches:
        batches.append(int(batch))
batches.sort()
unit = "verify ms" if len(sys.argv) > 2 and sys.argv[2] == "spec" else "graph ms"
print("| model | arm | " + " | ".join(f"B={b} {unit}" for b in batches) + " |")
print("|---|---|" + "---|" * len(batches))
for (model, arm), per in rows.items():
    print(f"| {model} | {arm} | " + " | ".join(" / ".join(per.get(b, ["-"])) for b in batches) + " |")
EOF
