# Sourced by the device scripts (h100_train.sh, h100_post.sh): installs the carried wheels (.whl,
# once per machine) and this checkout (every call: a warm machine may hold an older one) into
# /tmp/site and puts it on PYTHONPATH. Run from the checkout's root.
# shipped_checkpoint prints the package's default model directory.
if [ ! -f /tmp/site/.wheels_ok ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  touch /tmp/site/.wheels_ok
fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --upgrade --target /tmp/site . || exit 1
export PYTHONPATH=/tmp/site

shipped_checkpoint() {  # the package's default model (an export directory)
  (cd /tmp && python3 -c "from dllm_ls.diffusion_core.checkpoint import DEFAULT_CHECKPOINT as d; print(d)")  # not the checkout: its dllm_ls/ shadows the package
}
