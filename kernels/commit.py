"""Fused commit: a denoising step's logits -> token, confidence and commit mask per position.

    tokens, conf, commit = fused_commit(logits, masked, ban=ban, kind="maxprob",
                                        rule="threshold", threshold=0.9, factor=1.0, fallback="leftmost")

logits (T, V) of the block's positions (any float dtype); masked (T,) bool: the positions that may
be committed; ban (V,) bool: tokens never predicted (their logits count as -inf).
- tokens (T,) int64: the argmax over the allowed vocabulary (the first on ties);
- conf (T,) float32, in [0, 1]: "maxprob" p1; "margin" p1 - p2; "entropy" 1 - H / log V
  (V the full vocabulary, banned tokens included, as the sampler defines it);
- commit (T,) bool: the masked positions to commit now. Rank the masked positions by confidence,
  descending, ties to the lower position; "threshold" commits those with conf >= threshold,
  "factor" (Fast-dLLM) the first n ranks for the largest n with (n + 1) * (1 - c_n) < factor.
  When none passes and a position is masked, one is committed all the same (so steps <= tokens):
  the leftmost masked one (`fallback="leftmost"`), or the first rank ("confident"). A small
  model's most confident guess far inside a block of masks is often a token repeated
  (docs/results.md, "The commit fallback"). Here the caller resolves the sampler's "mode" (the
  launcher knows no mode); `block_update` resolves it on the device from its line-mode flag.

The Triton path never materialises probabilities over the vocabulary: one program per row runs
an online softmax over chunks of V keeping the running max, the sum of exp, the sum of exp * logit
(for the entropy), the second-largest logit (for the margin) and the argmax; a second one-program
kernel ranks the T confidences and writes the commit mask. Scalars stay on the device (no
`.item()`), so a CUDA graph can capture it.
"""

from __future__ import annotations

import math

import torch

from ._triton import compiled, has_triton, next_pow2, time_providers, use_triton

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None

KINDS = ("maxprob", "margin", "entropy")
RULES = ("threshold", "factor")
FALLBACKS = ("mode", "leftmost", "confident")  # "mode": leftmost in block mode, confident in line mode


# --- reference ---------------------------------------------------------------------------------

def confidence_reference(logits: torch.Tensor, kind: str, ban: torch.Tensor | None = None):
    """(tokens, conf) in torch: log_softmax over the allowed vocabulary (materialised)."""
    V = logits.shape[-1]
    x = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if ban is not None:
        x = x.masked_fill(ban, float("-inf"))
    logp = torch.log_softmax(x, dim=-1)
    tokens = logp.argmax(dim=-1)  # the first on ties (topk's order among equals is unspecified)
    if kind == "margin":
        p = logp.topk(2, dim=-1).values.exp()
        return tokens, p[..., 0] - p[..., 1]
    best = logp.amax(dim=-1)
    if kind == "maxprob":
        return tokens, best.exp()
    ent = -(logp.exp() * logp).nan_to_num(0.0).sum(-1)  # 0 * log 0 = 0 for banned tokens
    return tokens, 1.0 - ent / math.log(V)


def commit_mask_reference(conf: torch.Tensor, masked: torch.Tensor, rule: str = "threshold",
                          threshold: float = 0.9, factor: float = 1.0, fallback="leftmost") -> torch.Tensor:
    """The commit rule over ranks, with static shapes and no host sync (O(T^2), T <= a few hundred).
    fallback: "leftmost", "confident", or a bool tensor (True: leftmost), decided on the device."""
    T = conf.shape[0]
    pos = torch.arange(T, device=conf.device)
    c = conf.float()
    # rank of i among the masked positions: how many masked j come before it (higher conf, or equal and lower index)
    before = (c[None, :] > c[:, None]) | ((c[None, :] == c[:, None]) & (pos[None, :] < pos[:, None]))
    rank = (before & masked[None, :]).sum(1)
    if rule == "threshold":
        take = c >= threshold
    else:  # factor: n = max{r + 1 : (r + 2)(1 - c_(r)) < factor}; commit ranks < n
        ok = masked & ((rank + 2).to(c.dtype) * (1.0 - c) < factor)
        n = torch.where(ok, rank + 1, 0).amax() if T else torch.zeros((), dtype=torch.long, device=conf.device)
        take = rank < n
    take = masked & take
    confident = take | (masked & (rank == 0))
    if isinstance(fallback, str) and fallback == "confident":
        return confident
    first = torch.where(masked, pos, T).amin() if T else torch.zeros((), dtype=torch.long, device=conf.device)
    leftmost = take | (~take.any() & (pos == first))
    return leftmost if isinstance(fallback, str) else torch.where(fallback, leftmost, confident)


