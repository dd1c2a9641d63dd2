"""The block-diffusion transformer (RMSNorm, RoPE, SwiGLU, no biases).

One network serves both the diffusion model and the autoregressive baseline; only the
attention pattern differs. Attention patterns used here:

* clean tokens (prompt, finished blocks) attend causally, so their keys and values do not
  depend on anything after them and the KV cache of clean tokens is exact;
* the block being denoised attends to every clean token before it and bidirectionally to
  itself, so any block size works at inference (block size 1 is AR decoding).

Every position gets logits over the vocabulary, masked or not (Seed's "no carry-over"): the
logits at an unmasked position are the model's judgement of that token.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..kernels import use_triton
from .kv_cache import KVCache


@dataclass(kw_only=True)
class ModelConfig:
    vocab_size: int = 8192
    n_layer: int = 6
    n_head: int = 6
    dim: int = 384
    ffn_hidden: int = 0  # 0 = derived: SwiGLU width ~ 8/3 dim rounded up to a multiple of 64
    max_seq_len: int = 2048
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    causal: bool = False  # True for the autoregressive baseline (block size is then always 1)
    # diffusion only: block position j's logits come from the output at position j-1 (for j = 0,
    # the last clean token's), as in an AR model, so an AR export's head keeps its meaning when it
    # starts a diffusion model (Dream, Fast-dLLM v2). False: from position j itself.
    shift: bool = False

    def __post_init__(self):
        if self.dim % self.n_head:
            raise ValueError(f"dim {self.dim} is not a multiple of n_head {self.n_head}")
        if self.ffn_hidden == 0:
            self.ffn_hidden = 64 * math.ceil(8 * self.dim / 3 / 64)
        if self.shift and self.causal:
            raise ValueError("shift is for diffusion models (an AR model's logits are shifted already)")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_head

    PRESETS = {
        # tiny random models for unit tests
        "test": dict(vocab_size=512, n_layer=2, n_head=2, dim=32, max_seq_len=512),
        "tiny": dict(n_layer=4, n_head=4, dim=128),
        "small": dict(n_layer=6, n_head=6, dim=384),
        "base": dict(n_layer=8, n_head=8, dim=512),
    }

    @classmethod
    def from_name(cls, name: str, **overrides) -> "ModelConfig":
        if name not in cls.PRESETS:
            raise KeyError(f"unknown model preset {name!r}; known: {', '.join(cls.PRESETS)}")
        return cls(**{**cls.PRESETS[name], **overrides})

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
        return cls(**d)

    def n_params(self, include_embedding: bool = True) -> int:
        per_layer = 4 * self.dim * self.dim + 3 * self.dim * self.ffn_hidden + 2 * self.dim
        emb = self.vocab_size * self.dim if include_embedding else 0
        return self.n_layer * per_layer + emb + self.dim  # tied output head


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def rope_tables(head_dim: int, max_len: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    ang = torch.outer(torch.arange(max_len, dtype=torch.float64), inv)  # (T, D/2)
    return ang.cos().float(), ang.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, H, T, D); cos/sin: (B, 1, T, D/2) or (T, D/2). Rotates pairs (x[..., :D/2], x[..., D/2:])."""
    d = x.shape[-1] // 2
    x1, x2 = x[..., :d].float(), x[..., d:].float()
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        self.wqkv = nn.Linear(cfg.dim, 3 * cfg.dim, bias=False)
        self.wo = nn.Linear(cfg.dim, cfg.dim, bias=False)

    def forward(self, x, cos, sin, mask, cache: KVCache | None, layer: int, n_append: int,
                keep: torch.Tensor | None = None):
        """keep (with a cache): the query positions whose outputs are wanted (every position
        still gives its key and value); the output then has len(keep) rows."""
        B, T, C = x.shape
        q, k, v = self.wqkv(x).view(B, T, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)  # (B, H, T, D)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            # the first n_append positions are clean and enter the cache; the rest (the block being
            # denoised) is attended to but not stored
            P = cache.length
            k, v = cache.extend(layer, k, v, n_append)
            if keep is not None:
                q, mask, T = q[:, :, keep], mask[:, :, keep], len(keep)
            y = cached_attention(q, k, v, mask, P)
        elif isinstance(mask, torch.Tensor) or mask is None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:  # a FlexAttention BlockMask (training on CUDA)
            from torch.nn.attention.flex_attention import flex_attention

            # v is a permuted view; under torch.compile a non-contiguous v gives wrong results
            # (measured on CPU inductor, torch 2.13), so the kernel gets a contiguous copy
            y = flex_attention(q, k, v.contiguous(), block_mask=mask)
        return self.wo(y.transpose(1, 2).reshape(B, T, C))


