"""Where a graphed decoding step's device time goes: each kernel of one eager step of the shipped
model (torch.profiler, CUDA), grouped by name, beside the graph replay's time per step; then the
device time per prompt-length bucket of the prompt's prefill graph (the AR baseline's and the
server's) and of the diffusion decoder's first-step graph (the prefill and the first block in one
forward), side by side: a fixed cost of every cold completion.

    python3 scripts/profile_step.py [BLOCK ...]        (GPU; default blocks: 32)
"""

import sys
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from dllm_ls.diffusion_core.checkpoint import default_checkpoint, load_checkpoint
from dllm_ls.diffusion_core.graphed import graphed
from dllm_ls.trainer.step_floor import time_steps
from dllm_ls.diffusion_core.sampler import Sampler, SamplerConfig

model, tok = load_checkpoint(default_checkpoint(), "cuda")
for b in [int(x) for x in sys.argv[1:]] or [32]:
    cfg = SamplerConfig(block_size=b, threshold=0.5, max_tokens=128)
    dec = graphed(Sampler(model, tok, cfg), cfg)
    replay_ms = time_steps(dec, context=300, n=200)
    dec._scratch_state()
    dec._set_block(0, 0, 0)
    dec.cache.pos.fill_(300)
    with torch.no_grad():
        for _ in range(3):
            dec._step()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                dec._step()
            torch.cuda.synchronize()
    by = defaultdict(lambda: [0, 0.0])
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            by[e.name][0] += 1
            by[e.name][1] += e.device_time_total
    total = sum(us for _, us in by.values()) / 10
    n = sum(c for c, _ in by.values()) / 10
    print(f"b={b}: graph replay {replay_ms * 1000:.1f} us/step; {n:.0f} kernels, {total:.1f} us of kernel time "
          f"per eager step (the rest of the replay: gaps between kernels)")
    for name, (c, us) in sorted(by.items(), key=lambda kv: -kv[1][1]):
        print(f"  {us / 10:8.1f} us  {c / 10:5.1f}x  {name[:110]}")

# per bucket: the prefill graph alone (the AR baseline's and the server's `GraphedStep`), and a
# diffusion completion's first step (`_first_step`: the prompt and the first block in one forward,
# the block state set up from one copy), from an empty cache, side by side
from dllm_ls.diffusion_core.graphed_step import GraphedStep

start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
pre = GraphedStep(Sampler(model, tok, cfg), cfg.block_size)
pre._capture()
dec._capture()


def timed(fn, n=20):
    fn()
    torch.cuda.synchronize()
    start.record()
    for _ in range(n):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / n * 1000


for T in dec.buckets:
    ids = torch.randint(10, 1000, (T,))
    pre.cache.reset()
    us_pre = timed(lambda: pre._run_prefill(ids, T))
    dec.cache.reset()
    dec.ctl_np[:5] = (0, T, cfg.block_size, cfg.max_tokens, 0)
    dec.ctl_np[8:8 + T] = ids.numpy()
    dec.ctl.copy_(dec.ctl_h)
    us_first = timed(dec.first_graphs[T].replay)
    print(f"bucket {T:5d}: prefill graph {us_pre:7.1f} us   prefill + first step graph {us_first:7.1f} us")
