"""Block-decode attention: T new queries (1-128) over a KV cache plus the T new keys themselves.

    out = block_attention(q, k, v, cache_len, self_mask)        # (B, H, T, D)

q: (B, H, T, D), the queries of the T new tokens. k, v: (B, H, S, D) buffers (a preallocated KV
cache) holding the cached keys at [0, cache_len) and the new tokens' keys at
[cache_len, cache_len + T); slots after that are ignored. Every query attends to every cached key;
among the new tokens, `self_mask` (T, T) bool says who sees whom (True = attend; None = everyone,
a bidirectional block). `cache_len` is an int, or an integer tensor on the device that the kernel
reads itself: no host sync, so a CUDA graph can capture the launch and replay it as the cache grows.

The Triton kernel is flash-decoding: the cache is split into NSPLIT chunks, one program per
(chunk, batch x head, tile of queries) runs an online softmax over its chunk and writes a partial
output and its log-sum-exp; one more "split" covers the new keys under `self_mask`; a second kernel
merges the partials (weights exp(lse_s - max lse)). With a tensor `cache_len` the grid is sized for
the whole buffer and programs past the length exit at once.
"""

from __future__ import annotations

import math

import torch

from ._triton import compiled, has_triton, next_pow2, time_providers, use_triton

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU wheels of torch come without triton: the reference serves
    triton = None


# --- reference ---------------------------------------------------------------------------------

def full_mask(cache_len, T: int, S: int, self_mask: torch.Tensor | None, device) -> torch.Tensor:
    """The (T, S) bool mask over the key slots of the buffer (static shape even for a tensor cache_len)."""
    s = torch.arange(S, device=device)
    rel = s - cache_len  # slot -> index among the new keys
    in_self = (rel >= 0) & (rel < T)
    if self_mask is None:
        sees_self = in_self.unsqueeze(0).expand(T, S)
    else:
        sees_self = self_mask.to(device)[:, rel.clamp(0, T - 1)] & in_self
    return (s < cache_len).unsqueeze(0) | sees_self


def block_attention_reference(q, k, v, cache_len, self_mask=None, scale: float | None = None):
    """Pure torch: softmax(q k^T * scale) v over the visible slots, scores and products in the
    input dtype, the softmax in float32 (as a fused kernel rounds its probabilities)."""
    B, H, T, D = q.shape
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    if isinstance(cache_len, int):  # slice: only the live slots
        k, v = k[:, :, :cache_len + T], v[:, :, :cache_len + T]
    mask = full_mask(cache_len, T, k.shape[2], self_mask, q.device)  # (T, S)
    scores = (q @ k.transpose(-1, -2)) * scale  # (B, H, T, S)
    p = torch.softmax(scores.float().masked_fill(~mask, float("-inf")), dim=-1)
    return p.to(v.dtype) @ v


# --- triton ------------------------------------------------------------------------------------

