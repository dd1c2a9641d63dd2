"""Where a warm server completion's time goes: the core's path (`Sampler.begin` + `DecodeState` +
`Sampler.step`, as `CoreService` runs one request), with the server's settings (token healing, the
syntax guard), on S2's file documents in line mode.

    python scripts/server_step_profile.py [--limit 30] [--device cuda] [--mode line] [--checkpoint DIR]

For each document: a cold completion, then the same completion warm (the prompt's KV cached), the
second one timed per phase (next_inputs, the step's host time, advance and inside it the syntax
guard, the text decoding and the stops) and under cProfile. Prints medians per completion and
per step, and the top functions by own time. On CUDA the step is asynchronous: the GPU's time
shows up where `advance` reads its result."""
import argparse
import cProfile
import io
import pstats
import statistics
import time

import torch

from dllm_ls.diffusion_core import sampler as sampler_mod
from dllm_ls.diffusion_core import syntax_guard as guard_mod
from dllm_ls.diffusion_core.checkpoint import load_checkpoint, resolve_checkpoint
from dllm_ls.diffusion_core.sampler import Sampler, SamplerConfig
from dllm_ls.lsp_server.bench import file_tasks

from _timing import time_into  # scripts/_timing.py

PHASES = ("next_inputs", "step", "advance", "guard", "text", "stops", "begin", "result")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=30)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--mode", default="line")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--checkpoint", help="model directory; default: the shipped model")
    args = ap.parse_args()
    torch.set_num_threads(1 if args.device == "cpu" else torch.get_num_threads())
    model, tok = load_checkpoint(resolve_checkpoint(args.checkpoint), device=args.device)
    s = Sampler(model, tok, SamplerConfig.for_server())
    graphed = s.use_cuda_graph() if args.device == "cuda" else False
    spent = dict.fromkeys(PHASES, 0.0)
    time_into(spent, "next_inputs", sampler_mod.DecodeState, "next_inputs")
    time_into(spent, "step", Sampler, "step")
    time_into(spent, "advance", sampler_mod.DecodeState, "advance")
    time_into(spent, "guard", guard_mod.SyntaxGuard, "check")
    time_into(spent, "text", Sampler, "_text")
    time_into(spent, "stops", sampler_mod, "find_stop")
    time_into(spent, "begin", Sampler, "begin")
    time_into(spent, "result", sampler_mod.DecodeState, "result")
    rows, prof = [], cProfile.Profile()
    for t in file_tasks(args.limit, seed=0):
        cache = s.new_cache()
        s.complete(t["prefix"], t["suffix"], mode=args.mode, cache=cache)  # cold: the prompt's KV
        for k in spent:
            spent[k] = 0.0
        if args.device == "cuda":
            torch.cuda.synchronize()
        prof.enable()
        t0 = time.perf_counter()
        c = s.complete(t["prefix"], t["suffix"], mode=args.mode, cache=cache)
        total = time.perf_counter() - t0
        prof.disable()
        rows.append(dict(total=total * 1000, steps=c.trace.steps, tokens=c.trace.tokens,
                         **{k: v * 1000 for k, v in spent.items()}))
    med = lambda key: statistics.median(r[key] for r in rows)  # noqa: E731
    per_step = lambda key: statistics.median(r[key] / max(1, r["steps"]) for r in rows)  # noqa: E731
    print(f"{len(rows)} warm {args.mode} completions on {args.device} (graphed step: {graphed}), medians:")
    print(f"  total {med('total'):.3f} ms, steps {med('steps')}, tokens {med('tokens')}")
    print("  per completion (ms): " + "  ".join(f"{k} {med(k):.3f}" for k in PHASES))
    print("  per step (ms):       " + "  ".join(f"{k} {per_step(k):.3f}" for k in PHASES + ("total",)))
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(args.top)
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:6000])


if __name__ == "__main__":
    main()
