"""The bookkeeping of one block-diffusion step after the logits, in one launch.

    block_update(tokens, conf, state, *, eos_id, mask_id, max_seq_len, rule, threshold, factor, fallback, revise)

Given each block position's best token and confidence (`commit.py`'s row pass), it updates a
static decoding state in place (`BlockState`: the graphed decoder's device tensors):

1. the commit candidates: masked and active positions; in line mode only those before the first
   committed line break (`line_candidates`);
2. the commit rule over their confidences (`commit.commit_mask_reference`: threshold or factor,
   at least one position when none passes: the leftmost candidate, or the most confident, or by
   the line-mode flag with `fallback="mode"`: the most confident in line mode);
3. revision (`revise` > 0, the sampler's `SamplerConfig.revise`; not in line mode): an already
   committed position whose best token now differs from its own, with confidence >= revise,
   takes it (not to or from eos: where the text ends stays put); committed tokens enter the
   block; every active position after the first eos becomes eos;
4. a snapshot for the host: (block, still-masked, number committed, active count);
5. when no active position is masked, the block is finished: it becomes the previous block (its
   K/V enters the cache in the next step), a new block of masks starts (shorter near max_tokens),
   the generated count grows; else the block stays for another step.

In torch this is ~45 launches of tiny tensors per step (a third of a graphed step's kernels); the
Triton kernel is one program over the block (b <= 128).
"""

from __future__ import annotations

import dataclasses

import torch

from ._triton import next_pow2
from .commit import FALLBACKS, commit_mask_reference

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU wheels of torch come without triton: the reference serves
    triton = None

RULES = ("threshold", "factor")


@dataclasses.dataclass
class BlockState:
    """The device state of a block-diffusion decoder (batch 1, block size b)."""
    ids: torch.Tensor  # (2b,) long: [previous block ; block]
    masked: torch.Tensor  # (b,) bool
    active: torch.Tensor  # (b,) bool: positions within the current block's length
    n_prev: torch.Tensor  # () long: previous block's length (0: none this step)
    gen: torch.Tensor  # () long: tokens generated in finished blocks
    max_tok: torch.Tensor  # () long
    pos: torch.Tensor  # () long: the cache position (clean tokens)
    line_mode: torch.Tensor  # () bool
    newline: torch.Tensor  # (V,) bool: tokens holding a line break
    snap: torch.Tensor  # (2b + 2,) long: block, masked, committed, active count


# --- reference ---------------------------------------------------------------------------------

def line_candidates(block: torch.Tensor, masked: torch.Tensor, newline: torch.Tensor) -> torch.Tensor:
    """Line mode: the masked positions up to the first committed line break. The text ends at
    that break, so the positions after it are not worth a step; all masked positions when none
    is left before it (a break that does not end the line, e.g. a completion's first token)."""
    nl = newline[block] & ~masked
    after = (nl.cumsum(0) - nl.long()) > 0
    cand = masked & ~after
    return torch.where(cand.any(), cand, masked)


