"""The server's prompt preparation (`Sampler._prepare` with its windows and token healing) on three
stdlib files at 30/50/70%, one keystroke after a request, with the tokenizer's line memo emptied
before the keystroke (cold) and kept (memo), alternating; CPU, one thread.

    python scripts/prompt_bench.py [CHECKPOINT_DIR]     (default: the shipped model)
"""
import argparse as ap_mod, ast, json, statistics, sys, time
import torch
from dllm_ls.diffusion_core.checkpoint import load_checkpoint, resolve_checkpoint
from dllm_ls.diffusion_core.sampler import Sampler, SamplerConfig
torch.set_num_threads(1)
model, tok = load_checkpoint(resolve_checkpoint(sys.argv[1] if len(sys.argv) > 1 else None), device="cpu")
cfg = SamplerConfig.for_server()
s = Sampler(model, tok, cfg)
res = {"cold": [], "memo": []}
for mod in (ap_mod, json, ast):
    src = open(mod.__file__, encoding="utf-8").read()
    for frac in (0.3, 0.5, 0.7):
        i = src.index("\n", int(len(src) * frac)) + 1
        for rep in range(20):
            for kind in ("cold", "memo"):
                tok.forget_lines()
                s._prepare(src[:i], src[i:], "line", s.new_cache(), cfg)  # the request before the keystroke
                if kind == "cold":
                    tok.forget_lines()
                pre = src[:i] + "x" * (rep % 5 + 1)
                t = time.perf_counter()
                ctx, crlf, clean, mt, cache, trace = s._prepare(pre, src[i:], "line", s.new_cache(), cfg)
                res[kind].append((time.perf_counter() - t) * 1000)
for k, v in res.items():
    print(f"{k}: _prepare median {statistics.median(v):.3f} ms mean {statistics.mean(v):.3f} ms (n={len(v)}), prompt ~{trace.prompt_tokens} tokens")
