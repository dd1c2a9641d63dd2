"""The graphed (static-shape, sync-free) decoders give the Sampler's completions.

On CPU the same static step runs eagerly with torch ops (no CUDA graph), so these tests check the
device-side state machine (block roll-over, tail block, eos fill, commit rules) and the host's
stops on snapshots against `Sampler.complete`; the CUDA-graph capture itself is tested on the GPU.
"""

import pytest
import torch

from dllm_ls.diffusion_core.graphed import GraphedDecoder, graphed
from dllm_ls.diffusion_core.graphed_ar import GraphedAR
from dllm_ls.trainer.step_floor import time_steps
from dllm_ls.diffusion_core.graphed_step import GraphedStep
from dllm_ls.diffusion_core.model import ModelConfig, Transformer
from dllm_ls.diffusion_core.sampler import Sampler, SamplerConfig

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = [("def f(x):\n    return ", "\n"), ("class A:\n    def g(self):\n        ", "\n\nx = A()\n")]


def _model(tokenizer, seed: int, causal: bool = False, shift: bool = False) -> Transformer:
    """A tiny random model; seeds 1 and 3 (with eos and newline made likelier) stop on eol/dedent and
    on eos, seed 0 runs to max_tokens: every way a completion ends."""
    torch.manual_seed(seed)
    m = Transformer(ModelConfig.from_name("test", causal=causal, shift=shift)).eval()
    with torch.no_grad():
        m.tok_emb.weight[tokenizer.eos_id] *= 2
        m.tok_emb.weight[tokenizer.encode("\n")[0]] *= 3
    return m


def _same(a, b):
    assert (a.text, a.stop, a.trace.per_step, a.trace.blocks, a.trace.tokens) == \
           (b.text, b.stop, b.trace.per_step, b.trace.blocks, b.trace.tokens)


CONFIGS = [
    dict(block_size=4, threshold=0.3, max_tokens=18),  # 18 = 4 blocks + a tail block of 2
    dict(block_size=8, threshold=0.0, max_tokens=24),  # whole blocks per step: roll-over every step
    dict(block_size=16, rule="factor", factor=1.0, confidence="margin", max_tokens=20),
]


@pytest.mark.parametrize("seed", [0, 1, 3])
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"b{c['block_size']}")
def test_graphed_diffusion_equals_the_sampler(tokenizer, seed, cfg):
    m = _model(tokenizer, seed)
    scfg = SamplerConfig(**cfg)
    s = Sampler(m, tokenizer, scfg)
    dec = GraphedDecoder(s, scfg)
    for i, (prefix, suffix) in enumerate(PROMPTS):
        mode = "line" if i == 0 else "block"
        want = s.complete(prefix, suffix, mode=mode)
        got = dec.complete(prefix, suffix, mode=mode, cold=True)
        _same(got, want)
        again = dec.complete(prefix, suffix, mode=mode)  # the prompt's KV reused from the static cache
        _same(again, want)
        assert again.trace.reused_tokens == again.trace.prompt_tokens
        more = dec.complete(prefix + "y", suffix, mode=mode)  # a part reused, the rest prefilled
        _same(more, s.complete(prefix + "y", suffix, mode=mode))
        assert 0 < more.trace.reused_tokens < more.trace.prompt_tokens
    assert dec.cache.length == dec.cache.pos.item() == len(dec.cache.tokens)