BLOCK_ATTN_TRITON = os.environ.get("DLLM_LS_BLOCK_ATTN", "") == "triton"
CUDNN_ATTENTION = os.environ.get("DLLM_LS_CUDNN_ATTENTION", "") == "1"


def for_inference(device: torch.device) -> None:
    """Process-wide attention settings for decoding on `device`: on CUDA, SDPA's cuDNN backend off
    (`DLLM_LS_CUDNN_ATTENTION=1` keeps it). cuDNN builds a graph for every new sequence length, and
    a completion's prompt length is new almost every time (scripts/prefill_probe.py measures it;
    docs/results.md, issue 8); the memory-efficient and flash kernels have no per-shape setup."""
    if device.type == "cuda" and not CUDNN_ATTENTION:
        torch.backends.cuda.enable_cudnn_sdp(False)


def cached_attention(q, k, v, mask, P: int):
    """A step's T queries (B, H, T, D) over the keys [cache P ; their own T] (k, v: (B, H, P+T, D)),
    under `mask`, a `step_mask` (every cached key visible; its last T columns say who sees whom
    among the new tokens). SDPA, which beat the block-attention kernel (kernels/block_attention.py)
    at every measured size on the H100 (docs/results.md, issue 8); `DLLM_LS_BLOCK_ATTN=triton`
    sends a block (T <= 128) on CUDA through the kernel instead. (The CUDA-graphed decoders,
    graphed.py, always use the kernel: it reads the cache length from a device tensor.)"""
    if BLOCK_ATTN_TRITON and use_triton(q) and q.shape[2] <= 128:
        from ..kernels.block_attention import block_attention_triton

        return block_attention_triton(q, k, v, P, mask[0, 0, :, P:])
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w13 = nn.Linear(cfg.dim, 2 * cfg.ffn_hidden, bias=False)
        self.w2 = nn.Linear(cfg.ffn_hidden, cfg.dim, bias=False)

    def forward(self, x):
        gate, up = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.ffn = FeedForward(cfg)

    def forward(self, x, cos, sin, mask, cache, layer, n_append, keep=None):
        h = self.attn(self.attn_norm(x), cos, sin, mask, cache, layer, n_append, keep)
        x = (x if keep is None else x[:, keep]) + h
        return x + self.ffn(self.ffn_norm(x))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        cos, sin = rope_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2 style scaled init of the residual projections
            if name.endswith("wo.weight") or name.endswith("w2.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layer))

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.rope_cos, self.rope_sin = self.rope_cos.float(), self.rope_sin.float()  # RoPE stays fp32
        return self

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def forward(self, idx, positions, mask=None, cache: KVCache | None = None, n_append: int = 0):
        """idx, positions: (B, T) token ids and their RoPE positions.

        mask: bool (B or 1, 1, T, S) attention mask (True = attend), a FlexAttention BlockMask, or
        None for full attention. With a cache, S = cache length + T and the first n_append
        positions of idx are appended to the cache. Returns logits (B, T, V) in float32.
        """
        x = self.tok_emb(idx)  # (B, T, C)
        cos = self.rope_cos[positions].unsqueeze(1)  # (B, 1, T, D/2)
        sin = self.rope_sin[positions].unsqueeze(1)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, mask, cache, i, n_append)
        if cache is not None:
            cache.advance(n_append)
        x = self.norm(x)
        return F.linear(x, self.tok_emb.weight).float()  # tied head, (B, T, V)

    # --- inference -------------------------------------------------------------------------

    step_rows = True  # step/step_batch take `rows` (DecodeState.rows: only the commit candidates)

    @torch.no_grad()
    def step(self, clean: torch.Tensor, block: torch.Tensor, cache: KVCache,
             rows: torch.Tensor | None = None) -> torch.Tensor:
        """One denoising forward with the cache.

        clean: (B, n) clean tokens not yet in the cache (the prompt, or the block just finished);
        they attend causally and their exact KV enters the cache. block: (B, b) the block being
        denoised (masks and committed tokens); it attends to every clean token and to itself.
        Returns the block's logits (B, b, V). n or b may be 0.

        rows: block positions (ascending, distinct) whose logits are wanted; the result is then
        (B, len(rows), V) and the last layer (past its keys and values) and the tied head run
        over those positions only. The logits are the same numbers either way (see `_keep`).
        The clean positions never get logits (nobody reads them): the head runs over the block.
        A shift model (`ModelConfig.shift`) reads block row r at position n-1+r, row 0 of a step
        without clean tokens at `cache.bound`, and keeps the last clean token's state there.
        """
        B, n = clean.shape
        b = block.shape[1]
        P = cache.length
        if P + n + b > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {P + n + b} tokens exceeds max_seq_len {self.cfg.max_seq_len}")
        idx = torch.cat([clean, block], dim=1)
        positions = torch.arange(P, P + n + b, device=idx.device).unsqueeze(0).expand(B, -1)
        mask = step_mask(P, n, b, causal_block=self.cfg.causal, device=idx.device)
        want = torch.arange(b, device=idx.device) if rows is None else rows.to(idx.device)
        shift = self.cfg.shift  # block row r from the output at n-1+r; -1 (n = 0): the cache's bound
        from_bound = shift and n == 0 and len(want) > 0 and int(want[0]) == 0
        if from_bound and cache.bound is None:
            raise ValueError(NO_BOUND)
        src = (want[1:] - 1 if from_bound else want + n - 1) if shift else want + n
        need = torch.cat([src, src.new_tensor([n - 1])]).unique() if shift and n > 0 else src  # + the new bound
        keep, take = _keep(need, n, b)
        x = self.tok_emb(idx)  # (B, T, C)
        cos = self.rope_cos[positions].unsqueeze(1)  # (B, 1, T, D/2)
        sin = self.rope_sin[positions].unsqueeze(1)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, mask, cache, i, n, keep if i == last else None)
        cache.advance(n)
        h = self.norm(x)  # the kept rows
        if not shift:
            logits = F.linear(h, self.tok_emb.weight).float()  # tied head over the kept rows
            return logits if take is None else logits[:, take]
        rows_h = h[:, torch.searchsorted(keep, src)]
        if from_bound:
            rows_h = torch.cat([cache.bound[:, None].to(h.dtype), rows_h], dim=1)
        if n > 0:
            cache.bound = h[:, int(torch.searchsorted(keep, src.new_tensor(n - 1)))].clone()
        return F.linear(rows_h, self.tok_emb.weight).float()

    @torch.no_grad()
    def step_batch(self, items: list[tuple[torch.Tensor, torch.Tensor, KVCache]],
                   rows: list[torch.Tensor | None] | None = None) -> list[torch.Tensor]:
        """`step` for many requests at once: items are (clean (1, n_i), block (1, b_i), cache_i) of
        different documents, at different cache lengths, steps and block sizes. Returns each one's
        block logits (1, b_i, V), equal to its own `step` up to float rounding.

        The requests are packed into one ragged sequence of N = sum(n_i + b_i) tokens, so every
        dense matmul (QKV, output projection, SwiGLU, the head) runs once for the whole batch, where
        batching pays on a CPU or GPU; attention runs per request over its own cache, with its own
        `step_mask`, so no padding is computed and no cached K/V is copied. The head is applied only
        to the block positions (the clean ones' logits are not used); `rows` (per request, as in
        `step`; None = the whole block) narrows it further.
        """
        rows = rows if rows is not None else [None] * len(items)
        if len(items) == 1:
            clean, block, cache = items[0]
            return [self.step(clean, block, cache, rows=rows[0])]
        segs = []  # (start, n, b, P, cache) per request, in the packed sequence
        start = 0
        for clean, block, cache in items:
            n, b, P = clean.shape[1], block.shape[1], cache.length
            if P + n + b > self.cfg.max_seq_len:
                raise ValueError(f"sequence of {P + n + b} tokens exceeds max_seq_len {self.cfg.max_seq_len}")
            if cache.k.shape[1] != 1:
                raise ValueError("step_batch takes caches of batch 1")
            segs.append((start, n, b, P, cache))
            start += n + b
        dev = items[0][1].device
        idx = torch.cat([torch.cat([c, bl], dim=1) for c, bl, _ in items], dim=1)  # (1, N)
        positions = torch.cat([torch.arange(P, P + n + b, device=dev) for _, n, b, P, _ in segs])
        masks = [step_mask(P, n, b, causal_block=self.cfg.causal, device=dev) for _, n, b, P, _ in segs]
        cos = self.rope_cos[positions][None, None]  # (1, 1, N, D/2)
        sin = self.rope_sin[positions][None, None]
        x = self.tok_emb(idx)  # (1, N, C)
        N, C = x.shape[1], x.shape[2]
        H, D = self.cfg.n_head, self.cfg.head_dim
        for i, layer in enumerate(self.layers):
            att = layer.attn
            q, k, v = att.wqkv(layer.attn_norm(x)).view(1, N, 3, H, D).permute(2, 0, 3, 1, 4)  # (1, H, N, D)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            ys = []
            for (s0, n, b, P, cache), mask in zip(segs, masks):
                sl = slice(s0, s0 + n + b)
                kc, vc = cache.extend(i, k[:, :, sl], v[:, :, sl], n)  # (1, H, P+n+b, D)
                ys.append(cached_attention(q[:, :, sl], kc, vc, mask, P))
            y = torch.cat(ys, dim=2)  # (1, H, N, D)
            x = x + att.wo(y.transpose(1, 2).reshape(1, N, C))
            x = x + layer.ffn(layer.ffn_norm(x))
        for _, n, _, _, cache in segs:
            cache.advance(n)
        want = [torch.arange(b, device=dev) if r is None else r.to(dev) for (_, _, b, _, _), r in zip(segs, rows)]
        if self.cfg.shift:  # as `_step_shift`: row r from position n-1+r, -1 being the cache's bound
            h = self.norm(x)[0]  # (N, C)
            parts = []
            for (s0, n, _, _, cache), w in zip(segs, want):
                if n == 0 and len(w) and int(w[0]) == 0:
                    if cache.bound is None:
                        raise ValueError(NO_BOUND)
                    parts.append(torch.cat([cache.bound.to(h.dtype), h[s0 + w[1:] - 1]]))
                else:
                    parts.append(h[s0 + n - 1 + w])
                if n > 0:
                    cache.bound = h[s0 + n - 1][None].clone()
            logits = F.linear(torch.cat(parts)[None], self.tok_emb.weight).float()
            return list(logits.split([len(w) for w in want], dim=1))
        sel = torch.cat([s0 + n + w for (s0, n, _, _, _), w in zip(segs, want)])
        logits = F.linear(self.norm(x[:, sel]), self.tok_emb.weight).float()  # (1, sum of rows, V)
        return list(logits.split([len(w) for w in want], dim=1))

    @torch.no_grad()
    def extend(self, clean: torch.Tensor, cache: KVCache, all_logits: bool = False) -> torch.Tensor:
        """Append clean tokens (B, n) causally to the cache; returns the logits of the last one (B, V),
        or of every one (B, n, V) with `all_logits` (the AR baseline's verify step of drafted tokens).

        The autoregressive baseline decodes with this: its logits at position i predict token i+1.
        """
        B, n = clean.shape
        P = cache.length
        if P + n > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {P + n} tokens exceeds max_seq_len {self.cfg.max_seq_len}")
        positions = torch.arange(P, P + n, device=clean.device).unsqueeze(0).expand(B, -1)
        mask = step_mask(P, n, 0, device=clean.device)
        logits = self(clean, positions, mask=mask, cache=cache, n_append=n)
        return logits if all_logits else logits[:, -1]


