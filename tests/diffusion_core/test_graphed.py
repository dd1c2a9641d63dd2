"""The graphed (static-shape, sync-free) decoders give the Sampler's completions.

On CPU the same static step runs eagerly with torch ops (no CUDA graph), so these tests check the
device-side state machine (block roll-over, tail block, eos fill, commit rules) and the host's
stops on snapshots against `Sampler.complete`; the CUDA-graph capture itself is tested on the GPU.
"""

import pytest
import torch

from dllm_ls.diffusion_core.graphed import GraphedAR, GraphedDecoder, graphed, time_steps
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
    assert dec.cache.length == dec.cache.pos.item() == len(dec.cache.tokens)


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
    assert time_steps(g, context=200, n=20) > 0
