"""The CUDA path of the model and sampler (run on the device machine; skipped without CUDA)."""

import pytest
import torch

from dllm_ls.diffusion_core.kv_cache import KVCache
from dllm_ls.diffusion_core.model import step_mask
from dllm_ls.diffusion_core.sampler import Sampler, SamplerConfig

pytestmark = pytest.mark.gpu


def test_cached_step_equals_full_recompute_on_cuda(tiny_model):
    m = tiny_model.to("cuda")
    prompt = torch.randint(6, 500, (1, 50), device="cuda")
    block = torch.full((1, 16), 1, device="cuda")
    cache = KVCache.for_model(m)
    m.step(prompt[:, :30], block, cache)
    cached = m.step(prompt[:, 30:], block, cache)
    idx = torch.cat([prompt, block], 1)
    full = m(idx, torch.arange(66, device="cuda")[None], mask=step_mask(0, 50, 16, device="cuda"))[:, 50:]
    torch.testing.assert_close(cached, full, atol=1e-4, rtol=1e-4)


def test_bf16_sampler_reuses_its_cache(tiny_model, tokenizer):
    m = tiny_model.to("cuda", torch.bfloat16)
    s = Sampler(m, tokenizer, SamplerConfig(block_size=8, max_tokens=16, threshold=0.5))
    cache = s.new_cache()
    a = s.complete("def f(x):\n    return ", "\n", cache=cache)
    b = s.complete("def f(x):\n    return ", "\n", cache=cache)
    # bf16 sums in another order with and without the cache, so only the reuse itself is exact
    assert b.trace.reused_tokens == b.trace.prompt_tokens and a.trace.reused_tokens == 0
    assert 1 <= b.trace.steps <= b.trace.tokens
