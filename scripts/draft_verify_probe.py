"""Probe (session 18, a negative result): Jacobi-style draft-and-verify commits for the edit-trained
diffusion model, on Q1 on the CPU. Uncommitted positions are fed the last step's predictions
(drafts) instead of masks; a step commits the first uncommitted position and each next one whose
left neighbour's fed draft was confirmed, plus any position over the threshold.

    python scripts/draft_verify_probe.py verify LOW eval q1 --limit 200 --threshold 0.9 --device cpu --quiet
    python scripts/draft_verify_probe.py base eval q1 --limit 200 --threshold 0.9 --device cpu --quiet

LOW: the confidence a chained position needs besides its confirmed neighbour (0 = none). On the
shipped model (200 Q1 tasks, CPU): 8.0% pass@1 at 3.6 steps a task for LOW 0, 0.3 and 0.5, where
the threshold rule gives 13.0% at 7.7 steps (docs/results.md, session 18)."""
import sys
import torch
import dllm_ls.diffusion_core.sampler as S
from dllm_ls.diffusion_core.sampler import confidence

MODE = sys.argv.pop(1)  # "verify" or "base"
orig_new_block, orig_advance = S.DecodeState._new_block, S.DecodeState.advance


def _new_block(self, clean):
    orig_new_block(self, clean)
    self.draft = [None] * self.b


def next_inputs(self, host=False):
    n = len(self.clean) if self.first else 0
    blk = [d if (m and d is not None) else t for t, m, d in zip(self.block, self.masked, self.draft)]
    return torch.tensor([self.clean[:n]], dtype=torch.long).view(1, n), torch.tensor([blk], dtype=torch.long)


def advance(self, logits, rows=None):
    if self.heal_left or self.guard is not None:
        return orig_advance(self, logits, rows)
    s, cfg = self.sampler, self.cfg
    if self.first:
        self.cache.append_tokens(self.clean)
        self.first = False
    cand = self._candidates()
    conf, pred = confidence(logits.masked_fill(s.ban, float("-inf")), cfg.confidence)
    conf, pred = conf.tolist(), pred.tolist()
    chosen, chain = [], True
    for j, i in enumerate(cand):
        if j == 0 or (chain and conf[i] >= LOW):
            chosen.append(i)
        elif conf[i] >= cfg.threshold:
            chosen.append(i)
        d = self.draft[i]
        chain = chain and d is not None and d == pred[i]
    stop = self._commit(chosen, pred)
    self.draft = [pred[i] if self.masked[i] else None for i in range(self.b)]
    return self._end_step(len(chosen), stop)


LOW = float(sys.argv.pop(1)) if MODE == "verify" else 0.0
if MODE == "verify":
    S.DecodeState._new_block = _new_block
    S.DecodeState.next_inputs = next_inputs
    S.DecodeState.advance = advance
    S.DecodeState.rows = lambda self: None
from dllm_ls.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
