"""The syntax guard's set-up per request (`SyntaxGuard(prefix, suffix)`: tree-sitter's parse of the
window) on S2's 50 file documents, three times each: fresh (no earlier window), one keystroke after
a request on the same document (`parse_window` reuses its tree), and the same request again. CPU.

    python scripts/guard_bench.py
"""
import statistics
import time

from dllm_ls.diffusion_core import syntax_guard as sg
from dllm_ls.lsp_server.bench import file_tasks

res = {"fresh": [], "keystroke": [], "same": []}


def timed(kind, prefix, suffix):
    t0 = time.perf_counter()
    sg.SyntaxGuard(prefix, suffix)
    res[kind].append((time.perf_counter() - t0) * 1000)


for _ in range(3):
    for t in file_tasks(50, seed=0):
        p, s = t["prefix"], t["suffix"]
        sg._last_parse = None
        timed("fresh", p + "x", s)
        sg._last_parse = None
        sg.SyntaxGuard(p, s)  # the request before the keystroke
        timed("keystroke", p + "x", s)
        timed("same", p + "x", s)
for k, v in res.items():
    print(f"{k}: median {statistics.median(v):.3f} ms, mean {statistics.mean(v):.3f} ms (n={len(v)})")