def fused_commit_reference(logits, masked, *, ban=None, kind="maxprob", rule="threshold",
                           threshold=0.9, factor=1.0, fallback="leftmost"):
    tokens, conf = confidence_reference(logits, kind, ban)
    return tokens, conf, commit_mask_reference(conf, masked, rule, threshold, factor, fallback)


# --- triton ------------------------------------------------------------------------------------

if triton is not None:

    @triton.jit
    def _row_kernel(X, BAN, TOK, CONF, sx_t, V, inv_log_v,
                    KIND: tl.constexpr, HAS_BAN: tl.constexpr, BLOCK_V: tl.constexpr):
        row = tl.program_id(0)
        offs = tl.arange(0, BLOCK_V)
        NEG: tl.constexpr = -3.0e38  # finite: no inf - inf in the rescaling
        m = NEG  # running max (= the best logit)
        s = 0.0  # sum exp(x - m)
        t = 0.0  # sum exp(x - m) * x   (entropy)
        m2 = NEG  # second-largest logit (margin)
        best = 0
        for v0 in range(0, V, BLOCK_V):
            idx = v0 + offs
            ok = idx < V
            x = tl.load(X + row * sx_t + idx, mask=ok, other=float("-inf")).to(tl.float32)
            if HAS_BAN:
                banned = tl.load(BAN + idx, mask=ok, other=1)
                x = tl.where(banned != 0, float("-inf"), x)
            cm = tl.max(x, axis=0)
            ci = tl.argmax(x, axis=0, tie_break_left=True)
            c2 = tl.max(tl.where(offs == ci, float("-inf"), x), axis=0)
            new_m = tl.maximum(m, cm)
            alpha = tl.exp(m - new_m)
            e = tl.exp(x - new_m)  # 0 where x = -inf
            s = s * alpha + tl.sum(e, axis=0)
            if KIND == 2:
                t = t * alpha + tl.sum(e * tl.where(e > 0, x, 0.0), axis=0)
            if KIND == 1:
                m2 = tl.where(cm > m, tl.maximum(m, c2), tl.maximum(m2, cm))
            best = tl.where(cm > m, v0 + ci, best)
            m = new_m
        if KIND == 0:
            conf = 1.0 / s
        elif KIND == 1:
            conf = (1.0 - tl.exp(m2 - m)) / s
        else:
            ent = tl.log(s) + m - t / s
            conf = 1.0 - ent * inv_log_v
        tl.store(TOK + row, best.to(tl.int64))
        tl.store(CONF + row, conf)

    @triton.jit
    def commit_rule(c, mk, i, threshold, factor, leftmost, FACTOR: tl.constexpr):
        """`commit_mask_reference` over a block held in registers: c the confidences, mk the
        candidates, i = arange over the block (padding: mk False); leftmost: the fallback, a
        scalar (True: the leftmost candidate, False: the most confident)."""
        ci = c[:, None]
        cj = c[None, :]
        before = (cj > ci) | ((cj == ci) & (i[None, :] < i[:, None]))
        rank = tl.sum((before & mk[None, :]).to(tl.int32), axis=1)
        if FACTOR:
            good = mk & ((rank + 2).to(tl.float32) * (1.0 - c) < factor)
            n = tl.max(tl.where(good, rank + 1, 0), axis=0)
            take = mk & (rank < n)
        else:
            take = mk & (c >= threshold)
        first = tl.min(tl.where(mk, i, 1 << 30), axis=0)
        none = tl.max(take.to(tl.int32), axis=0) == 0
        return tl.where(leftmost, take | (none & (i == first)), take | (mk & (rank == 0)))

    @triton.jit(do_not_specialize=["T"])
    def _mask_kernel(CONF, MASKED, COMMIT, T, threshold, factor, FACTOR: tl.constexpr, LEFTMOST: tl.constexpr,
                     BLOCK_T: tl.constexpr):
        i = tl.arange(0, BLOCK_T)
        ok = i < T
        c = tl.load(CONF + i, mask=ok, other=0.0)
        mk = tl.load(MASKED + i, mask=ok, other=0) != 0
        if LEFTMOST:  # the fallback as a device scalar, as block_update decides it
            leftmost = T >= 0
        else:
            leftmost = T < 0
        commit = commit_rule(c, mk, i, threshold, factor, leftmost, FACTOR)
        tl.store(COMMIT + i, commit.to(tl.int8), mask=ok)