def block_update_reference(tokens, conf, st: BlockState, *, eos_id: int, mask_id: int, max_seq_len: int,
                           rule: str = "threshold", threshold: float = 0.9, factor: float = 1.0,
                           fallback: str = "mode", revise: float = 0.0):
    """Pure torch, in place on `st`; returns the commit mask."""
    b = st.masked.shape[0]
    ar = torch.arange(b, device=st.ids.device)
    blk, active = st.ids[b:], st.active
    cand = st.masked & active
    cand = torch.where(st.line_mode, line_candidates(blk, cand, st.newline), cand)
    leftmost = ~st.line_mode if fallback == "mode" else fallback  # "mode": decided on the device
    commit = commit_mask_reference(conf, cand, rule, threshold, factor, leftmost)
    if revise > 0:
        rev = (active & ~st.masked & (tokens != blk) & (conf >= revise) & (blk != eos_id) & (tokens != eos_id)
               & ~st.line_mode)
        blk = torch.where(rev, tokens, blk)
    new_blk = torch.where(commit, tokens, blk)
    masked = st.masked & ~commit
    is_eos = (new_blk == eos_id) & ~masked & active
    after = ((is_eos.cumsum(0) - is_eos.long()) > 0) & active  # positions after the first eos
    new_blk = torch.where(after, eos_id, new_blk)
    masked = masked & ~after
    b_eff = active.sum()
    st.snap.copy_(torch.cat([new_blk, masked.long(), commit.sum().view(1), b_eff.view(1)]))
    done = ~(masked & active).any()
    pos_next = (st.pos + st.n_prev).clamp(max=max_seq_len)  # (wasted steps run on)
    gen_next = st.gen + torch.where(done, b_eff, 0)
    active_next = torch.where(done, ar < (st.max_tok - gen_next).clamp(0, b), active)
    prev_next = torch.where(done, new_blk, st.ids[:b])
    blk_next = torch.where(done, torch.full_like(new_blk, mask_id), new_blk)
    st.masked.copy_(torch.where(done, active_next, masked))
    st.active.copy_(active_next)
    st.n_prev.copy_(torch.where(done, b_eff, 0))
    st.gen.copy_(gen_next)
    st.pos.copy_(pos_next)
    st.ids.copy_(torch.cat([prev_next, blk_next]))
    return commit


def step_inputs_reference(pos, n_prev, active, max_seq_len: int, capacity: int):
    """A step's RoPE positions (2b,), cache slots (2b,) and (2b, 2b) self-attention mask over
    [previous block ; block]: previous rows causal among themselves, block rows see the real
    previous block (its first n_prev) and the block's active positions."""
    b = active.shape[0]
    ar_b = torch.arange(b, device=active.device)
    ar_2b = torch.arange(2 * b, device=active.device)
    positions = torch.cat([pos + ar_b, pos + n_prev + ar_b]).clamp(max=max_seq_len - 1)
    slots = (pos + ar_2b).clamp(max=capacity - 1)
    i, j = ar_2b[:, None], ar_2b[None, :]
    key_prev = j < b
    block_key = torch.cat([torch.zeros(b, dtype=torch.bool, device=active.device), active])[None, :]
    self_mask = torch.where(i < b, key_prev & (j <= i),  # prev rows: causal among prev (always >= 1 key)
                            (key_prev & (j < n_prev)) | block_key)  # block rows: real prev + live block
    return positions, slots, self_mask


# --- Triton ------------------------------------------------------------------------------------

