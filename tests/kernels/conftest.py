"""Kernel tests: on a GPU the real Triton kernels; on a CPU the same launchers through Triton's
interpreter (TRITON_INTERPRET=1, set in tests/conftest.py before anything imports triton), or
skipped where triton is not installed (CI installs only the dev extras: the references serve)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

HAS_TRITON = importlib.util.find_spec("triton") is not None
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _patch_interpreter():
    """Two bugs of Triton 3.6's interpreter under numpy 2, mended for the tests (the kernels are
    unchanged): it multiplies bf16 operands as raw uint16 (numpy has no bfloat16), so they are
    widened to float32 first, which is what a tensor core does (exact products, fp32 sums); and
    its scalars are 1-element arrays that `int()` refuses, which breaks `range(lo, hi)` with
    bounds loaded from memory."""
    import numpy as np
    from triton.runtime import interpreter

    orig = interpreter.InterpreterBuilder.create_dot
    if getattr(orig, "_dllm_fixed", False):
        return
    orig_patch_tensor = interpreter._patch_lang_tensor

    def patch_tensor(tensor, scope):
        orig_patch_tensor(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(np.asarray(self.handle.data).reshape(-1)[0]))

    interpreter._patch_lang_tensor = patch_tensor

    def widen(h):
        if h.data.dtype == np.uint16 and h.dtype.is_bf16():
            import triton.language as tl

            return interpreter.TensorHandle((h.data.astype(np.uint32) << 16).view(np.float32), tl.float32)
        return h

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        return orig(self, widen(a), widen(b), d, input_precision, max_num_imprecise_acc)

    create_dot._dllm_fixed = True
    interpreter.InterpreterBuilder.create_dot = create_dot


@pytest.fixture
def triton_device():
    """The device the Triton launchers run on here: cuda, or cpu through the interpreter."""
    if not HAS_TRITON:
        pytest.skip("triton is not installed (pip install triton); the torch references serve")
    if DEVICE == "cpu":
        import os

        if os.environ.get("TRITON_INTERPRET") != "1":
            pytest.skip("no CUDA device and TRITON_INTERPRET is not 1")
        _patch_interpreter()
    return DEVICE
