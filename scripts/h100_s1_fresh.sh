#!/usr/bin/env bash
# S1 from nothing in ONE device call of < 10 minutes (session 15's call, as a script): a fresh AR
# twin (the shipped model's tokenizer, MINUTES of training, default 4.3 as in sessions 10, 14, 15),
# then the GPU tests and `bench speed` against it on the same machine, with what is left of the call.
#
#   bash scripts/h100_s1_fresh.sh [LIMIT]        carry: [".whl"]   (LIMIT Q1 tasks, default 1033)
#
# The twin's weights stay on the machine (31 MB; they are not brought back); its summary and the
# S1 outputs come back in $OUT (8 files at most: train.tgz and h100_speed.sh's). Knobs: MINUTES,
# CALL_S (the whole call's budget, 590), TESTS/TEST_S/BENCH_ARGS/EAGER_ROWS/KBENCH_S as h100_speed.sh.
set -uo pipefail
LIMIT=${1:-1033}
MIN=${MINUTES:-4.3}
nvidia-smi --query-gpu=name --format=csv,noheader
KINDS=ar INIT=shipped WATCH=15 bash scripts/h100_train.sh start "$MIN" 2>&1 | tail -4
KINDS=ar WAIT_S=$(awk "BEGIN {print int($MIN * 60 + 120)}") bash scripts/h100_train.sh finish 2>&1 | tail -8
[ "${KEEP_TWIN:-0}" = 1 ] || rm -f "$OUT"/ar.st.*  # KEEP_TWIN=1: its weights come back (2 parts; with
# train.tgz's ar/export/*.json they make the export that a later call carries to h100_speed.sh)
[ -f "$OUT/small.tgz" ] && mv "$OUT/small.tgz" "$OUT/train.tgz"
[ -f /root/dllm-run/ar/export/model.safetensors ] || { echo "no AR twin"; exit 1; }
echo "== [$SECONDS s] trained"
TOTAL_S=$((${CALL_S:-590} - SECONDS)) TEST_S=${TEST_S:-45} \
  TESTS=${TESTS:-"tests/diffusion_core/test_graphed.py tests/kernels"} KBENCH_S=${KBENCH_S:-0} EAGER_ROWS=${EAGER_ROWS-} \
  BENCH_ARGS=${BENCH_ARGS:-"--q2-limit 200 --block-sizes 32 --thresholds 0.9,0.5"} \
  bash scripts/h100_speed.sh /root/dllm-run/ar/export "$LIMIT"