if triton is not None:
    from .commit import commit_rule

    @triton.jit
    def _update_kernel(TOK, CONF, IDS, MASKED, ACTIVE, NPREV, GEN, MAXTOK, POS, LINE, NEWLINE, SNAP,
                       COMMIT, b, eos_id, mask_id, max_seq_len, threshold, factor, revise,
                       FACTOR: tl.constexpr, FALLBACK: tl.constexpr, REVISE: tl.constexpr, BLOCK: tl.constexpr):
        i = tl.arange(0, BLOCK)
        ok = i < b
        blk = tl.load(IDS + b + i, mask=ok, other=0)
        prev = tl.load(IDS + i, mask=ok, other=0)
        mk = tl.load(MASKED + i, mask=ok, other=0) != 0
        act = tl.load(ACTIVE + i, mask=ok, other=0) != 0
        pred = tl.load(TOK + i, mask=ok, other=0)
        c = tl.load(CONF + i, mask=ok, other=0.0).to(tl.float32)
        cand = mk & act
        # line mode: the candidates before the first committed line break (all if none is left)
        nl = (tl.load(NEWLINE + blk, mask=ok, other=0) != 0) & ~cand & ok
        nl_i = nl.to(tl.int32)
        line = cand & ((tl.cumsum(nl_i, axis=0) - nl_i) == 0)
        line_mode = tl.load(LINE) != 0
        use_line = line_mode & (tl.sum(line.to(tl.int32), axis=0) > 0)
        cand = tl.where(use_line, line, cand)
        if FALLBACK == 0:  # FALLBACKS' index: "mode": the leftmost candidate outside line mode
            leftmost = ~line_mode
        elif FALLBACK == 1:  # "leftmost"
            leftmost = line_mode | ~line_mode
        else:  # "confident"
            leftmost = line_mode & ~line_mode
        commit = commit_rule(c, cand, i, threshold, factor, leftmost, FACTOR)
        if REVISE:  # committed positions whose best token now differs, confidently (not eos)
            rev = act & ~mk & (pred != blk) & (c >= revise) & (blk != eos_id) & (pred != eos_id) & ~line_mode
            blk = tl.where(rev, pred, blk)
        new_blk = tl.where(commit, pred, blk)
        masked = mk & ~commit
        is_eos = (new_blk == eos_id) & ~masked & act
        e_i = is_eos.to(tl.int32)
        after = ((tl.cumsum(e_i, axis=0) - e_i) > 0) & act
        new_blk = tl.where(after, eos_id, new_blk)
        masked = masked & ~after
        act_i = act.to(tl.int64)
        b_eff = tl.sum(act_i, axis=0)
        tl.store(SNAP + i, new_blk, mask=ok)
        tl.store(SNAP + b + i, masked.to(tl.int64), mask=ok)
        tl.store(SNAP + 2 * b, tl.sum(commit.to(tl.int64), axis=0))
        tl.store(SNAP + 2 * b + 1, b_eff)
        tl.store(COMMIT + i, commit.to(tl.int8), mask=ok)
        done = tl.sum((masked & act).to(tl.int32), axis=0) == 0
        pos = tl.load(POS)
        n_prev = tl.load(NPREV)
        gen_next = tl.load(GEN) + tl.where(done, b_eff, 0)
        left = tl.minimum(tl.maximum(tl.load(MAXTOK) - gen_next, 0), b)
        act_next = tl.where(done, i < left, act)
        tl.store(IDS + i, tl.where(done, new_blk, prev), mask=ok)
        tl.store(IDS + b + i, tl.where(done, mask_id, new_blk), mask=ok)
        tl.store(MASKED + i, tl.where(done, act_next, masked).to(tl.int8), mask=ok)
        tl.store(ACTIVE + i, act_next.to(tl.int8), mask=ok)
        tl.store(NPREV, tl.where(done, b_eff, 0))
        tl.store(GEN, gen_next)
        tl.store(POS, tl.minimum(pos + n_prev, max_seq_len))


if triton is not None:
    @triton.jit
    def _step_inputs_kernel(POS, NPREV, ACTIVE, POSITIONS, SLOTS, MASK, b, max_seq_len, capacity,
                            BLOCK: tl.constexpr):
        r = tl.program_id(0)  # a row of [previous block ; block]
        j = tl.arange(0, BLOCK)
        ok = j < 2 * b
        pos = tl.load(POS)
        n_prev = tl.load(NPREV)
        is_prev = r < b
        p = tl.where(is_prev, pos + r, pos + n_prev + r - b)
        tl.store(POSITIONS + r, tl.minimum(p, max_seq_len - 1))
        tl.store(SLOTS + r, tl.minimum(pos + r, capacity - 1))
        act = tl.load(ACTIVE + j - b, mask=ok & (j >= b), other=0) != 0
        key_prev = j < b
        row = tl.where(is_prev, key_prev & (j <= r), (key_prev & (j < n_prev)) | act)
        tl.store(MASK + r * 2 * b + j, row.to(tl.int8), mask=ok)


