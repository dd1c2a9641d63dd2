"""The host side of a decoding step: the time `Sampler.complete` spends outside the model's
forwards, per step, and inside `DecodeState.advance` (the commit, the syntax guard, the stops).

    python scripts/host_step_bench.py          (the package installed; the shipped model, CPU, 1 thread)

18 warm completions (the prompt's KV cached) at 30/50/70% of argparse.py, json/__init__.py and
ast.py, cursor at a line end, in line and block mode, with the server's sampler settings. Prints
medians and means per step and an md5 of the completions (equal before and after a change that
must not change answers)."""
import argparse
import ast
import hashlib
import json
import statistics
import time

import torch

from dllm_ls.diffusion_core import sampler as sampler_mod
from dllm_ls.diffusion_core.checkpoint import load_checkpoint, resolve_checkpoint
from dllm_ls.diffusion_core.sampler import Sampler, SamplerConfig

from _timing import time_into  # scripts/_timing.py


def main() -> None:
    torch.set_num_threads(1)
    model, tok = load_checkpoint(resolve_checkpoint(None), device="cpu")
    s = Sampler(model, tok, SamplerConfig.for_server())
    spent = {"forward": 0.0, "advance": 0.0}
    time_into(spent, "forward", model, "step")
    time_into(spent, "advance", sampler_mod.DecodeState, "advance")
    host, adv, outs = [], [], []
    for mod in (argparse, json, ast):
        src = open(mod.__file__, encoding="utf-8").read()
        for frac in (0.3, 0.5, 0.7):
            i = src.index("\n", src.index("\n", int(len(src) * frac)) + 1)
            for mode in ("line", "block"):
                cache = s.new_cache()
                s.complete(src[:i], src[i:], mode=mode, cache=cache)
                spent.update(forward=0.0, advance=0.0)
                t = time.perf_counter()
                c = s.complete(src[:i], src[i:], mode=mode, cache=cache)
                total = time.perf_counter() - t
                host.append((total - spent["forward"]) * 1000 / c.trace.steps)
                adv.append(spent["advance"] * 1000 / c.trace.steps)
                outs.append((c.text, c.stop, c.trace.steps))
    print(f"advance ms/step: median {statistics.median(adv):.3f} mean {statistics.mean(adv):.3f}")
    print(f"host ms/step: median {statistics.median(host):.3f} mean {statistics.mean(host):.3f} (n={len(host)})")
    print("completions md5", hashlib.md5(str(outs).encode()).hexdigest())


if __name__ == "__main__":
    main()