def test_graphed_revision_equals_the_sampler(tokenizer):
    """Revision (`SamplerConfig.revise`, `kernels.block_update`) in the graphed decoder gives the
    Sampler's completions, and it changes some of them. (A small random model's best token at a
    committed position is that token itself: its matrices are scaled up here so that the context
    moves it, and the bar is tiny, as its confidences are.)"""
    changed = 0
    for seed in (0, 1, 3):
        m = _model(tokenizer, seed)
        with torch.no_grad():
            for name, p in m.named_parameters():
                if p.dim() == 2 and "tok_emb" not in name:
                    p *= 8
        cfg = dict(block_size=8, threshold=0.3, max_tokens=24)
        s = Sampler(m, tokenizer, SamplerConfig(**cfg, revise=1e-6))
        dec = GraphedDecoder(s, s.cfg)
        for prefix, suffix in PROMPTS:
            want = s.complete(prefix, suffix, mode="block")
            _same(dec.complete(prefix, suffix, mode="block", cold=True), want)
            off = Sampler(m, tokenizer, SamplerConfig(**cfg, revise=0.0)).complete(prefix, suffix, mode="block")
            changed += want.text != off.text
    assert changed


def test_the_first_step_is_model_step(tokenizer):
    """A completion's first step (`_start`: the block state set up from one copy, the prompt and the
    first block in one forward) gives `model.step`'s logits and K/V, onto an empty cache and onto
    one that holds a prompt already, and moves the device position past the prompt."""
    from dllm_ls.diffusion_core.kv_cache import KVCache

    m = _model(tokenizer, 1)
    cfg = SamplerConfig(block_size=8, threshold=0.5, max_tokens=20)
    dec = GraphedDecoder(Sampler(m, tokenizer, cfg), cfg)
    assert dec.fused_first
    got = []
    update = dec._update
    dec._update = lambda logits, first=False: (got.append(logits.clone()), update(logits, first))
    ids = tokenizer.encode("def f(x):\n    return x + 1\n\n\nclass A:\n    pass\n" * 3)[:45]
    ref = KVCache.for_model(m, capacity=dec.cache.capacity)
    block = torch.full((1, 8), tokenizer.mask_id)
    for part in (ids[:30], ids[30:]):
        want = m.step(torch.tensor([part]), block, ref)[0]
        assert dec._start(part, (8, 20, 0))
        n = ref.length
        assert dec.cache.length == dec.cache.pos.item() == n and dec.cache.tokens == ids[:n]
        torch.testing.assert_close(got[-1], want, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(dec.cache.k[..., :n, :], ref.k[..., :n, :])
        torch.testing.assert_close(dec.cache.v[..., :n, :], ref.v[..., :n, :])
    assert not dec._start([1] * (m.cfg.max_seq_len - dec.cache.length + 1), (8, 20, 0))  # no bucket


def test_every_way_to_stop_is_covered(tokenizer):
    """The seeds above do reach eos, a text stop and max_tokens (else the tests would prove little)."""
    seen = set()
    for seed in (0, 1, 3):
        s = Sampler(_model(tokenizer, seed), tokenizer, SamplerConfig(**CONFIGS[0]))
        seen |= {s.complete(p, sf, mode="line").stop for p, sf in PROMPTS}
    assert {"eos", "max_tokens"} <= seen and seen & {"eol", "dedent"}


@pytest.mark.parametrize("seed", [0, 1, 3])
def test_graphed_ar_equals_the_sampler(tokenizer, seed):
    s = Sampler(_model(tokenizer, seed, causal=True), tokenizer, SamplerConfig(max_tokens=20))
    dec = graphed(s)
    assert isinstance(dec, GraphedAR)
    for i, (prefix, suffix) in enumerate(PROMPTS):
        want = s.complete(prefix, suffix, mode="line" if i == 0 else "block")
        _same(dec.complete(prefix, suffix, mode="line" if i == 0 else "block", cold=True), want)
        _same(dec.complete(prefix, suffix, mode="line" if i == 0 else "block"), want)


@pytest.mark.parametrize("seed", [0, 1, 3])
def test_ar_with_prompt_lookup_is_greedy_in_fewer_steps(tokenizer, seed):
    """Prompt lookup (`SamplerConfig.lookup`) in the Sampler and in GraphedAR: the greedy text of
    plain decoding, the two decoders step for step alike, and fewer steps where the drafts hold
    (a random model's greedy text loops, which the drafts copy)."""
    m = _model(tokenizer, seed, causal=True)
    plain = Sampler(m, tokenizer, SamplerConfig(max_tokens=40))
    s = Sampler(m, tokenizer, SamplerConfig(max_tokens=40, lookup=8))
    dec = graphed(s, s.cfg)
    fewer = 0
    for i, (prefix, suffix) in enumerate(PROMPTS + [("x = 1\ny = 2\nx = 1\ny = 2\nx = 1\n", "")]):
        mode = "line" if i == 0 else "block"
        want, base = s.complete(prefix, suffix, mode=mode), plain.complete(prefix, suffix, mode=mode)
        assert (want.text, want.stop, want.trace.tokens) == (base.text, base.stop, base.trace.tokens)
        assert sum(want.trace.per_step) == want.trace.tokens and len(want.trace.per_step) == want.trace.steps
        _same(dec.complete(prefix, suffix, mode=mode, cold=True), want)
        _same(dec.complete(prefix, suffix, mode=mode), want)  # the prompt's KV (and ids) reused
        fewer += want.trace.steps < base.trace.steps
    assert fewer


def test_ar_with_prompt_lookup_through_the_draft_kernel(tokenizer):
    """GraphedAR's verify step with the draft's Triton kernel (Triton's interpreter on CPU tensors)
    gives the Sampler's completions."""
    import os

    pytest.importorskip("triton")
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("TRITON_INTERPRET is not 1")
    from ..kernels.conftest import _patch_interpreter

    _patch_interpreter()
    s = Sampler(_model(tokenizer, 1, causal=True), tokenizer, SamplerConfig(max_tokens=40, lookup=8))
    dec = graphed(s, s.cfg)
    dec.draft_triton = True
    for prefix, suffix in PROMPTS + [("x = 1\ny = 2\nx = 1\ny = 2\nx = 1\n", "")]:
        want = s.complete(prefix, suffix, mode="block")
        _same(dec.complete(prefix, suffix, mode="block", cold=True), want)
    assert max(want.trace.per_step) > 1


@pytest.mark.parametrize("causal", [False, True])
def test_prefill_appends_as_extend(tokenizer, causal):
    """The bucketed prefill writes the K/V and the last hidden state that `model.extend` computes,
    onto an empty or a filled cache, whatever its padding; no bucket, or too long: it declines."""
    from dllm_ls.diffusion_core.kv_cache import KVCache

    m = _model(tokenizer, 1, causal=causal)
    dec = graphed(Sampler(m, tokenizer, SamplerConfig(block_size=8)))
    assert dec.buckets[0] == 32 and dec.buckets[-1] == m.cfg.max_seq_len
    ids = tokenizer.encode("def f(x):\n    return x + 1\n\n\nclass A:\n    pass\n" * 3)
    ref = KVCache.for_model(m, capacity=dec.cache.capacity)
    for part in (ids[:5], ids[5:]):  # the second onto a cache of 5
        want = m.extend(torch.tensor([part]), ref)
        assert dec._prefill(part)
        n = dec.cache.length
        assert n == ref.length and dec.cache.tokens == ids[:n]
        torch.testing.assert_close(dec.cache.k[..., :n, :], ref.k[..., :n, :])
        torch.testing.assert_close(dec.cache.v[..., :n, :], ref.v[..., :n, :])
        head = torch.nn.functional.linear(dec.pf_h, m.tok_emb.weight)
        torch.testing.assert_close(head, want[0], atol=1e-4, rtol=1e-4)
    assert not dec._prefill([])
    assert not dec._prefill([1] * (m.cfg.max_seq_len - dec.cache.length + 1))
    assert dec.cache.length == len(ids)


@pytest.mark.parametrize("causal", [False, True])
def test_the_kernel_path_equals_the_sampler(tokenizer, causal):
    """The CUDA path of the step and the prefill (fused RoPE + cache write, block attention, fused
    commit), here through Triton's interpreter on CPU tensors, gives the Sampler's completions."""
    import os

    pytest.importorskip("triton")
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("TRITON_INTERPRET is not 1")
    from ..kernels.conftest import _patch_interpreter

    _patch_interpreter()
    m = _model(tokenizer, 1, causal=causal)
    cfg = SamplerConfig(block_size=4, threshold=0.3, max_tokens=10)
    s = Sampler(m, tokenizer, cfg)
    dec = graphed(s, cfg)
    dec.kernels = dec.triton = True
    for i, (prefix, suffix) in enumerate(PROMPTS):
        mode = "line" if i == 0 else "block"
        _same(dec.complete(prefix, suffix, mode=mode, cold=True), s.complete(prefix, suffix, mode=mode))
    # the layers themselves (a completion of a random model may hide an error): a prompt's prefill
    from dllm_ls.diffusion_core.kv_cache import KVCache

    dec.cache.reset()
    ids = tokenizer.encode(PROMPTS[1][0])
    ref = KVCache.for_model(m, capacity=dec.cache.capacity)
    want = m.extend(torch.tensor([ids]), ref)
    assert dec._prefill(ids)
    torch.testing.assert_close(torch.nn.functional.linear(dec.pf_h, m.tok_emb.weight), want[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(dec.cache.k[..., :len(ids), :], ref.k[..., :len(ids), :], atol=1e-5, rtol=1e-5)
    # a prompt in a bucket above the decoding blocks' sizes, its attention through the kernel too
    dec.prefill_triton_max = 512
    dec.cache.reset()
    ids = (tokenizer.encode(PROMPTS[1][0]) * 40)[:300]
    ref = KVCache.for_model(m, capacity=dec.cache.capacity)
    want = m.extend(torch.tensor([ids]), ref)
    assert dec._prefill(ids)
    torch.testing.assert_close(torch.nn.functional.linear(dec.pf_h, m.tok_emb.weight), want[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(dec.cache.v[..., :300, :], ref.v[..., :300, :], atol=1e-5, rtol=1e-5)
    if causal:
        return
    # the logits and the cache themselves (a completion may hide a small error): a long prompt
    # (the prefill), then steps with and without clean tokens
    gs = GraphedStep(s, 4)
    gs.kernels = gs.triton = True
    a, b = s.new_cache(), s.new_cache()
    torch.manual_seed(0)
    for n, width in ((len(tokenizer.encode(PROMPTS[1][0])), 4), (0, 4), (4, 4), (2, 3)):
        clean = torch.tensor([tokenizer.encode(PROMPTS[1][0])]) if n > 4 else torch.randint(0, 500, (1, n))
        block = torch.randint(0, 500, (1, width))
        block[0, ::2] = tokenizer.mask_id
        want = m.step(clean, block, a)
        torch.testing.assert_close(gs.step(clean, block, b), want, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(b.k[:, :, :, :b.length], a.k[:, :, :, :a.length], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(b.v[:, :, :, :b.length], a.v[:, :, :, :a.length], atol=1e-5, rtol=1e-5)


def test_time_steps_leaves_the_decoder_usable(tokenizer):
    s = Sampler(_model(tokenizer, 1), tokenizer, SamplerConfig(block_size=8, max_tokens=16))
    dec = GraphedDecoder(s)
    assert time_steps(dec, context=100, n=3) > 0
    assert dec.cache.pos.item() == 0 and dec.cache.length == 0
    _same(dec.complete(*PROMPTS[0]), s.complete(*PROMPTS[0]))


def test_wrong_model_kind_is_refused(tokenizer):
    with pytest.raises(ValueError):
        GraphedDecoder(Sampler(_model(tokenizer, 0, causal=True), tokenizer))
    with pytest.raises(ValueError):
        GraphedAR(Sampler(_model(tokenizer, 0), tokenizer))


def _decode_with(s: Sampler, step, prefix, suffix, mode, cfg=None, cache=None):
    """Sampler.complete's loop with `step` as the forward (the core's scheduler does the same)."""
    state = s.begin(prefix, suffix, mode, cache=cache, cfg=cfg)
    while not state.done:
        clean, block = state.next_inputs()
        state.advance(step(clean, block, state.cache)[0])
    return state.result()


def test_graphed_step_equals_model_step(tokenizer):
    """Logits and the cache's new K/V as `model.step`, for every kind of call the core makes: a
    block's first step (clean = the finished block), a later one, a short tail block, a long
    prompt (its bucketed prefill, then the step), and calls it does not fit (a block over its
    size, a prompt over max_seq_len) it refuses."""
    m = _model(tokenizer, 1)
    s = Sampler(m, tokenizer, SamplerConfig(block_size=8))
    gs = GraphedStep(s, 8)
    a, b = s.new_cache(), s.new_cache()
    prompt = torch.tensor([tokenizer.encode(PROMPTS[1][0])])
    assert prompt.shape[1] > 8
    blk = torch.full((1, 8), tokenizer.mask_id)
    assert not gs.fits(prompt[:, :2], torch.cat([blk, blk], 1), a)
    assert not gs.fits(torch.zeros(1, m.cfg.max_seq_len, dtype=torch.long), blk, a)
    torch.manual_seed(0)
    for n, width in ((len(prompt[0]), 8), (0, 8), (8, 8), (0, 8), (3, 5), (0, 1), (1, 1), (20, 8)):
        clean = prompt if n == len(prompt[0]) else torch.randint(0, 500, (1, n))
        block = torch.randint(0, 500, (1, width))
        block[0, ::2] = tokenizer.mask_id
        assert gs.fits(clean, block, b)
        want = m.step(clean, block, a)
        got = gs.step(clean, block, b)
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        assert a.length == b.length == b.pos.item()
        torch.testing.assert_close(b.k[:, :, :, :b.length], a.k[:, :, :, :a.length], atol=1e-5, rtol=1e-5)


def test_decoding_with_the_graphed_step_equals_the_sampler(tokenizer):
    """Whole completions (line and block mode, token healing, the syntax guard) through the
    graphed step give `Sampler.complete`'s, and a second request reuses the session cache."""
    healed = False
    for seed in (0, 1, 3):
        cfg = SamplerConfig(block_size=8, threshold=0.3, max_tokens=20, token_healing=True, syntax_guard=True,
                            syntax_guard_alternatives=2)
        s = Sampler(_model(tokenizer, seed), tokenizer, cfg)
        gs = GraphedStep(s, 8)
        fits = lambda c, b, cache: gs.step(c, b, cache) if gs.fits(c, b, cache) else s.model.step(c, b, cache)
        for i, (prefix, suffix) in enumerate(PROMPTS + [("import os\nx = os.pa", "\n")]):
            mode = "line" if i != 1 else "block"
            want = s.complete(prefix, suffix, mode=mode)
            cache = s.new_cache()
            _same(_decode_with(s, fits, prefix, suffix, mode, cache=cache), want)
            again = _decode_with(s, fits, prefix, suffix, mode, cache=cache)
            _same(again, want)
            assert again.trace.reused_tokens > 0
            healed |= bool(want.trace.healed)
    assert healed  # the healing path (one-token blocks) did run


def test_graphed_step_refuses_shift_models(tokenizer):
    with pytest.raises(ValueError):
        GraphedStep(Sampler(_model(tokenizer, 0, shift=True), tokenizer), 8)


@pytest.mark.gpu
@pytest.mark.parametrize("causal,shift", [(False, False), (True, False), (False, True)])
def test_cuda_graph_replays_equal_eager_steps_and_the_sampler(tokenizer, causal, shift):
    m = _model(tokenizer, 1, causal=causal, shift=shift).cuda()
    cfg = SamplerConfig(block_size=8, threshold=0.3, max_tokens=30)
    s = Sampler(m, tokenizer, cfg)
    g, e = graphed(s, cfg, use_graphs=True), graphed(s, cfg, use_graphs=False)
    for i, (prefix, suffix) in enumerate(PROMPTS):
        mode = "line" if i == 0 else "block"
        a = g.complete(prefix, suffix, mode=mode, cold=True)
        assert g.graph is not None, g.graph_error
        _same(a, e.complete(prefix, suffix, mode=mode, cold=True))  # the same kernels, replayed
        _same(a, s.complete(prefix, suffix, mode=mode))
    assert g.prefills_graphed == len(PROMPTS) and e.prefills_graphed == 0  # the prompts: bucket graphs
    assert time_steps(g, context=200, n=20) > 0


@pytest.mark.gpu
def test_cuda_graph_replays_with_prompt_lookup_equal_the_sampler(tokenizer):
    m = _model(tokenizer, 1, causal=True).cuda()
    cfg = SamplerConfig(max_tokens=40, lookup=8)
    s = Sampler(m, tokenizer, cfg)
    g, e = graphed(s, cfg, use_graphs=True), graphed(s, cfg, use_graphs=False)
    for i, (prefix, suffix) in enumerate(PROMPTS + [("x = 1\ny = 2\nx = 1\ny = 2\nx = 1\n", "")]):
        mode = "line" if i == 0 else "block"
        a = g.complete(prefix, suffix, mode=mode, cold=True)
        assert g.graph is not None, g.graph_error
        _same(a, e.complete(prefix, suffix, mode=mode, cold=True))
        _same(a, s.complete(prefix, suffix, mode=mode))


def _check_service(s: Sampler, gs: GraphedStep):
    """With `gs` as its graphed step, the sampler and the core serve the eager sampler's
    completions, cold and with the prompt's KV reused; the core's single-request steps go
    through `gs` (`graphed_forwards`)."""
    from dllm_ls.diffusion_core.service import CoreService

    step = lambda c, b, cache: gs.step(c, b, cache) if gs.fits(c, b, cache) else s.model.step(c, b, cache)
    prompts = PROMPTS + [("import os\nx = os.pa", "\n")]
    s.graphed = None
    want = [s.complete(p, sf, mode="line") for p, sf in prompts]
    for (p, sf), w in zip(prompts, want):
        _same(_decode_with(s, step, p, sf, "line"), w)
    s.graphed = gs
    for (p, sf), w in zip(prompts, want):
        _same(s.complete(p, sf, mode="line"), w)
    assert s.graphed_steps > 0
    before = s.graphed_steps
    svc = CoreService(sampler=s).start()
    try:
        for i, ((p, sf), w) in enumerate(zip(prompts, want)):
            for _ in range(2):  # cold, then the prompt's KV reused
                r = svc.submit(dict(id=i, uri=f"file:///{i}.py", prefix=p, suffix=sf, mode="line",
                                    max_tokens=s.cfg.max_tokens), svc, i).result(timeout=60)
                assert (r["text"], r["stop"], r["steps"]) == (w.text, w.stop, w.trace.steps)
        h = svc.stats()
        assert h["graphed_forwards"] - before > h["forwards"] // 2  # most steps: one request at a time
    finally:
        svc.stop()
        svc.join(5)


GUARDED = dict(block_size=8, threshold=0.3, max_tokens=30, token_healing=True, syntax_guard=True)


def test_core_service_steps_through_the_graphed_step(tokenizer):
    s = Sampler(_model(tokenizer, 1), tokenizer, SamplerConfig(**GUARDED))
    _check_service(s, GraphedStep(s, 8))  # on CPU the service builds none: given here


@pytest.mark.gpu
def test_core_service_decodes_through_the_cuda_graph(tokenizer):
    """On CUDA the core builds and captures the graphed step itself."""
    s = Sampler(_model(tokenizer, 1).cuda(), tokenizer, SamplerConfig(**GUARDED))
    assert s.use_cuda_graph() and s.graphed.graph is not None
    _check_service(s, s.graphed)