def step_inputs_triton(pos, n_prev, active, max_seq_len: int, capacity: int, out=None):
    """The Triton launcher: one program per row; `out` = (positions, slots, mask) buffers to fill."""
    b = active.shape[0]
    if not 1 <= b <= 128:
        raise ValueError(f"step_inputs: a block of {b} (1-128)")
    dev = active.device
    positions, slots, mask = out if out is not None else (
        torch.empty(2 * b, dtype=torch.long, device=dev), torch.empty(2 * b, dtype=torch.long, device=dev),
        torch.empty(2 * b, 2 * b, dtype=torch.bool, device=dev))
    _step_inputs_kernel[(2 * b,)](pos, n_prev, active.view(torch.int8), positions, slots, mask.view(torch.int8),
                                  b, max_seq_len, capacity, BLOCK=max(16, next_pow2(2 * b)), num_warps=1)
    return positions, slots, mask


def block_update_triton(tokens, conf, st: BlockState, *, eos_id: int, mask_id: int, max_seq_len: int,
                        rule: str = "threshold", threshold: float = 0.9, factor: float = 1.0,
                        fallback: str = "mode", revise: float = 0.0):
    """The Triton launcher (CUDA tensors, or CPU ones under TRITON_INTERPRET=1); one program."""
    if rule not in RULES or fallback not in FALLBACKS:
        raise ValueError(f"rule must be one of {RULES}, fallback one of {FALLBACKS}")
    b = st.masked.shape[0]
    if not 1 <= b <= 128 or st.ids.shape != (2 * b,) or st.snap.shape != (2 * b + 2,):
        raise ValueError(f"block_update: a block of {b} (1-128) with ids (2b,) and snap (2b + 2,)")
    commit = torch.empty(b, dtype=torch.bool, device=st.ids.device)
    _update_kernel[(1,)](
        tokens, conf, st.ids, st.masked.view(torch.int8), st.active.view(torch.int8), st.n_prev, st.gen,
        st.max_tok, st.pos, st.line_mode.view(torch.int8), st.newline.view(torch.int8), st.snap,
        commit.view(torch.int8), b, eos_id, mask_id, max_seq_len, float(threshold), float(factor), float(revise),
        FACTOR=rule == "factor", FALLBACK=FALLBACKS.index(fallback), REVISE=revise > 0, BLOCK=max(16, next_pow2(b)),
        num_warps=4)
    return commit


# --- benchmark ---------------------------------------------------------------------------------

def bench(device: str = "cuda", blocks=(4, 32, 128), V: int = 8192, compile: bool = True) -> list[dict]:
    """ms per call of triton vs the torch reference eager vs torch.compile (threshold rule, line mode)."""
    from ._triton import compiled, has_triton, time_providers

    rows = []
    kw = dict(eos_id=2, mask_id=3, max_seq_len=1 << 20)
    c = compile and compiled(lambda t, p, s: block_update_reference(t, p, s, **kw))
    newline = torch.zeros(V, dtype=torch.bool, device=device)
    newline[10] = True
    z = torch.zeros((), dtype=torch.long, device=device)
    for b in blocks:
        g = torch.Generator().manual_seed(b)
        st = BlockState(torch.full((2 * b,), 3, device=device), torch.ones(b, dtype=torch.bool, device=device),
                        torch.ones(b, dtype=torch.bool, device=device), z.clone(), z.clone(), z + 10 ** 6,
                        z.clone(), torch.tensor(True, device=device), newline,
                        torch.zeros(2 * b + 2, dtype=torch.long, device=device))
        tokens = torch.randint(4, V, (b,), generator=g).to(device)
        conf = (torch.rand(b, generator=g) * 0.5).to(device)  # one commit a step: the block stays open
        rows += time_providers({"kernel": "block_update", "b": b}, {
            "torch": lambda: block_update_reference(tokens, conf, st, **kw),
            "torch.compile": c and (lambda: c(tokens, conf, st)),
            "triton": has_triton() and tokens.is_cuda and (lambda: block_update_triton(tokens, conf, st, **kw)),
        }, graph=tokens.is_cuda)
    return rows