if triton is not None:

    # the lengths change from call to call: no recompilation for each (Triton specializes ints on
    # ==1 and %16 by default)
    @triton.jit(do_not_specialize=["T", "CHUNK", "NSPLIT", "MAX_LEN"])
    def _split_kernel(Q, K, V, LEN, MASK, OP, LSE,
                      sq_b, sq_h, sq_t, sq_d, sk_b, sk_h, sk_s, sk_d, sv_b, sv_h, sv_s, sv_d,
                      sm_q, sm_k, H, T, D, CHUNK, NSPLIT, MAX_LEN, qk_scale,
                      HAS_MASK: tl.constexpr, IEEE: tl.constexpr,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
        split = tl.program_id(0)
        bh = tl.program_id(1)
        b = bh // H
        h = bh % H
        offs_m = tl.program_id(2) * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, BLOCK_D)
        offs_n = tl.arange(0, BLOCK_N)
        row_ok = offs_m < T
        d_ok = offs_d < D
        L = tl.minimum(tl.load(LEN).to(tl.int32), MAX_LEN)  # never past the buffer
        q = tl.load(Q + b * sq_b + h * sq_h + offs_m[:, None] * sq_t + offs_d[None, :] * sq_d,
                    mask=row_ok[:, None] & d_ok[None, :], other=0.0)
        is_self = split == NSPLIT
        if is_self:  # the new tokens' own keys, at slots [L, L + T)
            lo = L
            hi = L + T
        else:  # a chunk of the cache
            lo = split * CHUNK
            hi = tl.minimum(lo + CHUNK, L)
        m_i = tl.full([BLOCK_M], -1.0e30, tl.float32)  # finite: no inf - inf below
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
        kb = K + b * sk_b + h * sk_h
        vb = V + b * sv_b + h * sv_h
        for n0 in range(lo, hi, BLOCK_N):
            n = n0 + offs_n
            n_ok = n < hi
            kt = tl.load(kb + n[None, :] * sk_s + offs_d[:, None] * sk_d, mask=n_ok[None, :] & d_ok[:, None],
                         other=0.0)  # (BLOCK_D, BLOCK_N)
            if IEEE:
                s = tl.dot(q, kt, input_precision="ieee")
            else:
                s = tl.dot(q, kt)
            s = s * qk_scale  # log2 domain
            ok = n_ok[None, :] & row_ok[:, None]
            if HAS_MASK:
                mv = tl.load(MASK + offs_m[:, None] * sm_q + (n - L)[None, :] * sm_k,
                             mask=ok & is_self, other=1)
                ok = ok & (mv != 0)
            s = tl.where(ok, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            alpha = tl.exp2(m_i - m_new)
            p = tl.exp2(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, axis=1)
            vt = tl.load(vb + n[:, None] * sv_s + offs_d[None, :] * sv_d, mask=n_ok[:, None] & d_ok[None, :],
                         other=0.0)  # (BLOCK_N, BLOCK_D)
            if IEEE:
                acc = acc * alpha[:, None] + tl.dot(p, vt, input_precision="ieee")
            else:
                acc = acc * alpha[:, None] + tl.dot(p.to(vt.dtype), vt)
            m_i = m_new
        has = l_i > 0
        o = acc / tl.where(has, l_i, 1.0)[:, None]
        lse = tl.where(has, m_i + tl.log2(tl.where(has, l_i, 1.0)), float("-inf"))
        base = (split * tl.num_programs(1) + bh) * T
        tl.store(OP + (base + offs_m)[:, None] * D + offs_d[None, :], o, mask=row_ok[:, None] & d_ok[None, :])
        tl.store(LSE + base + offs_m, lse, mask=row_ok)

    @triton.jit(do_not_specialize=["T", "NPARTS", "BH"])
    def _combine_kernel(OP, LSE, OUT, so_b, so_h, so_t, so_d, H, T, D, NPARTS, BH,
                        BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr):
        row = tl.program_id(0)  # (b*H + h) * T + t
        bh = row // T
        t = row % T
        b = bh // H
        h = bh % H
        offs_s = tl.arange(0, BLOCK_S)
        offs_d = tl.arange(0, BLOCK_D)
        s_ok = offs_s < NPARTS
        d_ok = offs_d < D
        part = (offs_s * BH + bh) * T + t
        lse = tl.load(LSE + part, mask=s_ok, other=float("-inf"))
        m = tl.maximum(tl.max(lse, axis=0), -1.0e30)
        w = tl.exp2(lse - m)  # 0 for empty parts
        o = tl.load(OP + part[:, None] * D + offs_d[None, :], mask=s_ok[:, None] & d_ok[None, :], other=0.0)
        out = tl.sum(w[:, None] * o, axis=0) / tl.maximum(tl.sum(w, axis=0), 1.0e-30)
        tl.store(OUT + b * so_b + h * so_h + t * so_t + offs_d * so_d, out.to(OUT.dtype.element_ty), mask=d_ok)


MAX_QUERIES = 1024  # a decoding block (1-128 queries x 2) or a prompt's prefill (a bucket up to 1,024)
_SM_COUNT: dict[int, int] = {}


def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return 8
    i = device.index if device.index is not None else torch.cuda.current_device()
    if i not in _SM_COUNT:
        _SM_COUNT[i] = torch.cuda.get_device_properties(i).multi_processor_count
    return _SM_COUNT[i]


def plan_splits(max_cache: int, programs_per_split: int, device: torch.device, block_n: int = 64,
                chunk: int | None = None) -> tuple[int, int]:
    """(CHUNK, NSPLIT): chunks of the cache (multiples of block_n) so that the grid has about two
    programs per SM; NSPLIT = 0 for an empty cache."""
    if max_cache <= 0:
        return block_n, 0
    if chunk is None:
        target = max(1, 2 * _sm_count(device) // max(1, programs_per_split))
        chunk = max(block_n, -(-max_cache // target))
    chunk = -(-chunk // block_n) * block_n
    return chunk, -(-max_cache // chunk)


def block_attention_triton(q, k, v, cache_len, self_mask=None, scale: float | None = None,
                           chunk: int | None = None):
    """The Triton launcher (CUDA tensors, or CPU ones under TRITON_INTERPRET=1)."""
    B, H, T, D = q.shape
    S = k.shape[2]
    if not 1 <= T <= MAX_QUERIES:
        raise ValueError(f"block_attention: {T} queries; the kernel takes 1-{MAX_QUERIES}")
    if isinstance(cache_len, int):
        if cache_len + T > S:
            raise ValueError(f"block_attention: cache_len {cache_len} + {T} queries > {S} slots")
        max_cache = cache_len
        len_t = torch.tensor([cache_len], dtype=torch.int32, device=q.device)
    else:
        max_cache = S - T
        len_t = cache_len.reshape(1)
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    BLOCK_M = max(16, min(64, next_pow2(T)))
    BLOCK_N = 64 if D <= 64 else 32
    BLOCK_D = max(16, next_pow2(D))
    n_mt = -(-T // BLOCK_M)
    CHUNK, NSPLIT = plan_splits(max_cache, B * H * n_mt, q.device, BLOCK_N, chunk)
    parts = NSPLIT + 1
    op = torch.empty(parts, B * H, T, D, dtype=torch.float32, device=q.device)
    lse = torch.empty(parts, B * H, T, dtype=torch.float32, device=q.device)
    has_mask = self_mask is not None
    m = self_mask if has_mask else len_t  # a dummy pointer when there is no mask
    sm = (m.stride(0), m.stride(1)) if has_mask else (0, 0)
    if has_mask and m.dtype == torch.bool:
        m = m.view(torch.uint8) if m.is_contiguous() else m.to(torch.uint8)
        sm = (m.stride(0), m.stride(1))
    _split_kernel[(parts, B * H, n_mt)](
        q, k, v, len_t, m, op, lse,
        *q.stride(), *k.stride(), *v.stride(), *sm, H, T, D, CHUNK, NSPLIT, max_cache, scale * 1.4426950408889634,
        HAS_MASK=has_mask, IEEE=q.dtype == torch.float32,
        BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_D=BLOCK_D, num_warps=4)
    # (B, H, T, D) with the strides of a (B, T, H, D) tensor: the caller's transpose(1, 2) back to
    # rows is then a view, not a copy
    out = torch.empty(B, T, H, D, dtype=q.dtype, device=q.device).transpose(1, 2)
    _combine_kernel[(B * H * T,)](op, lse, out, *out.stride(), H, T, D, parts, B * H,
                                  BLOCK_S=max(2, next_pow2(parts)), BLOCK_D=BLOCK_D, num_warps=1)
    return out


def block_attention(q, k, v, cache_len, self_mask=None, scale: float | None = None):
    """Triton on CUDA when it is installed, the torch reference elsewhere."""
    if use_triton(q):
        return block_attention_triton(q, k, v, cache_len, self_mask, scale)
    return block_attention_reference(q, k, v, cache_len, self_mask, scale)


# --- benchmark ---------------------------------------------------------------------------------

def bench(device: str = "cuda", dtype=torch.bfloat16, H: int = 6, D: int = 64,
          blocks=(1, 4, 16, 32, 64, 128), cache_lens=(256, 1024, 4096, 8192), compile: bool = True) -> list[dict]:
    """ms per call and effective GB/s (K/V bytes read) of triton vs torch SDPA eager vs torch.compile."""
    import torch.nn.functional as F

    rows = []
    c = compile and compiled(lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m))
    for L in cache_lens:
        for T in blocks:
            q = torch.randn(1, H, T, D, device=device, dtype=dtype)
            k = torch.randn(1, H, L + T, D, device=device, dtype=dtype)
            v = torch.randn(1, H, L + T, D, device=device, dtype=dtype)
            mask = torch.ones(T, L + T, dtype=torch.bool, device=device)[None, None]

            def sdpa():
                return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

            L_dev = torch.tensor([L], dtype=torch.int32, device=device)  # as the decoders pass it (an int
            rows += time_providers({"kernel": "block_attention", "T": T, "cache": L}, {  # costs an H2D copy)
                "torch": sdpa,
                "torch.compile": c and (lambda: c(q, k, v, mask)),
                "triton": has_triton() and q.is_cuda and (lambda: block_attention_triton(q, k, v, L_dev)),
            }, nbytes=2 * k.numel() * k.element_size(), graph=q.is_cuda)
    return rows
