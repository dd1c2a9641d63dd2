"""Fused linear + cross-entropy over the vocabulary, chunked, forward and backward (training).

    ce = fused_linear_cross_entropy(x, weight, target)      # (N,) float32, per row

x (N, C) hidden states, weight (V, C) the (tied) output head, target (N,) ids (ignore_index rows
get 0 and no gradient). Equal to `F.cross_entropy(F.linear(x, weight).float(), target,
reduction="none")`, but the (N, V) logits never exist at once: rows go through in chunks; each
chunk's logits are computed (in x's dtype, as the model does), reduced to the row's log-sum-exp
and loss, and dropped. The backward recomputes a chunk's logits, turns them in place into
dlogits = (softmax - onehot) * dce (one pass over the row), and accumulates dx = dlogits W and
dW += dlogits^T x. At N = 32k tokens and V = 8192 that saves the 1 GB of fp32 logits and the 1 GB
of their gradient that the unfused path keeps for the backward, for one extra matmul.

The Triton kernels are the per-row passes (online log-sum-exp; in-place softmax gradient); without
Triton (a CPU) the same chunked algorithm runs with torch ops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._triton import compiled, has_triton, next_pow2, time_providers

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None


def fused_linear_cross_entropy_reference(x, weight, target, ignore_index: int = -100):
    """The unfused torch path: (N, V) logits in float32, then cross-entropy per row."""
    return F.cross_entropy(F.linear(x, weight).float(), target, reduction="none", ignore_index=ignore_index)


# --- triton ------------------------------------------------------------------------------------

if triton is not None:

    @triton.jit
    def _lse_kernel(X, TGT, LSE, CE, sx, V, ignore_index, BLOCK_V: tl.constexpr):
        row = tl.program_id(0)
        offs = tl.arange(0, BLOCK_V)
        m = -3.0e38
        s = 0.0
        for v0 in range(0, V, BLOCK_V):
            idx = v0 + offs
            x = tl.load(X + row * sx + idx, mask=idx < V, other=float("-inf")).to(tl.float32)
            new_m = tl.maximum(m, tl.max(x, axis=0))
            s = s * tl.exp(m - new_m) + tl.sum(tl.exp(x - new_m), axis=0)
            m = new_m
        lse = m + tl.log(s)
        tgt = tl.load(TGT + row)
        ok = tgt != ignore_index
        xt = tl.load(X + row * sx + tl.where(ok, tgt, 0)).to(tl.float32)
        tl.store(LSE + row, lse)
        tl.store(CE + row, tl.where(ok, lse - xt, 0.0))

    @triton.jit
    def _grad_kernel(X, TGT, LSE, DCE, sx, V, ignore_index, BLOCK_V: tl.constexpr):
        """In place: X[row] <- (softmax(X[row]) - onehot(target)) * dce[row] (0 for ignored rows)."""
        row = tl.program_id(0)
        offs = tl.arange(0, BLOCK_V)
        lse = tl.load(LSE + row)
        tgt = tl.load(TGT + row)
        g = tl.load(DCE + row).to(tl.float32)
        g = tl.where(tgt != ignore_index, g, 0.0)
        for v0 in range(0, V, BLOCK_V):
            idx = v0 + offs
            ok = idx < V
            x = tl.load(X + row * sx + idx, mask=ok, other=0.0).to(tl.float32)
            d = (tl.exp(x - lse) - tl.where(idx == tgt, 1.0, 0.0)) * g
            tl.store(X + row * sx + idx, d.to(X.dtype.element_ty), mask=ok)


def _row_lse_ce(logits, target, ignore_index, triton_ok):
    """(lse, ce) of a chunk's logits (n, V)."""
    n, V = logits.shape
    if triton_ok:
        lse = torch.empty(n, dtype=torch.float32, device=logits.device)
        ce = torch.empty(n, dtype=torch.float32, device=logits.device)
        _lse_kernel[(n,)](logits, target, lse, ce, logits.stride(0), V, ignore_index,
                          BLOCK_V=min(4096, next_pow2(V)), num_warps=8)
        return lse, ce
    lf = logits.float()
    lse = torch.logsumexp(lf, dim=-1)
    ok = target != ignore_index
    picked = lf.gather(1, torch.where(ok, target, 0)[:, None])[:, 0]
    return lse, torch.where(ok, lse - picked, 0.0)


