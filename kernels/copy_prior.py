"""The copy prior of a block-diffusion step (diffusion_core/copy_prior.py) on the device, in one launch.

    copy_boost(hist, pos, n_prev, ids, masked, pred, conf, line_mode, *, threshold, first, nmin, nmax, k)

The graphed decoder's state: `hist` (H,) the cache's token ids (its first `pos` entries, plus the
previous block's `n_prev` when `first`: the prompt, written by the host), `ids` (2b,) [previous
block ; block], `masked` (b,), the step's `pred`/`conf` (b,), `line_mode` (0-d bool). Unless
`first`, the previous block's first n_prev tokens enter `hist` at pos (the step that puts their
K/V into the cache). The committed text is hist[:pos + n_prev] then the block's head (the
positions before its first mask); the draft is what followed the latest earlier occurrence of the
longest nmin..nmax-token n-gram ending it (k tokens at most); from the head rightwards, a masked
position whose prediction is the draft's token with confidence >= threshold gets confidence 1 (the
commit rule then takes it), a committed one whose token or prediction is it lets the walk on,
the first other position ends it. Not in line mode. Returns the confidences (the Triton
launcher writes them in place).

In torch this is ~60 launches of tiny tensors; the Triton kernel is one program over the cache's
ids (H <= 8k) and the block (b <= 128).

    draft_triton(hist, tok, pos, *, nmin, nmax, k)  /  draft_reference(hist, n, nmin, nmax, k)

The draft alone, for the AR baseline's verify step (prompt lookup, `GraphedAR`): the last token
`tok` enters `hist` at `pos`, and the k tokens that followed the latest earlier occurrence of the
longest n-gram ending hist[:pos + 1] come back with their count.
"""

from __future__ import annotations

import torch

from ._triton import next_pow2

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU wheels of torch come without triton: the reference serves
    triton = None


def draft_reference(hist, n, nmin: int, nmax: int, k: int):
    """(draft (k,), its length, a 0-d tensor): the tokens that followed the latest earlier
    occurrence of the longest nmin..nmax-token n-gram ending hist[:n] (n a 0-d tensor); length 0
    when there is none (`diffusion_core.copy_prior.draft_host` on device tensors)."""
    H, dev = hist.shape[0], hist.device
    ar_h, kk = torch.arange(H, device=dev), torch.arange(nmax, device=dev)
    tail_at = n - 1 - kk  # (nmax,)
    tail = hist[tail_at.clamp(min=0)]
    at = ar_h[:, None] - 1 - kk[None, :]  # (H, nmax): the occurrence ending before e, read backwards
    eq = (hist[at.clamp(min=0)] == tail[None, :]) & (at >= 0) & (tail_at >= 0)[None, :]
    run = eq.int().cumprod(1).sum(1)  # (H,) match length ending before e
    score = torch.where((ar_h < n) & (run >= nmin), run * H + ar_h, -1)
    e = score.argmax()
    d = hist[(e + torch.arange(k, device=dev)).clamp(max=H - 1)]
    return d, torch.where(score.max() >= 0, (n - e).clamp(max=k), 0)


def copy_extra_reference(hist, end, block, masked, pred, conf, threshold: float, nmin: int, nmax: int, k: int):
    """The (b,) bool mask of the positions the walk commits: `hist` (H,) the cache's tokens in its
    first `end` (0-d tensor) entries, `block`/`masked`/`pred`/`conf` (b,). H >= end + b."""
    b, H, dev = block.shape[0], hist.shape[0], hist.device
    ar_b, ar_h = torch.arange(b, device=dev), torch.arange(H, device=dev)
    p = torch.where(masked.any(), masked.int().argmax(), b)  # the head: positions before the first mask
    off = ar_h - end
    seq = torch.where((off >= 0) & (off < p), block[off.clamp(0, b - 1)], hist)
    d, length = draft_reference(seq, end + p, nmin, nmax, k)  # the draft after the committed text
    j = ar_b - p  # block position i reads the draft's token j = i - p
    dj = d[j.clamp(0, k - 1)]
    ok = (j >= 0) & (j < length) & torch.where(masked, (pred == dj) & (conf >= threshold), (block == dj) | (pred == dj))
    walk = (ok | (j < 0)).int().cumprod(0).bool()
    return walk & masked & (j >= 0)


