#!/usr/bin/env bash
# The server path (S2) on one GPU, this checkout beside an older one, side by side in one call:
#
#   git archive HEAD dllm_ls diffusion_core kernels trainer lsp_server pyproject.toml README.md \
#       ':!diffusion_core/weights' | gzip > runs/old_src.tgz          (here, before the change)
#   bash scripts/h100_server_ab.sh runs/old_src.tgz [LIMIT]          carry: [".whl", "runs/old_src.tgz"]
#
# Both load this checkout's shipped model. Phases (each one's files under $OUT):
#   1. the GPU tests of the graphed decoders (this checkout)        -> gpu_tests.log
#   2. scripts/server_step_profile.py, old then new                 -> profile.tgz
#   3. `dllm-ls bench s2` on the held-out files in S2_MODES (line auto), new then old, LIMIT documents
#      each (default 50)                                            -> s2.tgz
# Knobs: TEST_S (60; 0 skips the tests), PROFILE_LIMIT (30; 0 skips the profile), S2_MODES ("" skips
# S2). Phase 3 adds to s2.tgz what an earlier run of this script left there (one call, several runs).
set -uo pipefail
export PYTHONUNBUFFERED=1
START=$SECONDS
OLD=${1:?usage: bash scripts/h100_server_ab.sh OLD_SRC_TGZ [LIMIT]}
LIMIT=${2:-50}
REPO=$PWD
OUT=${OUT:-/tmp/ab_out}
mkdir -p "$OUT"
say() { echo "== [$((SECONDS - START)) s] $*"; }
source scripts/device_site.sh  # the wheels and this checkout -> /tmp/site
rm -rf /tmp/old_src /tmp/site_old && mkdir -p /tmp/old_src && tar xzf "$OLD" -C /tmp/old_src || exit 2
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --target /tmp/site_old /tmp/old_src \
  || { echo "old package install failed"; exit 1; }
CKPT=$(shipped_checkpoint)
declare -A SITE=([new]=/tmp/site [old]=/tmp/site_old:/tmp/site)
say "installed (model $CKPT)"
T=/tmp/ab_tests
if [ "${TEST_S:-60}" != 0 ]; then
  rm -rf "$T" && mkdir -p "$T" && cp -r "$REPO/tests" "$REPO/pyproject.toml" "$T/"
  (cd "$T" && timeout "${TEST_S:-60}" python3 -m pytest -q -p no:cacheprovider -o addopts="" -m gpu \
     tests/diffusion_core/test_graphed.py > "$OUT/gpu_tests.log" 2>&1)
  echo "pytest exit $?" >> "$OUT/gpu_tests.log"
  tail -2 "$OUT/gpu_tests.log"
  say "tests"
fi
P=/tmp/ab_profile && mkdir -p $P
[ "${PROFILE_LIMIT:-30}" = 0 ] || for v in old new; do
  (cd /tmp && PYTHONPATH=${SITE[$v]} timeout 120 python3 "$REPO/scripts/server_step_profile.py" --checkpoint "$CKPT" \
     --limit "${PROFILE_LIMIT:-30}" > "$P/profile_$v.txt" 2>&1)
  say "profile $v"; sed -n 1,4p "$P/profile_$v.txt"
done
[ -n "$(ls $P)" ] && (cd $P && tar czf "$OUT/profile.tgz" *)
S=/tmp/ab_s2 && mkdir -p $S
for mode in ${S2_MODES-line auto}; do
  for v in new old; do
    (cd /tmp && PYTHONPATH=${SITE[$v]} timeout 150 python3 -m dllm_ls.cli bench s2 --docs files --mode "$mode" \
       --limit "$LIMIT" --device cuda --checkpoint "$CKPT" --json "$S/s2_$v.json" > "$S/s2_${mode}_$v.log" 2>&1)
    say "s2 $mode $v (exit $?)"
    grep -E "warm_p50|cold_p50|keystroke_p50|steps_p50|core_compute" "$S/s2_${mode}_$v.log"
  done
  (cd $S && tar czf "$OUT/s2.tgz" *)
done
say "done"
