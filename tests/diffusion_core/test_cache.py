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


@pytest.mark.parametrize("n_clean", [0, 3, 21])
def test_step_rows_are_the_same_numbers(one_thread, n_clean):
    """`step(rows=)` (the sampler's commit candidates: last layer and head over those rows only)
    gives bitwise the logits of a full step at those rows, for every row count (1-3 rows are
    padded to 4; issue 5's "same outputs"), on a model of the shipped one's widths."""
    from dllm_ls.diffusion_core.model import ModelConfig, Transformer

    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=8192, n_layer=2, n_head=6, dim=384, max_seq_len=1024)).eval()
    # bitwise only where this CPU's matmul rounds a row alike whatever the row count (AMD EPYC's
    # does; an Intel Xeon's MKL/oneDNN kernels change with it by ~1 ulp): elsewhere 1e-5 and argmax
    a, w = torch.randn(32, 384), torch.randn(8192, 384)
    exact = torch.equal(torch.nn.functional.linear(a[:4], w), torch.nn.functional.linear(a, w)[:4])
    g = torch.Generator().manual_seed(n_clean)
    cache = KVCache.for_model(model)
    model.step(torch.randint(6, 8000, (1, 300), generator=g), torch.zeros(1, 0, dtype=torch.long), cache)
    clean = torch.randint(6, 8000, (1, n_clean), generator=g)
    for b in (32, 5, 2):
        block = torch.randint(6, 8000, (1, b), generator=g)
        block[0, ::3] = 1
        full = model.step(clean, block, cache)[0]
        cache.truncate(300)
        for rows in ([0], [1, 2], [0, 3, 4], [4, 1, 2, 3][1:], list(range(b)), list(range(1, b, 2)), list(range(0, b, 3))):
            rows = torch.tensor(sorted({r for r in rows if r < b}), dtype=torch.long)
            if len(rows) == 0:
                continue
            got = model.step(clean, block, cache, rows=rows)[0]
            assert cache.length == 300 + n_clean
            cache.truncate(300)
            if exact:
                assert torch.equal(got, full[rows]), (b, rows.tolist())
            else:
                torch.testing.assert_close(got, full[rows], rtol=1e-5, atol=1e-5, msg=str((b, rows.tolist())))
                assert torch.equal(got.argmax(-1), full[rows].argmax(-1)), (b, rows.tolist())
    # step_batch takes them too (its packed matmuls round differently: 1e-5, as for all batching)
    other = KVCache.for_model(model)
    block = torch.randint(6, 8000, (1, 16), generator=g)
    want = model.step(clean, block, cache)[0]
    cache.truncate(300)
    rows = torch.tensor([2, 7, 11])
    out = model.step_batch([(clean, block, cache), (clean, block, other)], rows=[rows, None])
    torch.testing.assert_close(out[0][0], want[rows], atol=1e-5, rtol=0)
    assert out[1].shape == (1, 16, 8192)
