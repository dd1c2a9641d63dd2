#!/usr/bin/env bash
# Issue 8 on the GPU machine in ONE device call of ~5 minutes (TOTAL_S, default 285 s):
#
#   bash scripts/h100_speed.sh AR_CHECKPOINT_DIR [LIMIT]
#
# carry: [".whl", "<the AR checkpoint dir, or a .tgz of it>"]   (.whl: scripts/device_wheels.sh; pytest is
# among them). The checkout (33.6 MB with the default model), an AR export (31 MB) and the wheels
# (4 MB) are over the 64 MiB a call carries: pack the export, `tar czf runs/ar.tgz -C DIR .` (25 MB).
# The diffusion model is the shipped one (diffusion_core/weights/default/, or CKPT=DIR).
#
#   1. installs the checkout (+ .whl/*.whl) into /tmp/site_speed, runs from /tmp (the checkout's
#      dllm_ls/ folder would shadow the installed package);
#   2. the GPU tests: tests/kernels (Triton kernels vs references, CUDA-graph replay),
#      tests/diffusion_core/test_graphed.py and test_gpu.py    -> gpu_tests.log, .xml (in small.tgz)
#   3. `dllm-ls bench speed` (S1) with LIMIT tasks per benchmark (default 80), diffusion at block
#      sizes 4-64 x thresholds 0.9/0.7/0.5, AR, the eager rows, the floor; it starts no new setting
#      once its budget is spent                                -> $OUT/s1.log, s1_report.json,
#                                                                 s1_results.json, s1_pareto.png
#   4. the kernel benchmarks (triton vs torch vs torch.compile) -> $OUT/kernels.md, kernels.json
#
# Every phase is bounded by `timeout`, so the call returns in time with whatever finished.
# Knobs (environment): OUT, TOTAL_S, LIMIT, CKPT, DEVICE (cuda; cpu to try the script's logic),
# TEST_S (phase 2 limit, 110), KBENCH_S (phase 4 reserve, 45), BENCH_ARGS (extra bench arguments),
# TESTS (pytest paths), SKIP_INSTALL=1 (use the current environment as it is), EAGER_ROWS= (empty:
# no eager rows, which take minutes on all 1,033 Q1 tasks), PROFILE_S (the step/prefill profile's
# limit, 40; 0: skip), BREAKDOWN_S (each of the two completion breakdowns' limit, Q2 and Q1; 0, the
# default: skip).
set -uo pipefail
export PYTHONUNBUFFERED=1
START=$SECONDS
REPO=$(cd "$(dirname "$0")/.." && pwd)
AR=${1:?usage: bash scripts/h100_speed.sh AR_CHECKPOINT_DIR [LIMIT]}
if [ -f "$AR" ]; then  # a .tgz of the export (gzip saves a fifth of bf16 weights: room for the wheels)
  mkdir -p /tmp/ar_export && tar xzf "$AR" -C /tmp/ar_export || { echo "cannot unpack $AR"; exit 2; }
  AR=/tmp/ar_export
fi
AR=$(cd "$AR" && pwd) || { echo "no AR checkpoint directory: $1"; exit 2; }
LIMIT=${2:-${LIMIT:-80}}
TOTAL_S=${TOTAL_S:-285}
OUT=${OUT:-/tmp/speed_out}
DEVICE=${DEVICE:-cuda}
CKPT=${CKPT:-$REPO/diffusion_core/weights/default}
TEST_S=${TEST_S:-110}
KBENCH_S=${KBENCH_S:-45}
TESTS=${TESTS:-tests/kernels tests/diffusion_core/test_graphed.py tests/diffusion_core/test_gpu.py}
SITE=/tmp/site_speed
mkdir -p "$OUT"
left() { echo $((TOTAL_S - (SECONDS - START))); }
say() { echo "== [$((SECONDS - START)) s] $*"; }

