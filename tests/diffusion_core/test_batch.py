"""Batched denoising: `Transformer.step_batch` and interleaved `DecodeState`s equal single requests."""

import pytest
import torch

from dllm_ls.diffusion_core.kv_cache import KVCache
from dllm_ls.diffusion_core.sampler import Sampler, SamplerConfig

from .test_sampler import PREFIX, SUFFIX

DOCS = [  # (prefix, suffix, mode, block_size, threshold, max_tokens): different lengths, blocks, stops
    (PREFIX, SUFFIX, "block", 8, 0.0, 24),
    ("import os\n\ndef walk(root):\n    for d in os.listdir(root):\n        ", "", "line", 4, 0.9, 12),
    ("x = [", "]\n", "line", 16, 0.0, 20),
    ("class A:\n    def __init__(self):\n        self.a = 1\n\n    def get(self):\n        return ",
     "\n", "block", 1, 0.5, 10),
    ("def f(a, b):\n    return a", "\n", "block", 32, 0.0, 40),
]


def test_step_batch_logits_equal_single_steps(tiny_model):
    torch.manual_seed(1)
    specs = [(0, 10, 4), (7, 3, 8), (20, 0, 5), (5, 6, 1), (0, 1, 32)]  # (cached P, clean n, block b)
    singles, batched = [], []
    for P, n, b in specs:
        c1, c2 = KVCache.for_model(tiny_model), KVCache.for_model(tiny_model)
        if P:
            pre = torch.randint(0, 500, (1, P))
            tiny_model.extend(pre, c1)
            tiny_model.extend(pre, c2)
        clean, block = torch.randint(0, 500, (1, n)), torch.randint(0, 500, (1, b))
        singles.append((tiny_model.step(clean, block, c1), c1))
        batched.append((clean, block, c2))
    out = tiny_model.step_batch(batched)
    assert len(out) == len(specs)
    for (ref, c1), got, (_, _, c2), (P, n, b) in zip(singles, out, batched, specs):
        assert got.shape == ref.shape == (1, b, tiny_model.cfg.vocab_size)
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
        assert c2.length == c1.length == P + n  # only the clean tokens entered the cache
        torch.testing.assert_close(c2.k[:, :, :, :P + n], c1.k[:, :, :, :P + n], rtol=0, atol=1e-5)


def test_step_batch_checks_lengths_before_touching_any_cache(tiny_model):
    c1, c2 = KVCache.for_model(tiny_model), KVCache.for_model(tiny_model)
    L = tiny_model.cfg.max_seq_len
    with pytest.raises(ValueError, match="max_seq_len"):
        tiny_model.step_batch([(torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 2, dtype=torch.long), c1),
                               (torch.zeros(1, L, dtype=torch.long), torch.zeros(1, 2, dtype=torch.long), c2)])
    assert c1.length == c2.length == 0


def run_interleaved(sampler, docs, caches):
    """Every active request advances one step per batched forward, as the core's scheduler does."""
    states = [sampler.begin(p, s, mode, cache, SamplerConfig(block_size=bs, threshold=th, max_tokens=mt))
              for (p, s, mode, bs, th, mt), cache in zip(docs, caches)]
    forwards = 0
    active = list(states)
    while active:
        logits = sampler.model.step_batch([(*st.next_inputs(), st.cache) for st in active])
        forwards += 1
        for st, lg in zip(active, logits):
            st.advance(lg[0])
        active = [st for st in active if not st.done]
    return [st.result() for st in states], forwards


def test_interleaved_requests_equal_single_requests(tiny_model, tokenizer):
    sampler = Sampler(tiny_model, tokenizer)
    cold = [sampler.complete(p, s, mode, cfg=SamplerConfig(block_size=bs, threshold=th, max_tokens=mt))
            for p, s, mode, bs, th, mt in DOCS]
    got, forwards = run_interleaved(sampler, DOCS, [None] * len(DOCS))
    for c, g in zip(cold, got):
        assert (g.text, g.stop) == (c.text, c.stop)
        assert (g.trace.steps, g.trace.per_step, g.trace.blocks) == (c.trace.steps, c.trace.per_step, c.trace.blocks)
    assert forwards == max(c.trace.steps for c in cold) < sum(c.trace.steps for c in cold)


def test_interleaved_requests_reusing_sessions_equal_cold_ones(tiny_model, tokenizer):
    sampler = Sampler(tiny_model, tokenizer)
    caches = [sampler.new_cache() for _ in DOCS]
    run_interleaved(sampler, DOCS, caches)  # warm the sessions, then type one character in each
    typed = [(p + "a", *rest) for p, *rest in DOCS]
    got, _ = run_interleaved(sampler, typed, caches)
    for (p, s, mode, bs, th, mt), g in zip(typed, got):
        c = sampler.complete(p, s, mode, cfg=SamplerConfig(block_size=bs, threshold=th, max_tokens=mt))
        assert (g.text, g.stop, g.trace.per_step) == (c.text, c.stop, c.trace.per_step)
        assert g.trace.reused_tokens > 0 and c.trace.reused_tokens == 0


def test_decode_state_between_steps_keeps_the_cache_consistent(tiny_model, tokenizer):
    sampler = Sampler(tiny_model, tokenizer, SamplerConfig(block_size=4, threshold=2.0, max_tokens=12))
    st = sampler.begin(PREFIX, SUFFIX, "block")
    for _ in range(6):  # stop mid-request, as a cancelled one does
        clean, block = st.next_inputs()
        st.advance(tiny_model.step(clean, block, st.cache)[0])
        assert st.cache.length == len(st.cache.tokens)
    with pytest.raises(RuntimeError):
        st.result()
    cache = st.cache
    assert sampler.complete(PREFIX, SUFFIX, "block", cache=cache).text == sampler.complete(PREFIX, SUFFIX, "block").text


def test_causal_models_have_no_decode_state(tokenizer):
    from .scripted import ScriptedModel

    s = Sampler(ScriptedModel(tokenizer, [5, 6], causal=True), tokenizer)
    with pytest.raises(ValueError):
        s.begin("x = ", "")
