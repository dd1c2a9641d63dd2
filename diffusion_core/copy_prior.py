"""The copy prior: block-mode commits helped by a draft copied from the context (prompt lookup).

Code repeats itself: a name, a call's arguments, a line like one above. At each step of a
multi-line block the text is drafted from the context: the longest n-gram (NMIN..NMAX tokens)
that ends the committed text (the cache's tokens, then the block's contiguous committed head) is
looked up earlier in it, most recent occurrence first, and the K tokens that followed it there
are the draft for the positions after the head. Walking right from the head's end, a masked
position whose prediction equals the draft's token with confidence >= `SamplerConfig.copy` is
committed too (its confidence counts as 1 in the commit rule), a committed one whose token or
prediction equals it lets the walk go on, and the first disagreement ends it. The draft never
writes a token the model does not predict: it lowers the bar for predictions that the context
backs (docs/results.md, "The copy prior (issue 8, session 27)").

Two implementations with one result: `extra_host` on lists (DecodeState, the scheduler) and
`extra_device` on tensors with static shapes (the graphed decoder, inside its CUDA graph);
tests/diffusion_core/test_copy_prior.py checks that they agree.
"""

from __future__ import annotations

COPY = 0.5  # SamplerConfig.copy's default: the confidence a prediction the draft backs needs
NMIN, NMAX = 2, 4  # n-gram lengths matched at the end of the committed text
K = 16  # draft length


def draft_host(seq: list[int]) -> list[int]:
    """The draft after `seq`: the continuation of the longest (then most recent) earlier
    occurrence of its last NMIN..NMAX tokens; [] when there is none."""
    end = len(seq)
    best_run, best_e = 0, -1
    for e in range(end - 1, NMIN - 1, -1):  # an occurrence ending before position e (e < end)
        run = 0
        while run < NMAX and run < e and seq[e - 1 - run] == seq[end - 1 - run]:
            run += 1
        if run > best_run:
            best_run, best_e = run, e
            if run == NMAX:
                break
    return seq[best_e:best_e + K] if best_run >= NMIN else []


def extra_host(context: list[int], block: list[int], masked: list[bool], pred: list[int], conf: list[float],
               threshold: float) -> list[int]:
    """The masked block positions the copy prior commits (ascending): `context` the cache's
    tokens, `block` this step's block (committed tokens and masks), `pred`/`conf` the step's
    per-position argmax and confidence."""
    p = masked.index(True) if True in masked else len(block)
    d = draft_host(context + block[:p])
    out = []
    for j in range(p, min(len(block), p + len(d))):
        t = d[j - p]
        if masked[j]:
            if pred[j] != t or conf[j] < threshold:
                break
            out.append(j)
        elif block[j] != t and pred[j] != t:
            break
    return out


def extra_device(hist: torch.Tensor, end: torch.Tensor, block: torch.Tensor, masked: torch.Tensor,
                 pred: torch.Tensor, conf: torch.Tensor, threshold: float) -> torch.Tensor:
    """`extra_host` with static shapes: `hist` (H,) the cache's tokens in its first `end` (a 0-d
    tensor) entries, `block`/`masked`/`pred`/`conf` (b,); returns the (b,) bool mask of extra
    commits. H >= end + b."""
    import torch  # (not at import: the CLI's argument defaults read COPY)

    b, H, dev = block.shape[0], hist.shape[0], hist.device
    ar_b, ar_h, kk = (torch.arange(n, device=dev) for n in (b, H, NMAX))
    p = torch.where(masked.any(), masked.int().argmax(), b)  # the head: positions before the first mask
    off = ar_h - end
    seq = torch.where((off >= 0) & (off < p), block[off.clamp(0, b - 1)], hist)
    n = end + p  # the committed text: seq[:n]
    tail_at = n - 1 - kk  # (NMAX,)
    tail = seq[tail_at.clamp(min=0)]
    at = ar_h[:, None] - 1 - kk[None, :]  # (H, NMAX): the occurrence ending before e, read backwards
    eq = (seq[at.clamp(min=0)] == tail[None, :]) & (at >= 0) & (tail_at >= 0)[None, :]
    run = eq.int().cumprod(1).sum(1)  # (H,) match length ending before e
    score = torch.where((ar_h < n) & (run >= NMIN), run * H + ar_h, -1)
    e = score.argmax()
    k = ar_b - p  # block position j reads the draft's token k = j - p
    src = e + k
    d = seq[src.clamp(0, H - 1)]
    has = (score.max() >= 0) & (k >= 0) & (k < K) & (src < n)
    ok = has & torch.where(masked, (pred == d) & (conf >= threshold), (block == d) | (pred == d))
    walk = (ok | (k < 0)).int().cumprod(0).bool()
    return walk & masked & (k >= 0)
