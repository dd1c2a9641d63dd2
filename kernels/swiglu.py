"""The SwiGLU gate of the feed-forward: silu(gate) * up, from the fused w1|w3 projection, in one launch.

    h = swiglu(gu)        # gu: (T, 2F) rows [gate | up] -> (T, F)

In torch this is two launches (silu, then the product) and a (T, F) temporary; at batch 1 a
decoding step is launch-bound, so the kernel saves one launch per layer. The product is computed
in float32 and rounded once to the input dtype (torch rounds silu's result, then the product).

With `x` (T, C), the feed-forward's RMSNorm rides along, as in `rope_kv`: gu is then x's
projection through the norm-weighted w13, and the kernel scales each row by x's 1/rms first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._triton import compiled, has_triton, next_pow2, time_providers, use_triton

try:
    import triton
    import triton.language as tl

    from .rope_kv import inv_rms, load_scaled
except ImportError:  # CPU wheels of torch come without triton: the reference serves
    triton = None


def swiglu_reference(gu: torch.Tensor, x: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    """Pure torch (what `model.FeedForward` computes between its two projections)."""
    if x is not None:
        from .rope_kv import rms_scale

        gu = (gu.float() * rms_scale(x, eps)).type_as(gu)
    gate, up = gu.chunk(2, dim=-1)
    return F.silu(gate) * up


if triton is not None:
    @triton.jit
    def _swiglu_kernel(gu, out, x, eps, s_gu, s_out, s_x, F_, C, BLOCK: tl.constexpr, NORM: tl.constexpr,
                       BLOCK_C: tl.constexpr):
        t = tl.program_id(0)
        f = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        m = f < F_
        r = 1.0
        if NORM:  # the row's 1/rms
            r = inv_rms(x + t * s_x, C, eps, BLOCK_C)
        g = load_scaled(gu + t * s_gu + f, m, r, NORM).to(tl.float32)
        u = load_scaled(gu + t * s_gu + F_ + f, m, r, NORM).to(tl.float32)
        tl.store(out + t * s_out + f, (g / (1.0 + tl.exp(-g)) * u).to(out.dtype.element_ty), mask=m)


def swiglu_triton(gu: torch.Tensor, x: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    """The Triton launcher (CUDA tensors, or CPU ones under TRITON_INTERPRET=1); gu is (T, 2F)."""
    if gu.dim() != 2 or gu.shape[1] % 2 or gu.stride(1) != 1:
        raise ValueError(f"swiglu: gu {tuple(gu.shape)} is not (T, 2F) with contiguous rows")
    T, F2 = gu.shape
    if x is not None and (x.dim() != 2 or x.shape[0] != T or x.stride(1) != 1):
        raise ValueError(f"swiglu: x {tuple(x.shape)} is not ({T}, C) with contiguous rows")
    out = torch.empty(T, F2 // 2, dtype=gu.dtype, device=gu.device)
    if out.numel() == 0:
        return out
    BLOCK = min(1024, max(16, next_pow2(F2 // 2)))
    norm = x is not None
    C = x.shape[1] if norm else 1
    _swiglu_kernel[(T, triton.cdiv(F2 // 2, BLOCK))](
        gu, out, x if norm else gu, float(eps), gu.stride(0), out.stride(0), x.stride(0) if norm else 0, F2 // 2, C,
        BLOCK=BLOCK, NORM=norm, BLOCK_C=next_pow2(C) if norm else 16, num_warps=4)
    return out


def swiglu(gu: torch.Tensor, x: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    """Triton on CUDA when it is installed, the torch reference elsewhere."""
    return (swiglu_triton if use_triton(gu) else swiglu_reference)(gu, x, eps)


# --- benchmark ---------------------------------------------------------------------------------

def bench(device: str = "cuda", dtype=torch.bfloat16, hidden: int = 1024, blocks=(1, 16, 64, 256, 1024),
          compile: bool = True) -> list[dict]:
    """ms per call of triton vs the torch reference eager vs torch.compile."""
    rows = []
    c = compile and compiled(swiglu_reference)
    for T in blocks:
        gu = torch.randn(T, 2 * hidden, device=device, dtype=dtype)
        rows += time_providers({"kernel": "swiglu", "T": T}, {
            "torch": lambda: swiglu_reference(gu),
            "torch.compile": c and (lambda: c(gu)),
            "triton": has_triton() and gu.is_cuda and (lambda: swiglu_triton(gu)),
        }, nbytes=int(1.5 * gu.numel() * gu.element_size()), graph=gu.is_cuda)
    return rows
