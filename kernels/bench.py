"""Benchmark every kernel: Triton vs torch eager vs torch.compile (ms per call, median).

    python -m dllm_ls.kernels.bench [--out kernels.json] [--md kernels.md] [--quick] [--no-compile]

On a GPU the three providers; on a CPU only the torch ones (Triton needs CUDA). `--quick` runs
fewer shapes (the device run's budget), `--budget-s` skips the kernels not started in time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

SHAPES = {  # kernel -> (full, quick) keyword arguments of its bench()
    "block_attention": (dict(blocks=(1, 4, 16, 32, 64, 128), cache_lens=(256, 1024, 4096, 8192)),
                        dict(blocks=(1, 16, 64, 128), cache_lens=(512, 2048, 8192))),
    "commit": (dict(blocks=(1, 4, 16, 32, 64, 128)), dict(blocks=(1, 16, 64, 128))),
    "fused_ce": (dict(rows=(4096, 16384, 32768)), dict(rows=(8192, 32768))),
    "rope_kv": (dict(blocks=(1, 16, 64, 256, 1024)), dict(blocks=(1, 64, 1024))),
    "block_update": (dict(blocks=(4, 8, 32, 64, 128)), dict(blocks=(4, 32, 128))),
    "swiglu": (dict(blocks=(1, 16, 64, 256, 1024)), dict(blocks=(1, 64, 1024))),
    "copy_prior": (dict(sizes=((256, 32), (1024, 32), (4096, 64), (8000, 128))), dict(sizes=((1024, 32), (4096, 64)))),
}
TINY = {"block_attention": dict(blocks=(1, 16), cache_lens=(64,), H=2, D=16),
        "commit": dict(blocks=(1, 8), V=256), "fused_ce": dict(rows=(64,), C=32, V=256),
        "rope_kv": dict(blocks=(1, 8), H=2, D=16, S=32), "block_update": dict(blocks=(4,), V=64),
        "swiglu": dict(blocks=(1, 8), hidden=24), "copy_prior": dict(sizes=((64, 8),))}


def run(device: str, quick: bool, compile_: bool, budget_s: float = 0, tiny: bool = False) -> list[dict]:
    import importlib

    t0 = time.perf_counter()
    rows = []
    for name, (full, small) in SHAPES.items():
        if budget_s and time.perf_counter() - t0 > budget_s:
            rows.append({"kernel": name, "skipped": f"--budget-s {budget_s:g} reached"})
            continue
        mod = importlib.import_module(f"dllm_ls.kernels.{name}")
        kw = TINY[name] if tiny else (small if quick else full)
        rows += mod.bench(device=device, compile=compile_, **kw)
    return rows


def markdown(rows: list[dict], machine: str) -> str:
    """One table per kernel: a row per shape, a column per provider (ms), and triton's speedup."""
    out = [f"Kernel benchmarks on {machine} (`python -m dllm_ls.kernels.bench`), median ms per call "
           "(the decoding kernels replayed from a CUDA graph where they capture, as the decoders run them: "
           "device time; "
           "fused_ce called eagerly).", ""]
    kernels = []
    for r in rows:
        if r["kernel"] not in kernels:
            kernels.append(r["kernel"])
    for k in kernels:
        kr = [r for r in rows if r["kernel"] == k and "ms" in r]
        if not kr:
            continue
        shape_keys = [x for x in kr[0] if x not in ("kernel", "provider", "ms", "GB/s", "peak_MiB", "error")]
        providers = [p for p in ("triton", "torch", "torch.compile") if any(r["provider"] == p for r in kr)]
        speedup_col = " | torch / triton |" if "triton" in providers else " |"
        out += [f"**{k}**", "", "| " + " | ".join(shape_keys + providers) + speedup_col,
                "|" + "---|" * (len(shape_keys) + len(providers) + ("triton" in providers))]
        shapes = []
        for r in kr:
            s = tuple(r[x] for x in shape_keys)
            if s not in shapes:
                shapes.append(s)
        for s in shapes:
            cell = {r["provider"]: r for r in kr if tuple(r[x] for x in shape_keys) == s}
            vals = [f"{cell[p]['ms']:.4f}" + (f" ({cell[p]['peak_MiB']:.0f} MiB)" if cell[p].get("peak_MiB") else "")
                    if p in cell else "-" for p in providers]
            line = "| " + " | ".join([str(x) for x in s] + vals)
            if "triton" in providers:
                ratio = cell["torch"]["ms"] / cell["triton"]["ms"] if "torch" in cell and "triton" in cell else None
                line += f" | {ratio:.2f}x" if ratio else " | -"
            out.append(line + " |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dllm_ls.kernels.bench", description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="fewer shapes")
    p.add_argument("--tiny", action="store_true", help="toy shapes (a smoke test on a CPU)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile provider")
    p.add_argument("--budget-s", type=float, default=0)
    p.add_argument("--out", metavar="JSON")
    p.add_argument("--md", metavar="MD", help="the tables as markdown (for docs/)")
    a = p.parse_args(argv)
    machine = torch.cuda.get_device_name(0) if a.device.startswith("cuda") else "CPU"
    rows = run(a.device, a.quick, not a.no_compile, a.budget_s, a.tiny)
    text = markdown(rows, machine)
    print(text)
    errors = [r for r in rows if "error" in r]
    for r in errors:
        print(f"error: {r}", file=sys.stderr)
    if a.out:
        Path(a.out).write_text(json.dumps({"machine": machine, "rows": rows}, indent=1) + "\n")
    if a.md:
        Path(a.md).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
