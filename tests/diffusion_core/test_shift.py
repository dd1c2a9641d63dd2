"""Shift models (ModelConfig.shift): a block's token j is predicted at position j-1, the first one
at the last clean token, whose final hidden state the KV cache keeps between steps."""

import numpy as np
import pytest
import torch

from dllm_ls.diffusion_core.graphed import GraphedDecoder
from dllm_ls.diffusion_core.kv_cache import KVCache
from dllm_ls.diffusion_core.model import ModelConfig, Transformer, step_mask
from dllm_ls.diffusion_core.sampler import Sampler, SamplerConfig
from dllm_ls.trainer.objectives import (ObjectiveConfig, SpecialIds, TrainModule, batch_positions,
                                        diffusion_batch, shift_sources, training_mask)

pytestmark = pytest.mark.usefixtures("one_thread")


def shift_model(seed: int = 0, **kw) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(ModelConfig.from_name("test", shift=True, **kw)).eval()


def reference(model, done, block):
    """Block logits recomputed from scratch: row j is the output at position len(done) + j - 1."""
    idx = torch.cat([done, block], dim=1)
    n = done.shape[1]
    out = model(idx, torch.arange(idx.shape[1])[None], mask=step_mask(0, n, block.shape[1]))
    return out[:, n - 1: n - 1 + block.shape[1]]


def test_config_refuses_a_causal_shift_model():
    with pytest.raises(ValueError, match="shift"):
        ModelConfig.from_name("test", shift=True, causal=True)


@pytest.mark.parametrize("block_size", [1, 4, 16])
def test_steps_equal_a_full_recompute_across_blocks_and_steps(block_size):
    """Three blocks of three steps each: the first step appends the clean tokens (the prompt or
    the finished block), the later ones append nothing and take row 0 from the cache's bound."""
    model = shift_model()
    g = torch.Generator().manual_seed(block_size)
    done = torch.randint(6, 500, (1, 37), generator=g)
    clean = done
    cache = KVCache.for_model(model)
    for _ in range(3):
        for step in range(3):
            block = torch.randint(6, 500, (1, block_size), generator=g)
            block[0, step::2] = 1
            got = model.step(clean if step == 0 else clean[:, :0], block, cache)
            assert cache.length == done.shape[1]
            torch.testing.assert_close(got, reference(model, done, block), atol=1e-5, rtol=0)
        clean = torch.randint(6, 500, (1, block_size), generator=g)
        done = torch.cat([done, clean], dim=1)


def test_a_step_without_clean_tokens_needs_the_bound():
    model = shift_model()
    cache = KVCache.for_model(model)
    model.step(torch.randint(6, 500, (1, 10)), torch.full((1, 4), 1), cache)
    cache.truncate(5)  # the last token's hidden state is gone with it
    with pytest.raises(ValueError, match="last hidden state"):
        model.step(torch.zeros(1, 0, dtype=torch.long), torch.full((1, 4), 1), cache)
    model.step(torch.randint(6, 500, (1, 1)), torch.full((1, 4), 1), cache)  # re-fed: fine again
    model.step(torch.zeros(1, 0, dtype=torch.long), torch.full((1, 4), 1), cache)


@pytest.mark.parametrize("n_clean", [0, 1, 9])
def test_rows_give_the_rows_of_a_full_step(n_clean):
    model = shift_model(1)
    g = torch.Generator().manual_seed(n_clean)
    cache = KVCache.for_model(model)
    model.step(torch.randint(6, 500, (1, 30), generator=g), torch.zeros(1, 0, dtype=torch.long), cache)
    clean = torch.randint(6, 500, (1, n_clean), generator=g)
    block = torch.randint(6, 500, (1, 11), generator=g)
    block[0, ::3] = 1
    bound = cache.bound.clone()
    full = model.step(clean, block, cache)[0]
    for rows in ([0], [1, 2], [0, 5, 10], [3], list(range(11))):
        cache.truncate(30)
        cache.bound = bound.clone()
        got = model.step(clean, block, cache, rows=torch.tensor(rows))[0]
        torch.testing.assert_close(got, full[rows], atol=1e-5, rtol=0)
    assert cache.length == 30 + n_clean


