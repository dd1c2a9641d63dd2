"""The KV cache of clean tokens is exact: cached logits equal a full recomputation."""

import pytest
import torch

from dllm_ls.diffusion_core.kv_cache import KVCache, common_prefix_len
from dllm_ls.diffusion_core.model import step_mask


def full_logits(model, clean, block):
    """Block logits recomputed from scratch: clean tokens causal, the block over everything."""
    idx = torch.cat([clean, block], dim=1)
    pos = torch.arange(idx.shape[1])[None]
    return model(idx, pos, mask=step_mask(0, clean.shape[1], block.shape[1]))[:, clean.shape[1]:]


@pytest.mark.parametrize("block_size", [1, 4, 16, 64])
def test_cached_block_logits_equal_full_recompute(tiny_model, block_size):
    g = torch.Generator().manual_seed(block_size)
    prompt = torch.randint(6, 500, (1, 37), generator=g)
    cache = KVCache.for_model(tiny_model)
    clean, done = prompt, prompt
    for _ in range(3):  # three blocks: each finished block enters the cache with the next step
        block = torch.randint(6, 500, (1, block_size), generator=g)
        block[0, ::2] = 1  # some masks
        cached = tiny_model.step(clean, block, cache)
        assert cache.length == done.shape[1]
        torch.testing.assert_close(cached, full_logits(tiny_model, done, block), atol=1e-5, rtol=0)
        finished = torch.randint(6, 500, (1, block_size), generator=g)
        clean, done = finished, torch.cat([done, finished], dim=1)


@pytest.mark.parametrize("block_size", [4, 16])
def test_truncate_to_common_prefix_then_extend_is_exact(tiny_model, block_size):
    g = torch.Generator().manual_seed(7)
    a = torch.randint(6, 500, (1, 60), generator=g)
    b = torch.cat([a[:, :41], torch.randint(6, 500, (1, 25), generator=g)], dim=1)  # edit at token 41
    cache = KVCache.for_model(tiny_model)
    block = torch.full((1, block_size), 1)
    tiny_model.step(a, block, cache)
    cache.append_tokens(a[0].tolist())
    keep = common_prefix_len(cache.tokens, b[0].tolist())
    assert keep == 41
    cache.truncate(keep)
    assert cache.length == 41 and cache.tokens == b[0, :41].tolist()
    cached = tiny_model.step(b[:, keep:], block, cache)
    torch.testing.assert_close(cached, full_logits(tiny_model, b, block), atol=1e-5, rtol=0)


def test_reset_and_bounds(tiny_model):
    cache = KVCache.for_model(tiny_model, capacity=16)
    tiny_model.step(torch.randint(6, 500, (1, 10)), torch.full((1, 4), 1), cache)
    assert cache.length == 10 and int(cache.pos) == 10
    cache.reset()
    assert cache.length == 0 and int(cache.pos) == 0
    with pytest.raises(ValueError):
        cache.truncate(3)  # past the length
    with pytest.raises(ValueError, match="overflow"):
        tiny_model.step(torch.randint(6, 500, (1, 14)), torch.full((1, 4), 1), cache)


def test_clean_tokens_do_not_see_the_block(tiny_model):
    """Changing the block must not change the clean KV written to the cache."""
    prompt = torch.randint(6, 500, (1, 20))
    c1, c2 = KVCache.for_model(tiny_model), KVCache.for_model(tiny_model)
    tiny_model.step(prompt, torch.full((1, 8), 1), c1)
    tiny_model.step(prompt, torch.randint(6, 500, (1, 8)), c2)
    torch.testing.assert_close(c1.k[:, :, :, :20], c2.k[:, :, :, :20], atol=0, rtol=0)
    torch.testing.assert_close(c1.v[:, :, :, :20], c2.v[:, :, :, :20], atol=0, rtol=0)
