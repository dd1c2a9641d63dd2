"""Experiment: one extra forward when a block is fully committed, revising its positions."""
import os, sys
import torch
import dllm_ls.diffusion_core.sampler as S
R = float(os.environ.get("POLISH", "0.5"))
orig_end, orig_adv = S.DecodeState._end_step, S.DecodeState.advance

def _end_step(self, n, stop):
    if (stop is None and True not in self.masked and self.ctx.mode == "block" and not getattr(self, "_polished", False)
            and len(self.generated) + self.b < self.max_tokens):
        self._polish = True
        t = self.trace; t.steps += 1; t.tokens += n; t.per_step.append(n)
        return False
    self._polished = False
    return orig_end(self, n, stop)

def advance(self, logits, rows=None):
    if getattr(self, "_polish", False):
        self._polish = False; self._polished = True
        s = self.sampler
        conf, pred = S.confidence(logits.masked_fill(s.ban, float("-inf")), self.cfg.confidence)
        r0 = self.revise; self.revise = R
        self._revise(pred.tolist(), conf)
        self.revise = r0
        stop = self._commit([], list(self.block))
        return orig_end(self, 0, stop) if True else None
    return orig_adv(self, logits, rows)

S.DecodeState._end_step, S.DecodeState.advance = _end_step, advance
from dllm_ls.cli import main
sys.exit(main(sys.argv[1:]))