def test_step_batch_equals_step():
    model = shift_model(2)
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(6, 500, (1, n), generator=g) for n in (12, 20, 7)]
    solo = [KVCache.for_model(model) for _ in prompts]
    packed = [KVCache.for_model(model) for _ in prompts]
    blocks = [torch.full((1, b), 1) for b in (4, 8, 2)]
    for step in range(3):  # step 0 appends the prompts, later steps append nothing
        items = [(p if step == 0 else p[:, :0], b, c) for p, b, c in zip(prompts, blocks, packed)]
        rows = [None, torch.tensor([1, 5]), torch.tensor([0])]
        got = model.step_batch(items, rows)
        for (clean, block, _), c, r, out in zip(items, solo, rows, got):
            want = model.step(clean, block, c, rows=r)
            torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)
        for b in blocks:
            b[0, step % b.shape[1]] = 100 + step


@pytest.mark.parametrize("bs,offset", [(4, 0), (4, 5), (8, 3)])
def test_training_logits_equal_kv_cache_steps(bs, offset):
    """Under the training mask, the logits at `shift_sources` == `step` block by block."""
    net = shift_model(4)
    L = 24
    g = torch.Generator().manual_seed(1)
    x0 = torch.randint(6, 512, (1, L), generator=g)
    xt = torch.where(torch.rand(1, L, generator=g) < 0.5, torch.tensor(1), x0)
    idx = torch.cat([xt, x0], dim=1)
    src = torch.from_numpy(shift_sources(L, bs, np.array([offset])))
    with torch.no_grad():
        train_logits = TrainModule(net).logits(idx, batch_positions(1, L, False, "cpu"),
                                               training_mask(L, bs, torch.tensor([offset])), L, src)[0]
    cache = KVCache.for_model(net)
    starts = [a for a in range(L) if (a - offset) % bs == 0 and a > 0]
    edges = list(zip(starts, starts[1:] + [L]))
    net.step(x0[:, :starts[0]], x0[:, :0], cache)
    prev = starts[0]
    for a, b in edges:
        step_logits = net.step(x0[:, prev:a], xt[:, a:b], cache)[0]
        prev = a
        torch.testing.assert_close(step_logits, train_logits[a:b], atol=1e-5, rtol=1e-5)


def test_diffusion_batch_of_a_shift_model_skips_the_first_token():
    ids = SpecialIds(pad=0, mask=1, eos=2)
    x0 = np.random.default_rng(0).integers(6, 100, (3, 16))
    b = diffusion_batch(x0, np.array([0, 3, 5]), 4, edit=False, ids=ids, cfg=ObjectiveConfig(shift=True),
                        rng=np.random.default_rng(1))
    assert (b["weight"][:, 0] == 0).all() and (b["weight"][:, 1:] > 0).all()
    src = b["src"].numpy()
    assert src[1, 3] == 16 + 2 and src[1, 4] == 3  # block start 3: the clean token before it; then noisy


PROMPTS = [("def f(x):\n    return ", "\n"), ("class A:\n    def g(self):\n        ", "\n\nx = A()\n")]


@pytest.mark.parametrize("cfg", [dict(block_size=4, threshold=0.3, max_tokens=18),
                                 dict(block_size=8, threshold=0.0, max_tokens=24)], ids=["b4", "b8"])
def test_graphed_decoder_and_cache_reuse_equal_the_sampler(tokenizer, cfg):
    m = shift_model(1)
    with torch.no_grad():
        m.tok_emb.weight[tokenizer.eos_id] *= 2
    scfg = SamplerConfig(**cfg)
    s = Sampler(m, tokenizer, scfg)
    dec = GraphedDecoder(s, scfg)
    cache = s.new_cache()
    for i, (prefix, suffix) in enumerate(PROMPTS):
        mode = "line" if i == 0 else "block"
        want = s.complete(prefix, suffix, mode=mode)
        for got in (dec.complete(prefix, suffix, mode=mode, cold=True), dec.complete(prefix, suffix, mode=mode),
                    s.complete(prefix, suffix, mode=mode, cache=cache), s.complete(prefix, suffix, mode=mode, cache=cache)):
            assert (got.text, got.stop, got.trace.per_step) == (want.text, want.stop, want.trace.per_step)
