"""Where a training step's time goes, diffusion against its AR twin (issue 8, session 23).

The `base` pair trained at 471k tokens/s (diffusion, MFU 18%) against 1,459k (AR, 30%) on one H100:
the diffusion step has ~1.85x the AR step's FLOPs (the clean copy [x_t ; x_0]) but took 3.1x its
time. This times the step the trainer runs (`TrainModule` compiled, FlexAttention's block mask,
bf16 autocast, fused AdamW) on random tokens, split into its parts (the block mask, forward,
backward, optimizer), then lists the CUDA kernels of a few steps by time (torch.profiler).

    python scripts/train_step_profile.py                       # GPU: base preset, batch 64 x 1024
    python scripts/train_step_profile.py --preset test --batch 2 --seq 64 --steps 2   # a CPU smoke run

On a CPU it runs eager with SDPA's bool mask (the trainer's CPU path), for checking the script only.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from dllm_ls.diffusion_core.model import ModelConfig, Transformer
from dllm_ls.trainer.objectives import (ObjectiveConfig, SpecialIds, TrainModule, ar_batch, batch_mask,
                                        batch_positions, diffusion_batch, loss_terms, step_flops)

IDS = SpecialIds(pad=0, mask=1, eos=2)


def batches(kind: str, B: int, L: int, V: int, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        x0 = rng.integers(3, V, size=(B, L))
        if kind == "ar":
            yield ar_batch(x0, IDS)
        else:
            bs = (4, 8, 16, 32)[i % 4]
            yield diffusion_batch(x0, rng.integers(0, L, B), bs, edit=False, ids=IDS, cfg=ObjectiveConfig(), rng=rng)


def run(kind: str, args, device: torch.device) -> dict:
    cuda = device.type == "cuda"
    cfg = ModelConfig.from_name(args.preset, vocab_size=args.vocab, max_seq_len=args.seq, causal=kind == "ar")
    torch.manual_seed(0)
    net = Transformer(cfg).to(device)
    module = TrainModule(net)
    if cuda and not args.eager:
        module = torch.compile(module)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=cuda)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
    B, L = args.batch, args.seq
    flex = cuda and not args.eager
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    parts = {"mask": [], "forward": [], "backward": [], "optimizer": [], "step": []}
    flops = []

    def step(b, timed: bool):
        t = [time.perf_counter()]
        b = {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in b.items()}
        mask = batch_mask(b, L, kind == "ar", device, flex)
        for name in ("mask", "forward", "backward", "optimizer"):
            if name == "forward":
                with autocast:
                    ce = module(b["idx"], batch_positions(B, L, kind == "ar", device), mask, b["targets"], b.get("src"))
                loss = loss_terms(ce, b)["loss"]
            elif name == "backward":
                loss.backward()
            elif name == "optimizer":
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
            if timed and args.split:
                sync()
            t.append(time.perf_counter())
        if timed:
            sync()
            t[-1] = time.perf_counter()
            if args.split:
                for name, a, z in zip(("mask", "forward", "backward", "optimizer"), t, t[1:]):
                    parts[name].append(z - a)
            parts["step"].append(t[-1] - t[0])
            flops.append(step_flops(cfg, B, L, b["bs"], kind == "ar"))

    for b in batches(kind, B, L, cfg.vocab_size, args.warmup):  # compiles (each block size once)
        step(b, timed=False)
    sync()
    for b in batches(kind, B, L, cfg.vocab_size, args.steps, seed=1):
        step(b, timed=True)
    med = {k: statistics.median(v) * 1e3 for k, v in parts.items() if v}
    out = {"kind": kind, "params_M": round(cfg.n_params() / 1e6, 2), "tokens_per_s": round(B * L / med["step"] * 1e3),
           "tflops": round(statistics.median(flops) / med["step"] * 1e3 / 1e12, 1), **{f"{k}_ms": round(v, 2) for k, v in med.items()}}
    print(out, flush=True)
    if args.profile and cuda:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for b in batches(kind, B, L, cfg.vocab_size, args.profile, seed=2):
                step(b, timed=False)
            sync()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=args.rows, max_name_column_width=90), flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kinds", nargs="+", default=["diffusion", "ar"], choices=["diffusion", "ar"])
    p.add_argument("--preset", default="base")
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--warmup", type=int, default=8, help="untimed steps first (compilation: each block size)")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--split", action="store_true", help="also time the parts (a sync after each: slower steps)")
    p.add_argument("--profile", type=int, default=4, help="steps under torch.profiler (GPU); 0: none")
    p.add_argument("--rows", type=int, default=30)
    p.add_argument("--eager", action="store_true", help="no torch.compile / FlexAttention")
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        print(torch.cuda.get_device_name(), "torch", torch.__version__, flush=True)
    res = [run(k, args, device) for k in args.kinds]
    if len(res) == 2:
        d, a = res
        print(f"diffusion / AR: step time {d['step_ms'] / a['step_ms']:.2f}x, tokens/s {a['tokens_per_s'] / d['tokens_per_s']:.2f}x "
              f"slower, achieved TFLOP/s {d['tflops']} vs {a['tflops']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
