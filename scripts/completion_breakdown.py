"""Where a cold S1 completion's time goes besides its steps: the host's prompt (`_prepare`:
tokenizing and windowing), the host's launches before the steps, the pipelined steps, the end
(`_finish`), and the device time of `_start` (the prompt's prefill with the first step, or the
AR baseline's first token), per completion, medians over Q2 (or Q1) tasks.

    python3 scripts/completion_breakdown.py [--ar AR_CHECKPOINT] [--bench q2] [--limit 100]
        [--block 32] [--threshold 0.3]

Prints one line per decoder (diffusion, and AR with --ar): the medians in ms, and the end-to-end
time less the steps' replay time (the fixed cost per completion that the S1 ratio pays).
"""

import argparse
import statistics
import time

import torch

from dllm_ls.diffusion_core.checkpoint import default_checkpoint, load_checkpoint
from dllm_ls.diffusion_core.graphed import graphed
from dllm_ls.trainer.step_floor import time_steps
from dllm_ls.diffusion_core.sampler import Sampler, SamplerConfig
from dllm_ls.trainer.humaneval import q1_tasks, q2_tasks, subsample


def timed(obj, name, spent, key, events=None):
    fn = getattr(obj, name)

    def wrapper(*a, **k):
        if events is not None:
            events[0].record()
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            spent[key] += time.perf_counter() - t
            if events is not None:
                events[1].record()
    setattr(obj, name, wrapper)


def breakdown(dec, tasks, mode: str, cuda: bool, spent: dict, ev, cold_tokenizer: bool) -> list[dict]:
    rows = []
    for t in tasks:
        if cold_tokenizer:
            dec.tok.forget_lines()
        for k in spent:
            spent[k] = 0.0
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        c = dec.complete(t.prefix, t.suffix, mode, cold=True)
        total = time.perf_counter() - t0  # until the text is returned (as bench speed times it)
        if cuda:
            torch.cuda.synchronize()
        row = {k: v * 1000 for k, v in spent.items()}
        row.update(total=total * 1000, synced=(time.perf_counter() - t0) * 1000, steps=c.trace.steps,
                   prompt=c.trace.prompt_tokens,
                   first_dev=ev[0].elapsed_time(ev[1]) if cuda else row["first_host"])
        row["before_steps"] = row["total"] - row["prepare"] - row["pipeline"] - row["finish"]
        rows.append(row)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ar")
    ap.add_argument("--bench", default="q2")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--threshold", type=float, default=0.3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    cuda = a.device == "cuda"
    tasks = subsample(q2_tasks() if a.bench == "q2" else q1_tasks(), a.limit, seed=0)
    mode = "block" if a.bench == "q2" else "line"
    max_tokens = 192 if a.bench == "q2" else 64  # bench speed's defaults
    decs = {}
    model, tok = load_checkpoint(default_checkpoint(), a.device)
    cfg = SamplerConfig(block_size=a.block, threshold=a.threshold, max_tokens=max_tokens)
    decs[f"diffusion b{a.block} t{a.threshold}"] = graphed(Sampler(model, tok, cfg), cfg)
    if a.ar:
        ar, ar_tok = load_checkpoint(a.ar, a.device)
        cfg_ar = SamplerConfig(max_tokens=max_tokens)
        decs["AR"] = graphed(Sampler(ar, ar_tok, cfg_ar), cfg_ar)
    med = statistics.median
    for name, dec in decs.items():
        spent = dict.fromkeys(("prepare", "pipeline", "finish", "first_host"), 0.0)
        ev = [torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)] if cuda else None
        timed(dec.sampler, "_prepare", spent, "prepare")
        timed(dec, "_pipeline", spent, "pipeline")
        timed(dec.sampler, "_finish", spent, "finish")
        timed(dec, "_start", spent, "first_host", ev)
        dec.complete(tasks[0].prefix, tasks[0].suffix, mode, cold=True)  # warm-up: capture
        step_ms = None
        for cold_tok in (False, True):
            rows = breakdown(dec, tasks, mode, cuda, spent, ev, cold_tok)
            step_ms = step_ms or time_steps(dec, context=int(med(r["prompt"] for r in rows)), n=100)
            fixed = [r["total"] - r["steps"] * step_ms for r in rows]
            print(f"{name}: {len(rows)} {a.bench} tasks, step replay {step_ms * 1000:.1f} us, tokenizer memo "
                  f"{'emptied before each task' if cold_tok else 'kept'}; medians in ms:")
            print("  " + "  ".join(f"{k} {med(r[k] for r in rows):.3f}" for k in
                                   ("total", "synced", "prepare", "before_steps", "pipeline", "finish",
                                    "first_host", "first_dev", "steps", "prompt")))
            print(f"  fixed = total - steps x replay: median {med(fixed):.3f} mean {statistics.mean(fixed):.3f}; "
                  f"sum of totals {sum(r['total'] for r in rows):.1f}")


if __name__ == "__main__":
    main()
