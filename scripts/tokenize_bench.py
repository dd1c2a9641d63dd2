"""A cold prompt window's tokens, three ways (medians of 200; the shipped tokenizer):

    whole   the tokenizers pipeline on the window (`encode`: session 17's cold path)
    batch   each line on its own in one `encode_batch_fast` call, on all cores (session 18's)
    lines   `encode_lines` with its memo emptied: pure-ASCII lines through `_encode_ascii_lines`

on windows of ~1,200 characters from six stdlib files.

    python scripts/tokenize_bench.py [CHECKPOINT_DIR]
"""
import argparse, ast, json, os, statistics, sys, time, typing

from dllm_ls.diffusion_core.checkpoint import resolve_checkpoint
from dllm_ls.diffusion_core.tokenizer import Tokenizer

tok = Tokenizer.from_file(os.path.join(resolve_checkpoint(sys.argv[1] if len(sys.argv) > 1 else None), "tokenizer.json"))
windows = []
for mod in (argparse, ast, json, os, statistics, typing):
    src = open(mod.__file__, encoding="utf-8").read()
    for frac in (0.3, 0.6):
        i = src.index("\n", int(len(src) * frac)) + 1
        windows.append(src[i:i + 1200])


def cold_lines(w):
    tok.forget_lines()
    return tok.encode_lines(w)


ways = {"whole": tok.encode,
        "batch": lambda w: [t for ids in tok.encode_batch(w.splitlines(keepends=True)) for t in ids],
        "lines": cold_lines}
for w in windows:
    assert all(f(w) == tok.encode(w) for f in ways.values())
times = {k: [] for k in ways}
for rep in range(200 // len(windows) + 1):
    for w in windows:
        for k, f in ways.items():
            t = time.perf_counter()
            f(w)
            times[k].append((time.perf_counter() - t) * 1e6)
n = statistics.mean(len(tok.encode(w)) for w in windows)
for k, v in times.items():
    print(f"{k}: median {statistics.median(v):.1f} us (n={len(v)}, ~{n:.0f} tokens a window)")
