"""Experiment: the AR twin's greedy decoding with prompt-lookup drafts (lossless: the same text),
its steps counted exactly. A step drafts up to K tokens (the copy_draft.py lookup) and verifies
them in one forward: it keeps the drafted tokens that equal the greedy ones, plus the model's own
next token. Simulated on the greedy token sequence, which the drafts do not change."""
import os, sys
import dllm_ls.diffusion_core.sampler as S
sys.path.insert(0, os.path.dirname(__file__))
NMIN, NMAX, K = int(os.environ.get("NMIN", "2")), int(os.environ.get("NMAX", "4")), int(os.environ.get("K", "16"))

def draft(seq):
    for n in range(min(NMAX, len(seq) - 1), NMIN - 1, -1):
        tail = seq[-n:]
        for s in range(len(seq) - n - 1, -1, -1):
            if seq[s:s + n] == tail:
                return seq[s + n:s + n + K]
    return []

orig = S.Sampler._decode_ar
STATS = {"greedy": 0, "pld": 0}

def _decode_ar(self, clean, max_tokens, cache, ctx, trace, should_stop=None):
    before = list(cache.tokens) + list(clean)
    out = orig(self, clean, max_tokens, cache, ctx, trace, should_stop)
    # the model's outputs: the cached generated tokens, then the last one (and an eos), trace.steps in all
    outs = trace.steps
    gen = (list(cache.tokens)[len(before):] + [None] * outs)[:outs]  # None: not cached (last / eos)
    i = steps = 0
    ctx_ids = before
    while i < outs:
        d = draft(ctx_ids + [t for t in gen[:i]])
        m = 0
        while m < len(d) and i + m < outs and gen[i + m] is not None and gen[i + m] == d[m]:
            m += 1
        i += m + 1
        steps += 1
    STATS["greedy"] += trace.steps
    STATS["pld"] += steps
    trace.steps = steps
    return out

S.Sampler._decode_ar = _decode_ar
from dllm_ls.cli import main
rc = main(sys.argv[1:])
print("AR steps greedy / with prompt lookup:", STATS, file=sys.stderr)
sys.exit(rc)
