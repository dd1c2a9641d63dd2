"""CPU step time by model size: the shipped model's shape (15.5M parameters) against the `base`
preset (29.9M), random weights, one block of 32 over a 700-token cache, 1 and 2 threads.

    python scripts/size_step_bench.py          (the package installed)
"""
import statistics
import time

import torch

from dllm_ls.diffusion_core.kv_cache import KVCache
from dllm_ls.diffusion_core.model import ModelConfig, Transformer

SHAPES = {"shipped shape": ModelConfig.from_name("small", vocab_size=8192, n_layer=7, ffn_hidden=1024),
          "base": ModelConfig.from_name("base", vocab_size=8192)}

torch.manual_seed(0)
for threads in (1, 2):
    torch.set_num_threads(threads)
    for name, cfg in SHAPES.items():
        m = Transformer(cfg).eval()
        ms = []
        with torch.no_grad():
            for _ in range(12):
                cache = KVCache.for_model(m)
                m.step(torch.randint(10, 8000, (1, 700)), torch.randint(10, 8000, (1, 32)), cache)
                block = torch.randint(10, 8000, (1, 32))
                t = time.perf_counter()
                for _ in range(5):
                    m.step(torch.zeros(1, 0, dtype=torch.long), block, cache)
                ms.append((time.perf_counter() - t) / 5 * 1e3)
        print(f"{threads} thread(s), {name}: {cfg.n_params() / 1e6:.1f}M parameters, "
              f"median {statistics.median(ms[2:]):.1f} ms a step")