def confidence_triton(logits, kind: str = "maxprob", ban=None, *, block_v: int = 2048):
    """(tokens, conf) as `confidence_reference`, one online pass over the vocabulary per row."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    T, V = logits.shape
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    tokens = torch.empty(T, dtype=torch.int64, device=logits.device)
    conf = torch.empty(T, dtype=torch.float32, device=logits.device)
    if T == 0:
        return tokens, conf
    has_ban = ban is not None
    ban_u8 = ban.view(torch.uint8) if has_ban else tokens  # a dummy pointer without a ban
    _row_kernel[(T,)](logits, ban_u8, tokens, conf, logits.stride(0), V, 1.0 / math.log(V),
                      KIND=KINDS.index(kind), HAS_BAN=has_ban, BLOCK_V=min(block_v, next_pow2(V)),
                      num_warps=4)
    return tokens, conf


def fused_commit_triton(logits, masked, *, ban=None, kind="maxprob", rule="threshold",
                        threshold=0.9, factor=1.0, fallback="leftmost", block_v: int = 2048):
    """The Triton launcher (CUDA tensors, or CPU ones under TRITON_INTERPRET=1)."""
    if kind not in KINDS or rule not in RULES or fallback not in FALLBACKS[1:]:
        raise ValueError(f"kind must be one of {KINDS}, rule one of {RULES}, fallback one of {FALLBACKS[1:]}")
    T = logits.shape[0]
    tokens, conf = confidence_triton(logits, kind, ban, block_v=block_v)
    commit = torch.empty(T, dtype=torch.bool, device=logits.device)
    if T == 0:
        return tokens, conf, commit
    _mask_kernel[(1,)](conf, masked.view(torch.uint8), commit.view(torch.int8), T, float(threshold), float(factor),
                       FACTOR=rule == "factor", LEFTMOST=fallback == "leftmost", BLOCK_T=max(2, next_pow2(T)),
                       num_warps=4)
    return tokens, conf, commit


def fused_commit(logits, masked, *, ban=None, kind="maxprob", rule="threshold", threshold=0.9, factor=1.0,
                 fallback="leftmost"):
    """Triton on CUDA when it is installed, the torch reference elsewhere."""
    fn = fused_commit_triton if use_triton(logits) and logits.shape[0] <= 256 else fused_commit_reference
    return fn(logits, masked, ban=ban, kind=kind, rule=rule, threshold=threshold, factor=factor, fallback=fallback)


# --- benchmark ---------------------------------------------------------------------------------

def bench(device: str = "cuda", dtype=torch.float32, V: int = 8192, blocks=(1, 4, 16, 32, 64, 128),
          compile: bool = True) -> list[dict]:
    """ms per call of triton vs the torch reference eager vs torch.compile (maxprob, threshold rule)."""
    rows = []
    c = compile and compiled(lambda l, m, b: fused_commit_reference(l, m, ban=b))
    for T in blocks:
        logits = torch.randn(T, V, device=device, dtype=dtype) * 3
        masked = torch.rand(T, device=device) < 0.7
        ban = torch.zeros(V, dtype=torch.bool, device=device)
        ban[:6] = True

        def ref():
            return fused_commit_reference(logits, masked, ban=ban)

        rows += time_providers({"kernel": "commit", "T": T, "V": V}, {
            "torch": ref,
            "torch.compile": c and (lambda: c(logits, masked, ban)),
            "triton": has_triton() and logits.is_cuda and (lambda: fused_commit_triton(logits, masked, ban=ban)),
        }, nbytes=logits.numel() * logits.element_size(), graph=logits.is_cuda)
    return rows
