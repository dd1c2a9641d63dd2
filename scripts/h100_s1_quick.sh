#!/usr/bin/env bash
# S1 on a short device budget (~3-4 minutes), the measurement first, so that a call cut short by the
# session's device time still brings it back:
#
#   bash scripts/h100_s1_quick.sh AR_TGZ_OR_DIR [LIMIT]     carry: [".whl", "<the AR twin's .tgz>"]
#
#   1. installs the checkout (+ .whl) into /tmp/site_quick;
#   2. `dllm-ls bench speed` (S1: Q1 LIMIT tasks, default 1033, Q2 200 spans, AR and BENCH_ARGS'
#      settings, default block 32 at thresholds 0.9/0.3/0.2)  -> s1.log, s1_report.json, s1_results.json,
#                                                                 s1_pareto.png
#   3. scripts/completion_breakdown.py on Q2, scripts/profile_step.py, then the GPU tests of the
#      graphed decoders                                          -> small.tgz
# Knobs: S1_S (120), BREAKDOWN_S (25), PROFILE_S (25), TEST_S (40), BENCH_ARGS.
set -uo pipefail
export PYTHONUNBUFFERED=1
START=$SECONDS
REPO=$(cd "$(dirname "$0")/.." && pwd)
AR=${1:?usage: bash scripts/h100_s1_quick.sh AR_TGZ_OR_DIR [LIMIT]}
LIMIT=${2:-1033}
OUT=${OUT:-/tmp/quick_out}
mkdir -p "$OUT"
say() { echo "== [$((SECONDS - START)) s] $*"; }
if [ -f "$AR" ]; then
  mkdir -p /tmp/ar_export && tar xzf "$AR" -C /tmp/ar_export || { echo "cannot unpack $AR"; exit 2; }
  AR=/tmp/ar_export
fi
SITE=/tmp/site_quick
rm -rf "$SITE"
shopt -s nullglob
wheels=("$REPO"/.whl/*.whl)
[ ${#wheels[@]} -gt 0 ] && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "${wheels[@]}"
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --target "$SITE" "$REPO" \
  || { echo "package install failed"; exit 1; }
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
cd /tmp
say "installed"
timeout "${S1_S:-120}" python3 -m dllm_ls.trainer.bench_speed speed --checkpoint "$REPO/diffusion_core/weights/default" \
  --ar-checkpoint "$AR" --device cuda --limit "$LIMIT" --q2-limit 200 \
  ${BENCH_ARGS:---block-sizes 32 --thresholds 0.9,0.3,0.2} \
  --plot "$OUT/s1_pareto.png" --report "$OUT/s1_report.json" --json "$OUT/s1_results.json" > "$OUT/s1.log" 2>&1
echo "bench speed exit $?" >> "$OUT/s1.log"
grep -vE "^  Q[12] |[Ww]arn" "$OUT/s1.log" | tail -40
say "S1 done"
timeout "${BREAKDOWN_S:-25}" python3 "$REPO/scripts/completion_breakdown.py" --ar "$AR" --bench q2 --limit 100 \
  2>&1 | grep -v -i warn > "$OUT/breakdown.txt"
cat "$OUT/breakdown.txt"
timeout "${PROFILE_S:-25}" python3 "$REPO/scripts/profile_step.py" 32 2>&1 | grep -v -i warn > "$OUT/profile.txt"
cat "$OUT/profile.txt"
say "breakdown and profile done"
T=/tmp/quick_tests
rm -rf "$T" && mkdir -p "$T" && cp -r "$REPO/tests" "$REPO/pyproject.toml" "$T/"
(cd "$T" && timeout "${TEST_S:-40}" python3 -m pytest -q -p no:cacheprovider -o addopts="" \
   tests/diffusion_core/test_graphed.py > "$OUT/gpu_tests.log" 2>&1)
echo "pytest exit $?" >> "$OUT/gpu_tests.log"
tail -3 "$OUT/gpu_tests.log"
say "done"
(cd "$OUT" && tar czf small.tgz --remove-files --ignore-failed-read breakdown.txt profile.txt gpu_tests.log)
