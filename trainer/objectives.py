"""Training objectives: the block-diffusion mask and ELBO, Seed's edit corruption, the AR baseline.

Layout of one diffusion training sequence (BD3-LM): the model input is [x_t ; x_0], length 2L,
where x_t (positions 0..L-1 of the input) is the noisy copy and x_0 (L..2L-1) the clean one. Both
halves use RoPE positions 0..L-1, so noisy token i and clean token i share position i.

Blocks: with block size bs and a per-sequence offset `off` in [0, bs), token i (of either half)
belongs to block

    blk(i) = floor((i + bs - off) / bs)            (block k covers [(k-1)bs + off, k bs + off))

The offset puts a block boundary exactly where a FIM example's middle starts, as at inference,
where the first block starts right after `<|fim_middle|>`. Attention (True = may attend):

    noisy i -> noisy j   iff blk(j) == blk(i)          (its own block, bidirectionally)
    noisy i -> clean j   iff blk(j) <  blk(i)          (all clean tokens of earlier blocks)
    clean i -> clean j   iff j <= i                    (causal, NOT block-causal)
    clean i -> noisy j   never

Clean tokens are causal so that their keys/values equal those of the inference KV cache for any
block size; the noisy block sees exactly what `Transformer.step` shows it at inference: the clean
tokens before it and itself. Logits at noisy position i predict x_0[i] (the same position).

Noise (linear schedule, MDLM/BD3-LM): alpha_t = 1 - t, so a token survives with probability
alpha_t and is masked with probability t. t is drawn per block, t ~ U(eps, 1), because at
inference every block is denoised from all-masks on its own while earlier blocks are clean
(BD3-LM, Alg. 1); per-block t also gives each sequence many independent noise levels, which
lowers the variance of the ELBO estimate. The draws are stratified over the batch (MDLM's
low-discrepancy sampler).

Loss (per valid token, pad excluded). Masked positions: the ELBO term, CE / t. Unmasked noisy
positions (Seed's "every position predicted, no carry-over"): CE against x_0 with weight
`keep_weight` = 0.1 in the mask stage, where the target is the visible token itself (it keeps the
logits at unmasked positions a calibrated judgement of the token without spending much capacity
on copying), and `edit_keep_weight` = 1.0 in the edit stage, where some visible tokens are wrong
and the target is the clean one: that term is what teaches repair.

Edit stage (Seed's edit corruption, both losses in every sequence): x_0 first gets
k = floor(len * alpha_t), alpha_t ~ U[0, 0.1], random insert / delete / substitute operations,
applied block by block so that every block starts aligned with the clean tokens before it (as at
inference, where the prefix is exact and only the block under repair may be wrong); the result is
then masked by q_xt as in the mask stage. Targets stay x_0 everywhere, so the masked ELBO term is
kept and the unmasked term reconstructs the clean sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(kw_only=True)
class ObjectiveConfig:
    block_sizes: tuple[int, ...] = (4, 8, 16, 32, 64)  # one drawn per optimizer step
    t_eps: float = 1e-3  # t ~ U(t_eps, 1): keeps the 1/t weight finite
    keep_weight: float = 0.1  # mask stage: CE weight of unmasked noisy positions (target = the token)
    edit_keep_weight: float = 1.0  # edit stage: CE weight of unmasked positions (target = x_0, may differ)
    edit_alpha_max: float = 0.1  # edit stage: alpha_t ~ U[0, edit_alpha_max], k = floor(len * alpha_t)
    shift: bool = False  # the model's `shift`: x_0[i] is predicted at position i-1 (`shift_sources`)

    def __post_init__(self):
        self.block_sizes = tuple(int(b) for b in self.block_sizes)
        if not self.block_sizes or min(self.block_sizes) < 1:
            raise ValueError("block_sizes must be positive")
        if not 0 < self.t_eps < 1:
            raise ValueError("t_eps must be in (0, 1)")


# --- the attention masks ---------------------------------------------------------------------


def block_ids(L: int, bs: int, offset: torch.Tensor) -> torch.Tensor:
    """blk(i) = floor((i + bs - off) / bs) for i in [0, L); offset: (B,) -> (B, L)."""
    i = torch.arange(L, device=offset.device)
    off = offset.long() % bs
    return (i[None, :] + bs - off[:, None]) // bs


def block_start(k, bs: int, off):
    """First position of block k (clamped at 0): (k - 1) * bs + off."""
    return np.maximum((k - 1) * bs + off, 0)


def training_mask(L: int, bs: int, offset: torch.Tensor) -> torch.Tensor:
    """Bool mask (B, 1, 2L, 2L) over [x_t ; x_0] (True = attend), for the SDPA path."""
    bid = block_ids(L, bs, offset)  # (B, L)
    nn_ = bid[:, :, None] == bid[:, None, :]  # noisy q -> noisy k: same block
    nc = bid[:, None, :] < bid[:, :, None]  # noisy q -> clean k: earlier block
    causal = torch.ones(L, L, dtype=torch.bool, device=offset.device).tril()
    cc = causal.expand_as(nn_)  # clean q -> clean k: causal
    cn = torch.zeros_like(nn_)  # clean q -> noisy k: never
    top = torch.cat([nn_, nc], dim=2)  # (B, L, 2L)
    bottom = torch.cat([cn, cc], dim=2)
    return torch.cat([top, bottom], dim=1).unsqueeze(1)  # (B, 1, 2L, 2L)


def training_mask_mod(L: int, bs: int, offset: torch.Tensor):
    """The same mask as a FlexAttention mask_mod(b, h, q_idx, kv_idx) -> bool. Each position's
    block id is read from a (B, 2L) table (both halves alike): the mask_mod runs on every element
    of the partial 128x128 tiles, and integer division there made the forward ~1.6x slower on
    the CPU (`scripts/flex_mask_bench.py`). The block size is not in the compiled mod at all,
    so a new one does not recompile."""
    return _mask_mod_from_ids(L, block_ids(L, bs, offset))


def _mask_mod_from_ids(L: int, bid: torch.Tensor):
    """training_mask_mod given the block ids (B, L) of one half."""
    table = torch.cat([bid, bid], 1).to(torch.int32).contiguous()  # (B, 2L)

    def mask_mod(b, h, q_idx, kv_idx):
        bq, bk = table[b, q_idx], table[b, kv_idx]
        q_noisy, k_noisy = q_idx < L, kv_idx < L
        noisy = q_noisy & ((k_noisy & (bq == bk)) | (~k_noisy & (bk < bq)))
        clean = ~q_noisy & ~k_noisy & (kv_idx <= q_idx)
        return noisy | clean

    return mask_mod


def causal_mask_mod(b, h, q_idx, kv_idx):
    return kv_idx <= q_idx


_CAUSAL_BLOCK_MASKS: dict = {}


def flex_block_mask(L: int, bs: int, offset: torch.Tensor, *, ar: bool = False, compile: bool = True):
    """A FlexAttention BlockMask for the CUDA path (B varies only with the batch size): the causal
    one cached, the diffusion one from tile ranges (`training_block_mask`) when L is a multiple of
    128, else by `create_block_mask` (`compile`: its compiled evaluation)."""
    from torch.nn.attention.flex_attention import create_block_mask

    if ar:
        key = (L, str(offset.device))
        if key not in _CAUSAL_BLOCK_MASKS:
            _CAUSAL_BLOCK_MASKS[key] = create_block_mask(causal_mask_mod, None, None, L, L, device=offset.device,
                                                         _compile=compile)
        return _CAUSAL_BLOCK_MASKS[key]
    if L % TILE:
        return create_block_mask(training_mask_mod(L, bs, offset), offset.shape[0], None, 2 * L, 2 * L,
                                 device=offset.device, _compile=compile)
    return training_block_mask(L, bs, offset)


TILE = 128  # FlexAttention's default block size


def _ordered(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A (B, nq, nk) bool tile map -> BlockMask's (num (B, 1, nq), indices (B, 1, nq, nk)), int32."""
    idx = torch.argsort((~m).to(torch.int8), dim=-1, stable=True)  # the set tiles first, in order
    return m.sum(-1, dtype=torch.int32)[:, None], idx.to(torch.int32)[:, None]


