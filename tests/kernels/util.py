"""The tolerance rule of the kernel tests: a kernel may err at most twice as much as torch does in
the same dtype, plus a few ulps: err(kernel) <= 2 * err(torch, same dtype) + atol, both errors
measured against a float64 reference."""

from __future__ import annotations

import torch

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def max_err(a: torch.Tensor, ref64: torch.Tensor) -> float:
    return (a.double() - ref64).abs().max().item() if a.numel() else 0.0


def ulps(dtype: torch.dtype, ref64: torch.Tensor, n: float = 2.0) -> float:
    """n units in the last place of `dtype` at the reference's largest magnitude (at least 1)."""
    scale = max(1.0, ref64.abs().max().item()) if ref64.numel() else 1.0
    return n * torch.finfo(dtype).eps * scale


def assert_within_torch_error(out, torch_out, ref64, dtype, *, n_ulps: float = 2.0, what: str = ""):
    e_k, e_t = max_err(out, ref64), max_err(torch_out, ref64)
    bound = 2 * e_t + ulps(dtype, ref64, n_ulps)
    assert e_k <= bound, f"{what}: kernel error {e_k:.3g} > 2 * torch error {e_t:.3g} + atol ({bound:.3g})"
