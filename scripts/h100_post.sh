#!/usr/bin/env bash
# Issue 10 on one H100: post-training stages 3 and 4 from the shipped (stage-2) model, then
# their evaluation, in two device calls of < 10 minutes (call the second right after the first:
# the machine is kept only 30 s between calls).
#   call 1:  bash scripts/h100_post.sh train MINUTES    corpus + data with the shipped tokenizer, then
#            stage 3 (distill) and stage 4 (onpolicy) side by side on the one GPU, MINUTES each; the
#            exports (weights in 15 MB parts) and metrics come back in $OUT
#   call 2:  bash scripts/h100_post.sh eval             Q1 and Q2 (steps per token, pass@1) of the
#            stage-2, stage-3 and stage-4 models on the GPU, side by side
# Needs the wheels in .whl (scripts/device_wheels.sh) carried along.
set -uo pipefail
export PYTHONUNBUFFERED=1
R=${RUN_DIR:-/root/post}
mkdir -p "$R"
source scripts/device_site.sh
cd /tmp  # not the checkout: its dllm_ls/ folder would shadow the installed package
SHIPPED=$(shipped_checkpoint)
DLLM="python3 -m dllm_ls.cli"

case "$1" in
train)
  MIN=$2
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  $DLLM train --out "$R" --prepare-only --no-progress 2>&1 | tail -3 || exit 1
  stage_run() {  # a stage that dies is run again without torch.compile/FlexAttention, in the time left
    local stage=$1 t0=$SECONDS
    $DLLM train --out "$R" --stage $stage --max-minutes "$MIN" --max-steps 100000 --seq-len 512 \
      --batch-size "${BATCH:-64}" --updates-per-rollout 4 --eval-every 40 --eval-batches 8 --log-every 4 \
      --no-progress >> "$R/$stage.log" 2>&1 && return 0
    local left; left=$(python3 -c "print(round($MIN - ($SECONDS - $t0) / 60 - 0.3, 2))")
    echo "=== $stage failed; again with --no-compile for $left min" >> "$R/$stage.log"
    python3 -c "import sys; sys.exit(0 if $left > 1 else 1)" || return 1
    rm -rf "${R:?}/$stage"
    $DLLM train --out "$R" --stage $stage --max-minutes "$left" --max-steps 100000 --seq-len 512 \
      --batch-size "${BATCH:-64}" --updates-per-rollout 4 --eval-every 40 --eval-batches 8 --log-every 4 \
      --no-progress --no-compile >> "$R/$stage.log" 2>&1
  }
  for stage in distill onpolicy; do stage_run $stage & done
  wait
  for stage in distill onpolicy; do echo "== $stage"; tail -25 "$R/$stage.log"; done
  (cd "$R" && tar czf "$OUT/post.tgz" --ignore-failed-read ./*.log {distill,onpolicy}/metrics.jsonl \
     {distill,onpolicy}/summary.json {distill,onpolicy}/*.png {distill,onpolicy}/export/*.json)
  for stage in distill onpolicy; do split -b 15m "$R/$stage/export/model.safetensors" "$OUT/$stage.st."; done
  ls -la "$OUT"
  ;;
eval)
  for m in shipped distill onpolicy; do
    ck=$R/$m/export; [ $m = shipped ] && ck=$SHIPPED
    for q in q1 q2; do
      timeout "${EVAL_S:-420}" $DLLM eval $q --checkpoint "$ck" --device cuda --quiet --workers 4 \
        --json "$R/${q}_$m.json" > "$R/${q}_$m.log" 2>&1 &
    done
  done
  wait
  for f in "$R"/q*_*.log; do echo "== $f"; tail -4 "$f"; done
  (cd "$R" && tar czf "$OUT/eval.tgz" --ignore-failed-read q*_*.json q*_*.log)
  ls -la "$OUT"
  ;;
*)
  echo "usage: $0 train MINUTES | eval"; exit 2 ;;
esac