NO_BOUND = ("a shift model's step with no clean tokens needs the cache's last hidden state: "
            "feed the last clean token again")
ROW_QUANTUM = 4  # rows are computed in multiples of 4: other counts may round differently (x86 CPU BLAS)


def _keep(need: torch.Tensor, n: int, b: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`Transformer.step`'s last-layer positions (ascending indices into [clean n ; block b]) and
    where the needed positions `need` (ascending, distinct) are among them (None: all of them).

    A row of a matmul or of SDPA's output is the same number whatever the other rows are when
    there are a multiple of ROW_QUANTUM rows (measured on this x86 CPU, MKL/oneDNN, every weight
    shape of the model: with 1 thread any 4+ rows equal a larger product bitwise and 1-3 rows
    do not; with 2 threads 5-7 and 9-11 rows do not either). So the wanted rows are padded with
    other positions (block ones first, then the last clean ones) up to a multiple of 4, or to all
    n + b positions (what `step` computed before `rows` existed)."""
    device = need.device
    T = n + b
    target = min(T, -(-len(need) // ROW_QUANTUM) * ROW_QUANTUM)
    if len(need) == target:
        return need, None
    m = torch.zeros(T, dtype=torch.bool, device=device)
    m[need] = True
    order = torch.cat([torch.arange(n, T, device=device), torch.arange(n - 1, -1, -1, device=device)])
    free = order[~m[order]]
    m[free[: target - len(need)]] = True
    keep = m.nonzero().squeeze(1)
    return keep, torch.searchsorted(keep, need)


def step_mask(P: int, n: int, b: int, *, causal_block: bool = False, device=None) -> torch.Tensor:
    """Mask for `Transformer.step`: queries [clean n ; block b] over keys [cache P ; clean n ; block b].

    Clean query i (absolute position P+i) sees keys 0..P+i; block queries see every key (or, for
    the AR baseline, causally). Shape (1, 1, n+b, P+n+b), True = attend.
    """
    q = torch.arange(n + b, device=device).unsqueeze(1)
    k = torch.arange(P + n + b, device=device).unsqueeze(0)
    causal = k <= P + q
    if causal_block:
        return causal[None, None]
    return (causal | (q >= n))[None, None]
