#!/usr/bin/env bash
# bash benchmarks/wobert_device.sh PREPARED_DIR "L2-H256=S,L4-H256=S,..."
#
# The Chinese-encoder experiments in one go, for a machine with a GPU and no data folder: it
# reads only PREPARED_DIR (written by `python -m benchmarks.zh_prepare --copy-to DIR` where the
# data is) and runs, with the machine's python3 and PYTHONPATH=.:
#   1. benchmarks.pretrain_zh: the recipe (char BERT, its continuation, WoBERT);
#   2. benchmarks.bench_wobert (goal P7) at the recipe's size (fp32 policy: TF32 matmuls on GPU);
#   3. benchmarks.exp_wobert_r6 (claim R6) on the continued char BERT and WoBERT, 3 seeds;
#   4. benchmarks.pretrain_zh --sweep-only with what time is left: each size of the second
#      argument for one 2-CPU-core hour of steps (SIZE=seconds per step from --measure-cpu),
#      the evidence for the recipe's size (its own size is a cache hit);
# then packs results/<device>/ into $OUT/results.tar.gz. Each step has a time cap (seconds:
# WOBERT_PRETRAIN_S 200, WOBERT_P7_S 70; R6 gets what is left of WOBERT_TOTAL_S 560 minus
# WOBERT_SWEEP_S 90, and the sweep the rest; both save their reports as they go, so
# a cut run keeps what it finished); logs go
# to $OUT. WOBERT_PRESET
# (cpu-hour) names the pretraining recipe, WOBERT_P7_ARGS and WOBERT_R6_ARGS (empty) add
# arguments (a local dry run: WOBERT_PRESET=tiny WOBERT_P7_ARGS=--quick WOBERT_R6_ARGS=--quick).
# XLA's persistent compilation cache is on, so the fine-tuning runs of equal shapes (seeds)
# compile once. WOBERT_RESULTS (results) is the results root.

set -u -o pipefail
cd "$(dirname "$0")/.."
PREP=${1:?usage: wobert_device.sh PREPARED_DIR SIZE=SECONDS,...}
SWEEP=${2:?usage: wobert_device.sh PREPARED_DIR SIZE=SECONDS,...}
OUT=${OUT:-$(mktemp -d)}
SCRATCH=$(mktemp -d)
export PYTHONPATH=. PYTHONUNBUFFERED=1 JAXFORMER_CACHE=${JAXFORMER_CACHE:-$SCRATCH/jaxformer-cache}
PY=${PYTHON:-python3}
RES=${WOBERT_RESULTS:-results}
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$SCRATCH/xla-cache}
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
START=$SECONDS
nvidia-smi -L || true

timeout "${WOBERT_PRETRAIN_S:-200}" $PY -m benchmarks.pretrain_zh --prepared "$PREP" \
  --preset "${WOBERT_PRESET:-cpu-hour}" --no-progress --out "$RES" 2>&1 | tee "$OUT/pretrain.log"
SLUG=$($PY -c "from benchmarks.harness import device_slug; print(device_slug())")
REPORT=$RES/$SLUG/pretrain_zh.json
if [ -f "$REPORT" ]; then
  read -r SIZE CHAR WORD < <($PY - "$REPORT" <<'EOF'
import json, sys
rows = {r["stage"]: r for r in json.load(open(sys.argv[1]))["rows"]}
print(rows["char"]["size"], rows["char_continued"]["path"], rows["wobert"]["path"])
EOF
  )
  timeout "${WOBERT_P7_S:-70}" $PY -m benchmarks.bench_wobert --prepared "$PREP" \
    --size "$SIZE" --budget-s 1.5 --out "$RES" ${WOBERT_P7_ARGS:-} 2>&1 | tee "$OUT/p7.log"
  LEFT=$(( ${WOBERT_TOTAL_S:-560} - ${WOBERT_SWEEP_S:-90} - (SECONDS - START) ))
  timeout "$(( LEFT > 30 ? LEFT : 30 ))" $PY -m benchmarks.exp_wobert_r6 --prepared "$PREP" \
    --char-model "$CHAR" --word-model "$WORD" --out "$RES" ${WOBERT_R6_ARGS:-} 2>&1 | tee "$OUT/r6.log"
else
  echo "no $REPORT: pretraining did not finish" | tee -a "$OUT/pretrain.log"
fi
LEFT=$(( ${WOBERT_TOTAL_S:-560} - (SECONDS - START) ))
timeout "$(( LEFT > 20 ? LEFT : 20 ))" $PY -m benchmarks.pretrain_zh --prepared "$PREP" \
  --preset "${WOBERT_PRESET:-cpu-hour}" --sweep "$SWEEP" --sweep-only --no-progress \
  --out "$RES" 2>&1 | tee "$OUT/sweep.log"
tar czf "$OUT/results.tar.gz" -C "$RES" "$SLUG"
ls -la "$RES/$SLUG"
