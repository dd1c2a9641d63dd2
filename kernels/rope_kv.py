"""RoPE of the queries and keys and the K/V cache write of a decoding step, in one launch.

    q = rope_kv(qkv, cos, sin, k_cache, v_cache, slots, n_head)        # (1, H, T, D)

qkv: (T, 3*H*D), the rows of the fused q/k/v projection (its last dim contiguous). cos, sin:
(T, D/2) float32, the rotation of each row's position. k_cache, v_cache: (H, S, D) buffers (one
layer of a `KVCache`, batch 1); row t's rotated key and its value are written at slot
`slots[t]`. Returns the rotated queries. The rotation is `model.apply_rope`'s: pairs (x[:D/2],
x[D/2:]) in float32, rounded once to the input dtype.

In torch this is ~8 launches (the float casts, the products and sums, the concatenation, two
`index_copy_`); at batch 1 a step is launch-bound, so the kernel saves ~7 launches per layer. One
program per (row, head) reads the row's q, k and v once.

With `x` (T, C), the attention's RMSNorm rides along: qkv is then x's projection through the
norm-weighted `wqkv` (`W * norm.weight`), and the kernel scales each row by x's 1/rms
(rsqrt(mean(x^2) + eps), float32) before the rotation: RMSNorm(x) @ W.T = (x @ (W * g).T) / rms(x),
one launch fewer per layer.
"""

from __future__ import annotations

import torch

from ._triton import compiled, has_triton, next_pow2, time_providers, use_triton

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU wheels of torch come without triton: the reference serves
    triton = None


# --- reference ---------------------------------------------------------------------------------

def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    d = x.shape[-1] // 2
    x1, x2 = x[..., :d].float(), x[..., d:].float()
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)


def rms_scale(x: torch.Tensor, eps: float) -> torch.Tensor:
    """1 / rms of each row of x, float32 (T, 1): RMSNorm without its weight."""
    x32 = x.float()
    return torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)


def rope_kv_reference(qkv, cos, sin, k_cache, v_cache, slots, n_head: int, x=None, eps: float = 1e-5):
    """Pure torch (what `model.Attention` computes, then `index_copy_` into the cache)."""
    T = qkv.shape[0]
    D = qkv.shape[1] // (3 * n_head)
    if x is not None:
        qkv = (qkv.float() * rms_scale(x, eps)).type_as(qkv)
    q, k, v = qkv.view(T, 3, n_head, D).permute(1, 2, 0, 3)  # (H, T, D) each
    q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
    k_cache.index_copy_(1, slots, k.to(k_cache.dtype))
    v_cache.index_copy_(1, slots, v.to(v_cache.dtype))
    return q[None]


# --- Triton ------------------------------------------------------------------------------------

if triton is not None:
    @triton.jit
    def inv_rms(x, C, eps, BLOCK_C: tl.constexpr):
        """1 / rms of the row at x (C elements), float32: RMSNorm without its weight."""
        xc = tl.arange(0, BLOCK_C)
        xr = tl.load(x + xc, mask=xc < C, other=0.0).to(tl.float32)
        return 1.0 / tl.sqrt(tl.sum(xr * xr, axis=0) / C + eps)

    @triton.jit
    def load_scaled(ptr, m, r, NORM: tl.constexpr):
        """A slice of a projection's row, times the row's 1/rms and rounded to its dtype when NORM
        (as the references, and an unfused norm + projection, round)."""
        v = tl.load(ptr, mask=m, other=0.0)
        if NORM:
            v = (v.to(tl.float32) * r).to(ptr.dtype.element_ty)
        return v

    @triton.jit
    def _rope_kv_kernel(qkv, cos, sin, kc, vc, slots, q_out, x, eps,
                        s_qkv, s_cs, s_kh, s_ks, s_kd, s_vh, s_vs, s_vd, s_qh, s_qt, s_x,
                        C, HALF, BLOCK: tl.constexpr, NORM: tl.constexpr, BLOCK_C: tl.constexpr):
        t = tl.program_id(0)
        h = tl.program_id(1)
        d = tl.arange(0, BLOCK)
        m = d < HALF
        row = qkv + t * s_qkv + h * 2 * HALF
        c = tl.load(cos + t * s_cs + d, mask=m, other=0.0)
        s = tl.load(sin + t * s_cs + d, mask=m, other=0.0)
        slot = tl.load(slots + t)
        r = 1.0
        if NORM:  # the row's 1/rms, which scales q, k and v alike
            r = inv_rms(x + t * s_x, C, eps, BLOCK_C)
        # q: rotated, out
        x1 = load_scaled(row + d, m, r, NORM).to(tl.float32)
        x2 = load_scaled(row + HALF + d, m, r, NORM).to(tl.float32)
        qo = q_out + h * s_qh + t * s_qt
        tl.store(qo + d, (x1 * c - x2 * s).to(q_out.dtype.element_ty), mask=m)
        tl.store(qo + HALF + d, (x1 * s + x2 * c).to(q_out.dtype.element_ty), mask=m)
        # k: rotated, rounded to the input dtype (as the reference), into the cache
        x1 = load_scaled(row + C + d, m, r, NORM).to(tl.float32)
        x2 = load_scaled(row + C + HALF + d, m, r, NORM).to(tl.float32)
        ko = kc + h * s_kh + slot * s_ks
        k1 = (x1 * c - x2 * s).to(qkv.dtype.element_ty)
        k2 = (x1 * s + x2 * c).to(qkv.dtype.element_ty)
        tl.store(ko + d * s_kd, k1.to(kc.dtype.element_ty), mask=m)
        tl.store(ko + (HALF + d) * s_kd, k2.to(kc.dtype.element_ty), mask=m)
        # v: copied into the cache
        vo = vc + h * s_vh + slot * s_vs
        v1 = load_scaled(row + 2 * C + d, m, r, NORM)
        v2 = load_scaled(row + 2 * C + HALF + d, m, r, NORM)
        tl.store(vo + d * s_vd, v1.to(vc.dtype.element_ty), mask=m)
        tl.store(vo + (HALF + d) * s_vd, v2.to(vc.dtype.element_ty), mask=m)