def training_block_mask(L: int, bs: int, offset: torch.Tensor):
    """The training mask's BlockMask built from each 128-token tile's range of block ids (ids
    grow by at most one a position, so a tile holds every id of its range), instead of
    create_block_mask's evaluation of the mask_mod at every (query, key) pair: 6.5 ms a step on
    the H100 for batch 64 x 1,024 (session 25). Tiles are full (every pair allowed: flex skips the
    mask_mod), partial or empty; the partial ones keep `training_mask_mod`. L: a multiple of 128."""
    from torch.nn.attention.flex_attention import BlockMask

    t = L // TILE
    bid = block_ids(L, bs, offset)  # (B, L)
    lo, hi = bid[:, ::TILE], bid[:, TILE - 1::TILE]  # (B, t): first and last block id of each tile
    q_lo, q_hi, k_lo, k_hi = lo[:, :, None], hi[:, :, None], lo[:, None, :], hi[:, None, :]
    B, n = bid.shape[0], 2 * t
    any_ = torch.zeros(B, n, n, dtype=torch.bool, device=bid.device)
    full = torch.zeros_like(any_)
    any_[:, :t, :t] = (q_lo <= k_hi) & (k_lo <= q_hi)  # noisy -> noisy: a block id in common
    full[:, :t, :t] = (q_lo == q_hi) & (k_lo == k_hi) & (q_lo == k_lo)
    any_[:, :t, t:] = k_lo < q_hi  # noisy -> clean: some key's block before some query's
    full[:, :t, t:] = k_hi < q_lo
    i = torch.arange(t, device=bid.device)
    any_[:, t:, t:] = i[None, :] <= i[:, None]  # clean -> clean: causal
    full[:, t:, t:] = i[None, :] < i[:, None]
    return BlockMask.from_kv_blocks(*_ordered(any_ & ~full), *_ordered(full), BLOCK_SIZE=TILE,
                                    mask_mod=_mask_mod_from_ids(L, bid), seq_lengths=(2 * L, 2 * L))