# 1. install (fresh: a warm machine may hold an older /tmp/site from another script)
if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  rm -rf "$SITE"
  shopt -s nullglob
  wheels=("$REPO"/.whl/*.whl)
  if [ ${#wheels[@]} -gt 0 ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "${wheels[@]}" \
      || { echo "wheel install failed"; exit 1; }
  fi
  python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --upgrade --target "$SITE" "$REPO" \
    || { echo "package install failed"; exit 1; }
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
fi
cd /tmp
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  python3 -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
  python3 -c "import triton; print('triton', triton.__version__)" 2>&1 | tail -1
  python3 -c "import dllm_ls.kernels, dllm_ls.diffusion_core.graphed as g; print('dllm_ls from', g.__file__)"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
say "installed"

# 2. GPU tests, on a copy of tests/ (pytest puts the rootdir on sys.path: not the checkout)
T=/tmp/speed_tests
rm -rf "$T" && mkdir -p "$T" && cp -r "$REPO/tests" "$REPO/pyproject.toml" "$T/"
(cd "$T" && timeout "$TEST_S" python3 -m pytest -v -p no:cacheprovider -o addopts="" $TESTS \
   --junitxml "$OUT/gpu_tests.xml" > "$OUT/gpu_tests.log" 2>&1)
echo "pytest exit $?" >> "$OUT/gpu_tests.log"
grep -cE " PASSED" "$OUT/gpu_tests.log" | sed 's/^/tests passed: /'
grep -E " (FAILED|ERROR)|^(FAILED|ERROR)" "$OUT/gpu_tests.log" | head -20
grep -E "^=+ .*(passed|failed|error).* =+$|^pytest exit" "$OUT/gpu_tests.log" | tail -2
say "tests done"

# 3. S1: its budget is what is left, less the kernel benchmarks, the scoring and the floor (~40 s)
REM=$(left)
PROFILE_S=${PROFILE_S:-40}
[ "$DEVICE" = cuda ] || PROFILE_S=0
BUDGET=$((REM - KBENCH_S - PROFILE_S - 2 * ${BREAKDOWN_S:-0} - 45))
[ "$BUDGET" -lt 20 ] && BUDGET=20
say "bench speed: limit $LIMIT, budget ${BUDGET} s"
timeout $((REM - KBENCH_S - PROFILE_S - 2 * ${BREAKDOWN_S:-0})) python3 -m dllm_ls.trainer.bench_speed speed \
  --checkpoint "$CKPT" --ar-checkpoint "$AR" --device "$DEVICE" --limit "$LIMIT" --budget-s "$BUDGET" \
  ${EAGER_ROWS---eager-rows} --plot "$OUT/s1_pareto.png" --report "$OUT/s1_report.json" --json "$OUT/s1_results.json" \
  ${BENCH_ARGS:-} > "$OUT/s1.log" 2>&1
echo "bench speed exit $?" >> "$OUT/s1.log"
grep -vE "^  Q[12] " "$OUT/s1.log" | tail -60
say "bench speed done"

# 3b. where a cold completion's fixed cost goes (scripts/completion_breakdown.py; BREAKDOWN_S=0: skip),
#     and a step's and a prefill's device time (scripts/profile_step.py; PROFILE_S=0: skip)
if [ "${BREAKDOWN_S:-0}" -gt 0 ]; then
  for b in q2 q1; do
    timeout "$BREAKDOWN_S" python3 "$REPO/scripts/completion_breakdown.py" --ar "$AR" --bench $b --limit 100 \
      2>&1 | grep -v -i warn >> "$OUT/breakdown.txt"
  done
  cat "$OUT/breakdown.txt"
  say "breakdown done"
fi
if [ "$PROFILE_S" -gt 0 ]; then
  timeout "$PROFILE_S" python3 "$REPO/scripts/profile_step.py" 32 2>&1 | grep -v -i warn > "$OUT/profile.txt"
  cat "$OUT/profile.txt"
  say "profile done"
fi

# 4. kernel benchmarks with what is left
REM=$(left)
if [ "$REM" -gt 15 ]; then
  KARGS="--quick"
  [ "$DEVICE" = cpu ] && KARGS="--tiny --no-compile"
  timeout $((REM - 5)) python3 -m dllm_ls.kernels.bench $KARGS --budget-s $((REM - 25)) \
    --out "$OUT/kernels.json" --md "$OUT/kernels.md" > "$OUT/kernels_bench.log" 2>&1
  echo "kernel bench exit $?" >> "$OUT/kernels_bench.log"
  cat "$OUT/kernels.md" 2>/dev/null || tail -20 "$OUT/kernels_bench.log"
fi
say "done"
# at most 8 files come back from $OUT: the small ones travel in one archive
rm -f "$OUT"/.*.lock
(cd "$OUT" && tar czf small.tgz --remove-files --ignore-failed-read env.txt gpu_tests.xml gpu_tests.log kernels_bench.log \
  kernels.json profile.txt breakdown.txt)
ls -la "$OUT"