def rope_kv_triton(qkv, cos, sin, k_cache, v_cache, slots, n_head: int, x=None, eps: float = 1e-5):
    """The Triton launcher (CUDA tensors, or CPU ones under TRITON_INTERPRET=1)."""
    T, C3 = qkv.shape
    C = C3 // 3
    D = C // n_head
    if C3 != 3 * C or C != n_head * D or D % 2 or qkv.stride(1) != 1:
        raise ValueError(f"rope_kv: qkv {tuple(qkv.shape)} is not (T, 3 * {n_head} heads * an even head dim)")
    if x is not None and (x.shape != (T, C) or x.stride(1) != 1):
        raise ValueError(f"rope_kv: x {tuple(x.shape)} is not ({T}, {C}) with contiguous rows")
    if cos.stride(1) != 1 or sin.stride(1) != 1 or cos.stride() != sin.stride():
        cos, sin = cos.contiguous(), sin.contiguous()
    q = torch.empty(1, n_head, T, D, dtype=qkv.dtype, device=qkv.device)
    if T == 0:
        return q
    norm = x is not None
    _rope_kv_kernel[(T, n_head)](
        qkv, cos, sin, k_cache, v_cache, slots, q, x if norm else qkv, float(eps),
        qkv.stride(0), cos.stride(0), *k_cache.stride(), *v_cache.stride(), q.stride(1), q.stride(2),
        x.stride(0) if norm else 0, C, D // 2, BLOCK=max(16, next_pow2(D // 2)), NORM=norm,
        BLOCK_C=next_pow2(C) if norm else 16, num_warps=1)
    return q


def rope_kv(qkv, cos, sin, k_cache, v_cache, slots, n_head: int, x=None, eps: float = 1e-5):
    """Triton on CUDA when it is installed, the torch reference elsewhere."""
    fn = rope_kv_triton if use_triton(qkv) else rope_kv_reference
    return fn(qkv, cos, sin, k_cache, v_cache, slots, n_head, x, eps)


# --- benchmark ---------------------------------------------------------------------------------

def bench(device: str = "cuda", dtype=torch.bfloat16, H: int = 6, D: int = 64, blocks=(1, 16, 64, 256, 1024),
          S: int = 2048, compile: bool = True) -> list[dict]:
    """ms per call of triton vs the torch reference eager vs torch.compile."""
    rows = []
    c = compile and compiled(rope_kv_reference)
    for T in blocks:
        qkv = torch.randn(T, 3 * H * D, device=device, dtype=dtype)
        ang = torch.rand(T, D // 2, device=device) * 6.28
        cos, sin = ang.cos(), ang.sin()
        kc = torch.zeros(H, S, D, device=device, dtype=dtype)
        vc = torch.zeros_like(kc)
        slots = torch.arange(T, device=device) + 7
        rows += time_providers({"kernel": "rope_kv", "T": T}, {
            "torch": lambda: rope_kv_reference(qkv, cos, sin, kc, vc, slots, H),
            "torch.compile": c and (lambda: c(qkv, cos, sin, kc, vc, slots, H)),
            "triton": has_triton() and qkv.is_cuda and (lambda: rope_kv_triton(qkv, cos, sin, kc, vc, slots, H)),
        }, nbytes=3 * qkv.numel() * qkv.element_size(), graph=qkv.is_cuda)
    return rows
