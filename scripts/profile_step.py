"""Where a graphed decoding step's device time goes: each kernel of one eager step of the shipped
model (torch.profiler, CUDA), grouped by name, beside the graph replay's time per step; then the
device time of the prompt's prefill graph per length bucket (a fixed cost of every cold completion),
above 256 tokens with masked SDPA (the default) and with the Triton kernel side by side.

    python3 scripts/profile_step.py [BLOCK ...]        (GPU; default blocks: 32)
"""

import sys
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from dllm_ls.diffusion_core.checkpoint import default_checkpoint, load_checkpoint
from dllm_ls.diffusion_core.graphed import graphed, time_steps
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

# the prefill graphs, one per bucket, from an empty cache: buckets above 256 with masked SDPA over
# the buffer (the default) and with the Triton kernel (prefill_triton_max = 1024), side by side
start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
decs = {}
for limit in (256, 1024):
    d = graphed(Sampler(model, tok, cfg), cfg)
    d.prefill_triton_max = limit
    d._capture()
    decs[limit] = d
for T in dec.buckets:
    row = []
    for limit, d in decs.items():
        d.cache.reset()
        ids = torch.randint(10, 1000, (T,))
        d._run_prefill(ids, T)  # warm
        torch.cuda.synchronize()
        start.record()
        for _ in range(20):
            d._run_prefill(ids, T)
        end.record()
        end.synchronize()
        kind = ("triton" if T <= limit else "sdpa") + ("" if T in d.pf_graphs else ", eager")
        row.append(f"{start.elapsed_time(end) / 20 * 1000:8.1f} us ({kind})")
        d.cache.reset()
    print(f"prefill bucket {T:5d}: " + "   ".join(row))
