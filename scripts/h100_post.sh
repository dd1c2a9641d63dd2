#!/usr/bin/env bash
# Issue 10 on one H100: post-training runs from the shipped (stage-2) model side by side, then
# their evaluation, in device calls of < 10 minutes (call the next right after the one before:
# the machine is kept only 30 s between calls).
#   call 1:  bash scripts/h100_post.sh train MINUTES    corpus + data with the shipped tokenizer, then
#            the runs of RUNS side by side on the one GPU, MINUTES each; with EVAL_S > 0, Q1 on the
#            GPU of the shipped model and each run (EVAL_S seconds at most); the metrics, the Q1
#            figures and the weights of the BRING best runs (gzipped, in 15 MB parts) come back in $OUT
#   call 2:  bash scripts/h100_post.sh eval             Q1 and Q2 (steps per token, pass@1) of the
#            shipped model and every run on the GPU, side by side
# RUNS: "NAME:FLAGS;NAME:FLAGS" (dllm-ls train flags after the common ones; default: stage 3 with a
# frozen teacher and stage 4, "distill:--stage distill;onpolicy:--stage onpolicy"). Each run's
# directory is $R/NAME. The runs brought back: the one with the best Q1 pass@1, then those within
# a point of the shipped model's pass@1 with the fewest steps per token.
# Needs the wheels in .whl (scripts/device_wheels.sh) carried along.
set -uo pipefail
export PYTHONUNBUFFERED=1
START=$SECONDS
R=${RUN_DIR:-/root/post}
mkdir -p "$R"
source scripts/device_site.sh
cd /tmp  # not the checkout: its dllm_ls/ folder would shadow the installed package
SHIPPED=$(shipped_checkpoint)
DLLM=${DLLM:-python3 -m dllm_ls.cli}
RUNS=${RUNS:-distill:--stage distill;onpolicy:--stage onpolicy}
IFS=';' read -ra SPECS <<< "$RUNS"
NAMES=()
for spec in "${SPECS[@]}"; do NAMES+=("${spec%%:*}"); done
COMMON=(--max-steps 100000 --seq-len 512 --batch-size "${BATCH:-64}" --updates-per-rollout 4 --eval-every 40
        --eval-batches 8 --log-every 4 --no-progress)

q1() {  # q1 NAME CHECKPOINT SECONDS [FLAGS]: Q1 on the GPU into $R/q1_NAME.json
  local name=$1 ck=$2 s=$3; shift 3
  timeout "$s" $DLLM eval q1 --checkpoint "$ck" --device cuda --quiet --workers 3 "$@" \
    --json "$R/q1_$name.json" > "$R/q1_$name.log" 2>&1
}

case "$1" in
train)
  MIN=$2
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  # the shipped tokenizer: the stage runs need data tokenised with their model's (they would each
  # re-tokenise it, at once, into the same directory)
  $DLLM train --out "$R" --tokenizer "$SHIPPED/tokenizer.json" --prepare-only --no-progress 2>&1 | tail -3 || exit 1
  echo "== [$((SECONDS - START)) s] prepared"
  run_one() {  # NAME FLAGS...: a run that dies is run again without torch.compile/FlexAttention, in the time left
    local name=$1 t0=$SECONDS; shift
    $DLLM train --out "$R" --name "$name" --max-minutes "$MIN" "${COMMON[@]}" "$@" >> "$R/$name.log" 2>&1 && return 0
    local left; left=$(python3 -c "print(round($MIN - ($SECONDS - $t0) / 60 - 0.3, 2))")
    echo "=== $name failed; again with --no-compile for $left min" >> "$R/$name.log"
    python3 -c "import sys; sys.exit(0 if $left > 1 else 1)" || return 1
    rm -rf "${R:?}/$name"
    $DLLM train --out "$R" --name "$name" --max-minutes "$left" "${COMMON[@]}" "$@" --no-compile >> "$R/$name.log" 2>&1
  }
  for spec in "${SPECS[@]}"; do
    # shellcheck disable=SC2086
    run_one "${spec%%:*}" ${spec#*:} &
  done
  wait
  echo "== [$((SECONDS - START)) s] trained"
  for name in "${NAMES[@]}"; do echo "== $name"; tail -22 "$R/$name.log" | grep -v '^ *"\(init\|export\|seq_len\|batch_size\|block_size\)'; done
  if [ "${EVAL_S:-0}" -gt 0 ]; then
    q1 shipped "$SHIPPED" "$EVAL_S" &
    for name in "${NAMES[@]}"; do q1 "$name" "$R/$name/export" "$EVAL_S" & done
    wait
    echo "== [$((SECONDS - START)) s] evaluated"
  fi
  (cd "$R" && tar czf "$OUT/post.tgz" --ignore-failed-read ./*.log ./q1_*.json */metrics.jsonl */summary.json \
     */*.png */export/*.json)
  # the weights of the BRING best runs (the 64 MB that come back hold two): the best Q1 pass@1 first,
  # then Q1 within a point of the shipped model's pass@1 with the fewest steps per token; without
  # Q1 figures, RUNS' order
  best=$(python3 - "$R" "${BRING:-2}" "${NAMES[@]}" <<'EOF'
import json, sys
from pathlib import Path
R, n, names = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
def q1(name):
    p = R / f"q1_{name}.json"
    return json.loads(p.read_text()) if p.is_file() else None
base = q1("shipped")
res = [q1(name) for name in names]
def key(i):
    r = res[i]
    if not r or not base:
        return (1, i)
    ok = r["pass_at_1"] >= base["pass_at_1"] - 0.01
    print(f"{names[i]}: pass@1 {r['pass_at_1']:.4f} vs {base['pass_at_1']:.4f}, steps/token "
          f"{r['steps_per_token']:.3f} vs {base['steps_per_token']:.3f}", file=sys.stderr)
    return (0 if ok else 1, r["steps_per_token"])
order = sorted(range(len(names)), key=key)
scored = [i for i in order if res[i]]
if base and scored:  # the most accurate run first: it may not be among the fastest
    top = max(scored, key=lambda i: res[i]["pass_at_1"])
    order = [top] + [i for i in order if i != top]
print(" ".join(names[i] for i in order[:n]))
EOF
)
  echo "== bringing back: $best"
  for name in $best; do
    gzip -c "$R/$name/export/model.safetensors" | split -b 15m - "$OUT/$name.st.gz."
  done
  ls -la "$OUT"
  ;;
eval)
  for m in shipped "${NAMES[@]}"; do
    ck=$R/$m/export; [ "$m" = shipped ] && ck=$SHIPPED
    q1 "$m" "$ck" "${EVAL_S:-420}" &
    timeout "${EVAL_S:-420}" $DLLM eval q2 --checkpoint "$ck" --device cuda --quiet --workers 3 \
      --json "$R/q2_$m.json" > "$R/q2_$m.log" 2>&1 &
  done
  wait
  for f in "$R"/q*_*.log; do echo "== $f"; tail -4 "$f"; done
  (cd "$R" && tar czf "$OUT/eval.tgz" --ignore-failed-read q*_*.json q*_*.log)
  ls -la "$OUT"
  ;;
*)
  echo "usage: $0 train MINUTES | eval"; exit 2 ;;
esac
