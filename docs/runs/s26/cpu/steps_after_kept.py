import sys, json, torch
torch.set_num_threads(1)
from dllm_ls.diffusion_core.checkpoint import load_checkpoint, resolve_checkpoint
from dllm_ls.diffusion_core.sampler import Sampler, SamplerConfig, DecodeState
from dllm_ls.trainer.humaneval import q2_tasks, subsample
lim = int(sys.argv[1]); th = float(sys.argv[2])
model, tok = load_checkpoint(resolve_checkpoint(None), device="cpu")
s = Sampler(model, tok)
rec = []
orig = DecodeState._end_step
def end_step(self, n, stop):
    rec.append((self.text, n, self.b, sum(self.masked)))
    return orig(self, n, stop)
DecodeState._end_step = end_step
cfg = SamplerConfig(block_size=32, max_tokens=192, threshold=th)
tot = waste = 0; rows = []
for t in subsample(q2_tasks(), lim):
    rec.clear()
    c = s.complete(t.prefix, t.suffix, mode="block", cfg=cfg)
    final = c.text
    steps = len(rec)
    first = next((i for i, r in enumerate(rec) if r[0].startswith(final) or r[0].replace("\r","").startswith(final)), steps - 1)
    tot += steps; waste += steps - 1 - first
    rows.append((t.task_id if hasattr(t, "task_id") else "", steps, first + 1, c.stop, len(final)))
print("steps", tot, "after kept text complete", waste, f"{waste/tot:.1%}")
from collections import Counter
cw = Counter()
for r in rows:
    cw[str(r[3]) if r[3] else "none"] += r[1] - r[2]
print(cw)
import pickle