def causal_mask(L: int, device=None) -> torch.Tensor:
    return torch.ones(L, L, dtype=torch.bool, device=device).tril()[None, None]  # (1, 1, L, L)


def attention_pairs(L: int, bs: int, ar: bool = False) -> int:
    """Number of (query, key) pairs the mask allows (offset 0), for the FLOP count."""
    causal = L * (L + 1) // 2
    if ar:
        return causal
    nblk = -(-L // bs)
    noisy = sum(min(bs, L - k * bs) * (min(bs, L - k * bs) + k * bs) for k in range(nblk))
    return causal + noisy


# --- the masked-diffusion forward process and its ELBO ----------------------------------------


def sample_t(n_seq: int, n_blocks: int, eps: float, rng: np.random.Generator) -> np.ndarray:
    """t ~ U(eps, 1) per (sequence, block), stratified over the batch: t_k = eps + (1-eps)(u + k/n mod 1)."""
    n = n_seq * n_blocks
    u = (rng.random() + np.arange(n) / n) % 1.0
    t = eps + (1.0 - eps) * rng.permutation(u)
    return t.reshape(n_seq, n_blocks)  # (B, nblk)


def q_xt(x: np.ndarray, t: np.ndarray, mask_id: int, maskable: np.ndarray, rng: np.random.Generator):
    """The forward process q(x_t | x) of the linear schedule alpha_t = 1 - t.

    q(x_t^i | x^i) = alpha_t * [x_t^i = x^i] + (1 - alpha_t) * [x_t^i = MASK], independently per
    token; t: (B, L) the noise level of each token's block. Returns (x_t, masked), both (B, L).
    """
    masked = (rng.random(x.shape) < t) & maskable
    return np.where(masked, mask_id, x), masked


def elbo_weight(t):
    """The weight of a masked token's CE in the continuous-time NELBO (MDLM eq. 10, BD3-LM eq. 8):

        L = E_{t ~ U(0,1)} E_{q(x_t|x_0)} [ alpha'_t / (1 - alpha_t) * sum_{i: x_t^i = MASK} log p(x_0^i | x_t) ]

    With alpha_t = 1 - t: -alpha'_t / (1 - alpha_t) = 1 / t.
    """
    return 1.0 / t


# --- Seed's edit corruption -------------------------------------------------------------------


class TokenDraw:
    """Draws replacement tokens: from the data's unigram distribution, or uniformly over ids >= lo."""

    def __init__(self, vocab_size: int, probs: np.ndarray | None = None, lo: int = 0):
        self.vocab_size, self.lo = vocab_size, lo
        self.cdf = None if probs is None else np.cumsum(probs / probs.sum())

    def __call__(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.cdf is None:
            return rng.integers(self.lo, self.vocab_size, n)
        return np.minimum(np.searchsorted(self.cdf, rng.random(n), side="right"), len(self.cdf) - 1)


def edit_corrupt(ids, k: int, rng: np.random.Generator, draw: TokenDraw) -> np.ndarray:
    """Apply k random edit operations (insert / delete / substitute, equally likely) to ids.

    Each operation changes the Levenshtein distance by at most one, so lev(ids, out) <= k.
    Inserted and substituted tokens come from `draw` (e.g. the corpus unigram distribution).
    """
    out = list(int(i) for i in ids)
    new = draw(rng, k).tolist()
    for j in range(k):
        op = int(rng.integers(3))
        if op == 0 or not out:
            out.insert(int(rng.integers(len(out) + 1)), new[j])
        elif op == 1:
            del out[int(rng.integers(len(out)))]
        else:
            out[int(rng.integers(len(out)))] = new[j]
    return np.asarray(out, dtype=np.int64)


def corrupt_blocks(x0: np.ndarray, n_valid: int, bs: int, off: int, alpha: float,
                   rng: np.random.Generator, draw: TokenDraw) -> np.ndarray:
    """Seed's edit corruption of one sequence, kept aligned at block boundaries.

    k = floor(n_valid * alpha) operations are spread uniformly over the valid positions; the
    operations falling in a block are applied to that block's tokens (followed by a few of the
    next ones, to refill after deletions) and the result is cropped back to the block. So each
    block is a corrupted view of x_0 that starts aligned with the clean tokens before it, as at
    inference, where the clean prefix is exact and the block under repair is what the user wrote.
    """
    out = x0.copy()
    k = int(n_valid * alpha)
    if k == 0:
        return out
    pos = rng.integers(0, n_valid, k)
    blocks, counts = np.unique((pos + bs - off) // bs, return_counts=True)
    for blk, c in zip(blocks.tolist(), counts.tolist()):
        s = int(block_start(blk, bs, off))
        e = min(blk * bs + off, n_valid)
        cor = edit_corrupt(x0[s:min(e + c, n_valid)], c, rng, draw)[: e - s]
        if len(cor) < e - s:
            cor = np.concatenate([cor, draw(rng, e - s - len(cor))])
        out[s:e] = cor
    return out


# --- batches ------------------------------------------------------------------------------------


@dataclass
class SpecialIds:
    pad: int
    mask: int
    eos: int


def shift_sources(L: int, bs: int, offset: np.ndarray) -> np.ndarray:
    """For a shift model: the position of [x_t ; x_0] whose output predicts x_0[i], (B, L).

    Inside a block, the noisy position before i (i - 1); at a block's first token, the clean
    token before it (L + i - 1), whose output at inference is the cache's last token's. i = 0 has
    none (0 is returned; its loss weight is zero)."""
    i = np.arange(L)[None, :]
    off = np.asarray(offset).reshape(-1, 1) % bs
    first = (i - off) % bs == 0
    return np.where(first, L + i - 1, i - 1).clip(min=0).astype(np.int64)


def diffusion_batch(x0: np.ndarray, anchor: np.ndarray, bs: int, *, edit: bool, ids: SpecialIds,
                    cfg: ObjectiveConfig, rng: np.random.Generator, draw: TokenDraw | None = None) -> dict:
    """Model inputs and loss weights for one diffusion micro-batch (numpy in, torch CPU tensors out).

    x0: (B, L) clean tokens (pad at the tail); anchor: (B,) a position that starts a block.
    Mask stage: x_t = q_xt(x_0). Edit stage: x_t = q_xt(edit(x_0)), targets stay x_0.
    Loss weight per noisy position i (pad excluded):  1/t on masked positions (the ELBO),
    keep_weight (mask stage) or edit_keep_weight (edit stage) on unmasked ones.
    """
    B, L = x0.shape
    valid = x0 != ids.pad
    off = anchor % bs
    base = x0
    if edit:
        if draw is None:
            raise ValueError("the edit stage needs a TokenDraw for inserted and substituted tokens")
        n_valid = valid.sum(1)
        alpha = rng.uniform(0.0, cfg.edit_alpha_max, B)
        base = np.stack([corrupt_blocks(x0[b], int(n_valid[b]), bs, int(off[b]), float(alpha[b]), rng, draw)
                         for b in range(B)])
        base = np.where(valid, base, x0)
    nblk = (L - 1 + bs) // bs + 1
    t_blk = sample_t(B, nblk, cfg.t_eps, rng)  # (B, nblk)
    bid = (np.arange(L)[None, :] + bs - off[:, None]) // bs  # (B, L)
    t = np.take_along_axis(t_blk, bid, axis=1)  # (B, L)
    xt, masked = q_xt(base, t, ids.mask, valid, rng)
    keep = cfg.edit_keep_weight if edit else cfg.keep_weight
    weight = np.where(masked, elbo_weight(t), keep) * valid
    extra = {}
    if cfg.shift:  # x_0[0] has no position before it
        weight[:, 0] = 0.0
        extra["src"] = torch.from_numpy(shift_sources(L, bs, off))
    return {
        **extra,
        "idx": torch.from_numpy(np.concatenate([xt, x0], axis=1)),  # (B, 2L): [x_t ; x_0]
        "targets": torch.from_numpy(x0.astype(np.int64)),  # (B, L)
        "weight": torch.from_numpy(weight.astype(np.float32)),  # (B, L)
        "masked": torch.from_numpy(masked),
        "corrupted": torch.from_numpy((base != x0) & ~masked),
        "valid": torch.from_numpy(valid),
        "offset": torch.from_numpy(off.astype(np.int64)),
        "bs": bs,
    }


def ar_batch(x0: np.ndarray, ids: SpecialIds) -> dict:
    """Next-token prediction over x_0: logits at i predict x_0[i+1] (as `Transformer.extend` decodes)."""
    B, L = x0.shape
    targets = np.concatenate([x0[:, 1:], np.full((B, 1), ids.pad)], axis=1)
    valid = (targets != ids.pad) & (x0 != ids.pad)
    z = np.zeros((B, L), dtype=bool)
    return {
        "idx": torch.from_numpy(x0.astype(np.int64)),
        "targets": torch.from_numpy(targets.astype(np.int64)),
        "weight": torch.from_numpy(valid.astype(np.float32)),
        "masked": torch.from_numpy(valid), "corrupted": torch.from_numpy(z), "valid": torch.from_numpy(valid),
        "offset": torch.zeros(B, dtype=torch.long), "bs": 1,
    }


# --- the training forward -----------------------------------------------------------------------


class TrainModule(nn.Module):
    """Wraps a Transformer for training: per-position CE of the first T_out positions only.

    For diffusion the first L positions of [x_t ; x_0] are the noisy half; the clean half needs no
    logits, so the tied head runs over half the sequence (it is a third of the FLOPs at 16M params).
    """

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, idx, positions, mask, targets, src=None, ref=None):
        """idx, positions: (B, T_in); mask: bool (B|1, 1, T_in, T_in) or BlockMask; targets (B, T_out).

        Returns CE (B, T_out) in float32 of logits at positions [0, T_out) (or at `src`, a shift
        model's (B, T_out) source positions, `shift_sources`) against targets; with `ref`, a
        reference model's logits (B, T_out, V), also KL(ref || this model) per position.
        """
        logits = self.logits(idx, positions, mask, targets.shape[1], src)  # (B, T_out, V)
        ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view_as(targets)
        if ref is None:
            return ce
        ref_logp = F.log_softmax(ref.float(), -1)
        kl = (ref_logp.exp() * (ref_logp - F.log_softmax(logits, -1))).sum(-1)
        return ce, kl

    def logits(self, idx, positions, mask, n_out: int, src=None) -> torch.Tensor:
        """`Transformer.forward` without a cache, the tied head applied to the first n_out positions
        only, or to the positions `src` (B, n_out)."""
        net = self.net
        x = net.tok_emb(idx)  # (B, T_in, C)
        cos = net.rope_cos[positions].unsqueeze(1)  # (B, 1, T_in, D/2)
        sin = net.rope_sin[positions].unsqueeze(1)
        for i, layer in enumerate(net.layers):
            x = layer(x, cos, sin, mask, None, i, 0)
        if src is not None:
            x = x.gather(1, src[..., None].expand(-1, -1, x.shape[-1]))
        h = net.norm(x[:, :n_out])  # (B, n_out, C)
        return F.linear(h, net.tok_emb.weight).float()  # (B, n_out, V)


def batch_mask(batch: dict, L: int, ar: bool, device, flex: bool):
    offset = batch["offset"].to(device)
    if flex:
        return flex_block_mask(L, batch["bs"], offset, ar=ar)
    return causal_mask(L, device) if ar else training_mask(L, batch["bs"], offset)


def batch_positions(B: int, L: int, ar: bool, device) -> torch.Tensor:
    pos = torch.arange(L, device=device)
    return (pos if ar else torch.cat([pos, pos])).unsqueeze(0).expand(B, -1)


def loss_terms(ce: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
    """Weighted loss and its parts (all per valid token; `loss` is what is minimised).

    mask_loss = sum_masked CE / t / n_valid  (the NELBO per token; for AR, the next-token CE)
    keep_loss = mean CE at unmasked positions;  edit_loss = mean CE at unmasked corrupted positions.
    """
    w, masked, valid, cor = batch["weight"], batch["masked"], batch["valid"], batch["corrupted"]
    n = valid.sum().clamp(min=1)
    unmasked = valid & ~masked
    return {
        "loss": (ce * w).sum() / n,
        "mask_loss": (ce * w * masked).sum() / n,
        "keep_loss": (ce * unmasked).sum() / unmasked.sum().clamp(min=1),
        "edit_loss": (ce * cor).sum() / cor.sum().clamp(min=1),
    }


@torch.no_grad()
def evaluate(module, batches, *, ar: bool, device, flex: bool = False, autocast=None) -> dict:
    """Mean per-token NELBO (diffusion) or next-token CE (AR) over prepared batches."""
    total, count = 0.0, 0
    for batch in batches:
        b = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        B, L = b["targets"].shape
        mask = batch_mask(b, L, ar, device, flex)
        with autocast or _nullctx():
            ce = module(b["idx"], batch_positions(B, L, ar, device), mask, b["targets"], b.get("src"))
        total += float((ce * b["weight"] * b["masked"]).sum())
        count += int(b["valid"].sum())
    return {"loss": total / max(count, 1), "tokens": count}


class _nullctx:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def validation_loss(model, tokenizer, texts, *, seq_len: int = 256, batch_size: int = 8, n_batches: int = 4,
                    block_size: int = 32, p_fim: float = 0.5, seed: int = 0) -> dict:
    """Validation NELBO per token (diffusion, mask stage, fixed block size) or CE (AR) of a model on texts.

    Deterministic for a given seed: the same sequences and noise every call. Returns
    {"loss", "tokens", "kind", "elbo" | "ce_next_token", ...}; kind "nelbo" is an upper bound on the
    NLL in nats/token, "ce" the AR next-token cross-entropy.
    """
    from .data import SequenceConfig, SequenceSampler, TokenData

    device = next(model.parameters()).device
    ar = bool(model.cfg.causal)
    seq_len = min(seq_len, model.cfg.max_seq_len)
    data = TokenData.from_texts(tokenizer, list(texts))
    sampler = SequenceSampler(data, tokenizer, SequenceConfig(seq_len=seq_len, p_fim=p_fim), seed=seed)
    batches = list(eval_batches(sampler, n_batches, batch_size, block_size, ar=ar, seed=seed,
                                shift=model.cfg.shift))
    was_training = model.training
    model.eval()
    out = evaluate(TrainModule(model), batches, ar=ar, device=device)
    model.train(was_training)
    key = "ce_next_token" if ar else "elbo"  # the names eval.py records
    return {**out, key: out["loss"], "kind": "ce" if ar else "nelbo", "seq_len": seq_len,
            "block_size": 1 if ar else block_size}


def eval_batches(sampler, n_batches: int, batch_size: int, block_size: int, *, ar: bool, seed: int,
                 shift: bool = False):
    """Fixed validation batches: mask-stage objective at one block size, seeded by (seed, i)."""
    ids = sampler.special
    for i in range(n_batches):
        x0, anchor = sampler.batch(i, batch_size, rank=0)
        if ar:
            yield ar_batch(x0, ids)
        else:
            rng = np.random.default_rng([seed, i, 99])
            yield diffusion_batch(x0, anchor, block_size, edit=False, ids=ids, cfg=ObjectiveConfig(shift=shift),
                                  rng=rng)


def step_flops(cfg, B: int, L: int, bs: int, ar: bool) -> float:
    """Model FLOPs of one training micro-batch: 6 N_layers T_in + 6 (V d) T_out + 12 n_layer d pairs."""
    T_in = L if ar else 2 * L
    n_body = cfg.n_params(include_embedding=False)
    head = cfg.vocab_size * cfg.dim
    attn = 12 * cfg.n_layer * cfg.dim * attention_pairs(L, bs, ar)
    return float(B * (6 * n_body * T_in + 6 * head * L + attn))


__all__ = [
    "ObjectiveConfig", "block_ids", "training_mask", "training_mask_mod", "training_block_mask", "flex_block_mask",
    "causal_mask",
    "sample_t", "q_xt", "elbo_weight", "shift_sources", "edit_corrupt", "corrupt_blocks", "TokenDraw", "diffusion_batch",
    "ar_batch", "TrainModule", "loss_terms", "evaluate", "validation_loss", "step_flops",
]