def copy_boost_reference(hist, pos, n_prev, ids, masked, pred, conf, line_mode, *, threshold: float,
                         first: bool, nmin: int, nmax: int, k: int):
    """Pure torch (`hist` changed in place unless `first`); returns the new confidences."""
    b = masked.shape[0]
    if not first:
        ar_b = torch.arange(b, device=hist.device)
        at = (pos + ar_b).clamp(max=hist.shape[0] - 1)
        hist.index_copy_(0, at, torch.where(ar_b < n_prev, ids[:b], hist[at]))
    extra = copy_extra_reference(hist, pos + n_prev, ids[b:], masked, pred, conf, threshold, nmin, nmax, k)
    return torch.where(extra & ~line_mode, 1.0, conf)


# --- Triton ------------------------------------------------------------------------------------

if triton is not None:

    @triton.jit
    def _vseq(HIST, IDS, idx, pos, n_prev, end, p, b, H, FIRST: tl.constexpr):
        """The committed text's token at idx (any shape): the previous block (unless FIRST), the
        block's head, else the cache's ids; -1 outside [0, H)."""
        in_blk = (idx >= end) & (idx < end + p)
        v = tl.load(HIST + idx, mask=(idx >= 0) & (idx < H) & ~in_blk, other=-1)
        v = tl.where(in_blk, tl.load(IDS + b + (idx - end), mask=in_blk, other=-1), v)
        if not FIRST:
            in_prev = (idx >= pos) & (idx < end)
            v = tl.where(in_prev, tl.load(IDS + (idx - pos), mask=in_prev, other=-1), v)
        return v

    @triton.jit
    def _latest_match(HIST, IDS, pos, n_prev, end, p, b, H, FIRST: tl.constexpr, NMIN: tl.constexpr,
                      NMAX: tl.constexpr, BLOCK_H: tl.constexpr):
        """Where the draft starts in the committed text (`_vseq`'s, n = end + p tokens): after the
        latest earlier occurrence of its longest NMIN..NMAX-token ending; (start, found)."""
        n = end + p
        e = tl.arange(0, BLOCK_H)
        alive = e < n
        run = tl.zeros([BLOCK_H], dtype=tl.int32)  # the match ending before each e < n
        for kk in tl.static_range(NMAX):
            t = _vseq(HIST, IDS, n - 1 - kk, pos, n_prev, end, p, b, H, FIRST)
            a = _vseq(HIST, IDS, e - 1 - kk, pos, n_prev, end, p, b, H, FIRST)
            alive = alive & (a == t) & (e - 1 - kk >= 0) & (n - 1 - kk >= 0)
            run += alive.to(tl.int32)
        score = tl.where((e < n) & (run >= NMIN), run * H + e, -1)
        best = tl.max(score, axis=0)  # the longest, then the latest
        return tl.where(best >= 0, best % H, 0), best >= 0

    @triton.jit
    def _copy_kernel(HIST, IDS, MASKED, PRED, CONF, POS, NPREV, LINE, H, b, threshold,
                     FIRST: tl.constexpr, NMIN: tl.constexpr, NMAX: tl.constexpr, K: tl.constexpr,
                     BLOCK_H: tl.constexpr, BLOCK_B: tl.constexpr):
        pos = tl.load(POS)
        n_prev = tl.load(NPREV)
        end = pos + n_prev
        i = tl.arange(0, BLOCK_B)
        okb = i < b
        mk = (tl.load(MASKED + i, mask=okb, other=0) != 0) & okb
        p = tl.min(tl.where(mk, i, b), axis=0)  # the head's length
        n = end + p
        if not FIRST:  # the previous block enters the cache's ids (read below from IDS, not HIST)
            tl.store(HIST + pos + i, tl.load(IDS + i, mask=okb, other=0), mask=okb & (i < n_prev) & (pos + i < H))
        start, found = _latest_match(HIST, IDS, pos, n_prev, end, p, b, H, FIRST, NMIN, NMAX, BLOCK_H)
        j = i - p
        src = start + j
        has = found & (j >= 0) & (j < K) & (src < n) & okb
        d = _vseq(HIST, IDS, tl.where(has, src, 0), pos, n_prev, end, p, b, H, FIRST)
        blk = tl.load(IDS + b + i, mask=okb, other=-1)
        pred = tl.load(PRED + i, mask=okb, other=-1)
        c = tl.load(CONF + i, mask=okb, other=0.0)
        ok = has & tl.where(mk, (pred == d) & (c >= threshold), (blk == d) | (pred == d))
        stop = tl.min(tl.where(~ok & (j >= 0) & okb, i, BLOCK_B), axis=0)  # the walk's first miss
        extra = mk & (j >= 0) & (i < stop) & (tl.load(LINE) == 0)
        tl.store(CONF + i, tl.where(extra, 1.0, c), mask=okb)

    @triton.jit
    def _draft_kernel(HIST, TOK, POS, D, DLEN, H, NMIN: tl.constexpr, NMAX: tl.constexpr, K: tl.constexpr,
                      BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr):
        # the text: hist[:pos], then `tok` as a one-token head (`_vseq` reads it from TOK, not HIST)
        pos = tl.load(POS)
        tl.store(HIST + pos, tl.load(TOK), mask=pos < H)
        start, found = _latest_match(HIST, TOK, pos, 0, pos, 1, 0, H, True, NMIN, NMAX, BLOCK_H)
        j = tl.arange(0, BLOCK_K)
        src = start + j
        d = tl.where(src < H, _vseq(HIST, TOK, src, pos, 0, pos, 1, 0, H, True), 0)
        tl.store(D + j, d, mask=j < K)
        tl.store(DLEN, tl.where(found, tl.minimum(pos + 1 - start, K), 0))


