"""S3 building block: throughput of the core's batched scheduler vs one request at a time.

    python -m dllm_ls.diffusion_core.bench_batch [--model small] [--threads 2] [--concurrency 1 4 8]

Random weights (no trained model needed): the figures measure the machinery, not quality. Every
request has its own document (different prompt lengths) and decodes `max_tokens` tokens with
threshold 1.0, i.e. one token per step, so every configuration does the same work. "sequential"
runs the requests one after another with `Sampler.complete`; "batched" interleaves their
`DecodeState`s with one `Transformer.step_batch` per step, as the core's scheduler does.
"""

from __future__ import annotations

import argparse
import sysconfig
import time
from pathlib import Path

import torch

from .model import ModelConfig, Transformer
from .sampler import Sampler, SamplerConfig
from .tokenizer import train_tokenizer

FILES = ["textwrap.py", "string.py", "bisect.py", "heapq.py", "keyword.py", "colorsys.py"]


def documents(n: int) -> list[tuple[str, str]]:
    """n (prefix, suffix) pairs cut from stdlib files at different places and lengths."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    text = "".join((stdlib / f).read_text(encoding="utf-8") for f in FILES)
    out = []
    for i in range(n):
        start = 997 * i
        cut = start + 600 + 150 * i
        out.append((text[start:cut], text[cut:cut + 200]))
    return out


def run_batched(sampler: Sampler, docs, cfg: SamplerConfig) -> list:
    states = [sampler.begin(p, s, "block", None, cfg) for p, s in docs]
    active = list(states)
    while active:
        logits = sampler.model.step_batch([(*st.next_inputs(), st.cache) for st in active])
        for st, lg in zip(active, logits):
            st.advance(lg[0])
        active = [st for st in active if not st.done]
    return [st.result() for st in states]


def bench(model: str = "small", threads: int = 2, concurrency=(1, 4, 8), max_tokens: int = 32,
          block_size: int = 32, repeats: int = 2) -> list[dict]:
    """Tokens/s of `n` concurrent requests, sequential vs batched; best of `repeats` (after a warm-up)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg_m = ModelConfig.from_name(model)
    texts = [(Path(sysconfig.get_paths()["stdlib"]) / f).read_text(encoding="utf-8") for f in FILES]
    tok = train_tokenizer(texts, vocab_size=cfg_m.vocab_size)
    net = Transformer(cfg_m).eval()
    sampler = Sampler(net, tok)
    cfg = SamplerConfig(block_size=block_size, max_tokens=max_tokens, threshold=1.0)
    rows = []
    run_batched(sampler, documents(2), cfg)  # warm-up
    for n in concurrency:
        docs = documents(n)
        best = {}
        for name, fn in (("sequential", lambda: [sampler.complete(p, s, "block", cfg=cfg) for p, s in docs]),
                         ("batched", lambda: run_batched(sampler, docs, cfg))):
            for _ in range(repeats):
                t0 = time.perf_counter()
                outs = fn()
                dt = time.perf_counter() - t0
                best[name] = min(best.get(name, dt), dt)
            best[name + "_tokens"] = sum(o.trace.tokens for o in outs)
            best[name + "_texts"] = [o.text for o in outs]
        assert best["batched_texts"] == best["sequential_texts"], "batched results differ from single ones"
        rows.append(dict(concurrency=n, tokens=best["batched_tokens"],
                         prompt_tokens=[len(tok.encode(p + s)) for p, s in docs],
                         sequential_tok_s=best["sequential_tokens"] / best["sequential"],
                         batched_tok_s=best["batched_tokens"] / best["batched"],
                         speedup=best["sequential"] / best["batched"]))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="small")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--max-tokens", type=int, default=32)
    a = ap.parse_args(argv)
    print("| concurrent requests | tokens | sequential tok/s | batched tok/s | speedup |")
    print("|---|---|---|---|---|")
    for r in bench(a.model, a.threads, a.concurrency, a.max_tokens):
        print(f"| {r['concurrency']} | {r['tokens']} | {r['sequential_tok_s']:.1f} | {r['batched_tok_s']:.1f} "
              f"| {r['speedup']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
