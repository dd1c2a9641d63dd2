#!/usr/bin/env bash
# Restore an export that lives only in git history into runs/resume/, its weights split in two
# parts of <= 15 MB. A device call carries at most 64 MiB with the working tree, which holds the
# shipped model (~30 MB): a ~30 MB export beside it does not fit one call, so it travels in two,
# parked outside the checkout in between (the machine keeps /root while it is warm):
#   bash scripts/history_export.sh 1f3b361 docs/runs/s23/base_diffusion
#   run: mkdir -p /root/resume && cp runs/resume/model.st.aa /root/resume/     carry [".whl", "runs/resume/model.st.aa"]
#   run: cat /root/resume/model.st.aa runs/resume/model.st.ab > /root/resume/model.safetensors &&
#        cp runs/resume/*.json /root/resume/ && KINDS=diffusion INIT=/root/resume ... bash scripts/h100_train.sh start 17
#                                              carry [".whl", "runs/resume/model.st.ab", "runs/resume/config.json", "runs/resume/tokenizer.json"]
set -euo pipefail
cd "$(dirname "$0")/.."
REV=${1:?usage: history_export.sh REV DIR}
SRC=${2:?usage: history_export.sh REV DIR}
D=runs/resume
rm -rf "$D" && mkdir -p "$D"
for f in config.json tokenizer.json model.safetensors; do git show "$REV:$SRC/$f" > "$D/$f"; done
split -b 15m "$D/model.safetensors" "$D/model.st."
rm "$D/model.safetensors"
ls -la "$D"