def draft_triton(hist, tok, pos, *, nmin: int, nmax: int, k: int, out=None):
    """The AR verify step's draft in one launch: `tok` (1,) enters `hist` at `pos` (0-d), then
    `draft_reference(hist, pos + 1, ...)`; returns (d (k,), length 0-d) (into `out` when given).
    Entries of d past its length are unspecified."""
    H = hist.shape[0]
    if H > 8192 or not 1 <= k <= 64:
        raise ValueError(f"draft: hist of {H} (<= 8192), k of {k} (1-64)")
    d, n = out if out is not None else (torch.empty(k, dtype=torch.long, device=hist.device),
                                         torch.empty((), dtype=torch.long, device=hist.device))
    _draft_kernel[(1,)](hist, tok, pos, d, n, H, NMIN=nmin, NMAX=nmax, K=k, BLOCK_H=next_pow2(H),
                        BLOCK_K=max(16, next_pow2(k)), num_warps=4)
    return d, n


def copy_boost_triton(hist, pos, n_prev, ids, masked, pred, conf, line_mode, *, threshold: float,
                      first: bool, nmin: int, nmax: int, k: int):
    """The Triton launcher (CUDA tensors, or CPU ones under TRITON_INTERPRET=1); one program;
    `conf` (float32, contiguous) is written in place and returned."""
    b, H = masked.shape[0], hist.shape[0]
    if not 1 <= b <= 128 or ids.shape != (2 * b,) or H > 8192 or conf.dtype != torch.float32:
        raise ValueError(f"copy_boost: a block of {b} (1-128), ids (2b,), hist of {H} (<= 8192), float32 conf")
    _copy_kernel[(1,)](hist, ids, masked.view(torch.int8), pred, conf, pos, n_prev, line_mode.view(torch.int8),
                       H, b, float(threshold), FIRST=first, NMIN=nmin, NMAX=nmax, K=k,
                       BLOCK_H=next_pow2(H), BLOCK_B=max(16, next_pow2(b)), num_warps=4)
    return conf


def copy_boost(*args, **kw):
    """`copy_boost_triton` on CUDA with Triton, the reference elsewhere."""
    from ._triton import use_triton

    return (copy_boost_triton if use_triton(args[0]) else copy_boost_reference)(*args, **kw)


# --- benchmark ---------------------------------------------------------------------------------

def bench(device: str = "cuda", sizes=((1024, 32), (4096, 64)), compile: bool = True) -> list[dict]:
    """ms per call of triton vs the torch reference eager vs torch.compile."""
    from ._triton import compiled, has_triton, time_providers

    rows = []
    kw = dict(threshold=0.5, first=False, nmin=2, nmax=4, k=16)
    c = compile and compiled(lambda *a: copy_boost_reference(*a, **kw))
    for H, b in sizes:
        g = torch.Generator().manual_seed(H)
        hist = torch.randint(0, 50, (H + b,), generator=g).to(device)
        pos, n_prev = torch.tensor(H // 2, device=device), torch.tensor(b, device=device)
        ids = torch.randint(0, 50, (2 * b,), generator=g).to(device)
        masked = torch.arange(b, device=device) >= b // 4
        pred = torch.randint(0, 50, (b,), generator=g).to(device)
        conf = torch.rand(b, generator=g).to(device)
        line = torch.tensor(False, device=device)
        args = (hist, pos, n_prev, ids, masked, pred, conf, line)
        providers = {"torch": lambda: copy_boost_reference(*args, **kw)}
        if c:
            providers["torch.compile"] = lambda: c(*args)
        if has_triton() and torch.device(device).type == "cuda":
            providers["triton"] = lambda: copy_boost_triton(hist, pos, n_prev, ids, masked, pred, conf.clone(), line,
                                                            **kw)
        rows += time_providers({"kernel": "copy_prior", "H": H, "b": b}, providers)
    return rows