def _row_grad_(logits, target, lse, dce, ignore_index, triton_ok):
    """logits <- (softmax - onehot) * dce, in place (in logits' dtype)."""
    n, V = logits.shape
    if triton_ok:
        _grad_kernel[(n,)](logits, target, lse, dce, logits.stride(0), V, ignore_index,
                           BLOCK_V=min(4096, next_pow2(V)), num_warps=8)
        return logits
    ok = target != ignore_index
    p = torch.exp(logits.float() - lse[:, None])
    p.scatter_add_(1, torch.where(ok, target, 0)[:, None], -ok.float()[:, None])
    logits.copy_(p * torch.where(ok, dce.float(), 0.0)[:, None])
    return logits


class FusedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, target, ignore_index, chunk, triton_ok):
        N = x.shape[0]
        lse = torch.empty(N, dtype=torch.float32, device=x.device)
        ce = torch.empty(N, dtype=torch.float32, device=x.device)
        for i in range(0, N, chunk):
            logits = x[i:i + chunk] @ weight.t()  # (n, V) in x's dtype
            lse[i:i + chunk], ce[i:i + chunk] = _row_lse_ce(logits, target[i:i + chunk], ignore_index, triton_ok)
        ctx.save_for_backward(x, weight, target, lse)
        ctx.ignore_index, ctx.chunk, ctx.triton_ok = ignore_index, chunk, triton_ok
        return ce

    @staticmethod
    def backward(ctx, dce):
        x, weight, target, lse = ctx.saved_tensors
        dce = dce.contiguous()
        dx = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        dw = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if ctx.needs_input_grad[1] else None
        for i in range(0, x.shape[0], ctx.chunk):
            xc = x[i:i + ctx.chunk]
            g = _row_grad_(xc @ weight.t(), target[i:i + ctx.chunk], lse[i:i + ctx.chunk], dce[i:i + ctx.chunk],
                           ctx.ignore_index, ctx.triton_ok)  # (n, V) dlogits
            if dx is not None:
                dx[i:i + ctx.chunk] = g @ weight
            if dw is not None:
                dw.add_(g.t() @ xc)  # the chunk's part in x's dtype, summed over chunks in float32
        return dx, (dw.to(weight.dtype) if dw is not None else None), None, None, None, None


def default_chunk(N: int, V: int, element_size: int) -> int:
    """Rows per chunk: about 256 MB of logits at a time, at least 256 rows."""
    return max(256, min(N, (256 << 20) // max(1, V * element_size)))


def fused_linear_cross_entropy(x, weight, target, ignore_index: int = -100, chunk: int | None = None,
                               use_triton_kernels: bool | None = None):
    """Per-row CE (N,) float32 of F.linear(x, weight) against target; differentiable in x and weight.
    Triton's row kernels on CUDA when installed (or when `use_triton_kernels` says so), torch ops elsewhere."""
    if x.dim() != 2 or weight.dim() != 2 or target.shape != x.shape[:1]:
        raise ValueError("fused_linear_cross_entropy: x (N, C), weight (V, C), target (N,)")
    triton_ok = (x.is_cuda and has_triton()) if use_triton_kernels is None else use_triton_kernels
    chunk = chunk or default_chunk(x.shape[0], weight.shape[0], x.element_size())
    return FusedLinearCrossEntropy.apply(x, weight, target.contiguous(), ignore_index, chunk, triton_ok)


# --- benchmark ---------------------------------------------------------------------------------

def bench(device: str = "cuda", dtype=torch.bfloat16, C: int = 384, V: int = 8192,
          rows=(4096, 16384, 32768), compile: bool = True) -> list[dict]:
    """Forward + backward ms and peak memory: fused (triton) vs torch eager vs torch.compile."""
    out = []
    c = compile and compiled(fused_linear_cross_entropy_reference)
    for N in rows:
        x = torch.randn(N, C, device=device, dtype=dtype, requires_grad=True)
        w = (torch.randn(V, C, device=device, dtype=dtype) * 0.05).requires_grad_()
        t = torch.randint(0, V, (N,), device=device)

        def run(fn):
            def go():
                x.grad = w.grad = None
                fn(x, w, t).sum().backward()
            return go

        out += time_providers({"kernel": "fused_ce", "N": N, "V": V}, {
            "torch": run(fused_linear_cross_entropy_reference),
            "torch.compile": c and run(c),
            "triton": has_triton() and x.is_cuda and run(lambda a, b, c_: fused_linear_cross_entropy(a, b, c_)),
        }, peak=x.is_cuda, warmup=2, rep=20)
    return out
