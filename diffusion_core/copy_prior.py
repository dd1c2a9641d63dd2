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

Two implementations with one result: `extra_host` here, on lists (DecodeState, the scheduler),
and `kernels.copy_prior` on tensors with static shapes (the graphed decoder, inside its CUDA
graph: a Triton kernel, or its torch reference); tests/diffusion_core/test_copy_prior.py and
tests/kernels/test_copy_prior.py check that they agree. `draft_host` alone also drafts for the
AR baseline's prompt lookup (`SamplerConfig.lookup`). No torch here: the CLI's argument
defaults read COPY.
"""

from __future__ import annotations

COPY = 0.5  # SamplerConfig.copy's default: the confidence a prediction the draft backs needs
NMIN, NMAX = 2, 4  # n-gram lengths matched at the end of the committed text
K = 16  # draft length


def draft_host(seq: list[int], k: int = 0) -> list[int]:
    """The draft after `seq`: the continuation (k tokens at most, default K) of the longest (then
    most recent) earlier occurrence of its last NMIN..NMAX tokens; [] when there is none."""
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
    return seq[best_e:best_e + (k or K)] if best_run >= NMIN else []


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
