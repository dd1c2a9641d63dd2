#!/usr/bin/env bash
# S2 on one GPU (issue 8), one device call: the GPU tests of the core (TESTS: other paths), then S2 on
# the held-out files in the server's modes side by side (auto: the editor's mix, block on a blank
# line; line: single-line completions) and on the Q1 documents in line mode. Logs and the JSON
# figures come back in $OUT.   carry: [".whl"]
#   bash scripts/h100_s2.sh [LIMIT]          (LIMIT documents per run, default 50)
set -uo pipefail
export PYTHONUNBUFFERED=1
START=$SECONDS
LIMIT=${1:-50}
REPO=$PWD
source scripts/device_site.sh
cd /tmp
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/env.txt"
T=/tmp/s2_tests
rm -rf "$T" && mkdir -p "$T" && cp -r "$REPO/tests" "$REPO/pyproject.toml" "$T/"
(cd "$T" && timeout "${TEST_S:-150}" python3 -m pytest -q -p no:cacheprovider -o addopts="" -m gpu \
   ${TESTS:-tests/diffusion_core} > "$OUT/gpu_tests.log" 2>&1)
tail -3 "$OUT/gpu_tests.log"
echo "== [$((SECONDS - START)) s] tests"
for spec in ${S2_RUNS:-files:auto files:line q1:line}; do  # DOCS:MODE
  set -- ${spec/:/ }
  timeout 150 python3 -m dllm_ls.cli bench s2 --docs "$1" --mode "$2" --limit "$LIMIT" --device cuda \
    --json "$OUT/s2.json" > "$OUT/s2_$1_$2.log" 2>&1
  echo "== [$((SECONDS - START)) s] $1 $2 (exit $?)"
  grep -E "warm_p50|cold_p50|keystroke_p50|steps_p50|tokens_p50|overhead|transport|compute" "$OUT/s2_$1_$2.log"
done
