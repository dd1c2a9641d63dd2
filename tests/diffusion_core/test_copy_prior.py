"""The copy prior (diffusion_core/copy_prior.py): the draft, the walk, the host and device versions
(kernels/copy_prior.py's reference) agreeing, and the decoders with it (the Sampler and the graphed
decoder give one result)."""

import random

import pytest
import torch

from dllm_ls.diffusion_core import copy_prior
from dllm_ls.diffusion_core.checkpoint import default_checkpoint, load_checkpoint
from dllm_ls.diffusion_core.copy_prior import K, NMAX, NMIN, draft_host, extra_host
from dllm_ls.kernels.copy_prior import copy_extra_reference
from dllm_ls.diffusion_core.graphed import GraphedDecoder
from dllm_ls.diffusion_core.sampler import Sampler, SamplerConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_draft_continues_the_longest_then_latest_match():
    # "1 2 3" ends the text; it occurred at 0 (then 9) and "2 3" at 5 (then 7): the longer wins
    assert draft_host([1, 2, 3, 9, 5, 2, 3, 7, 1, 2, 3]) == [9, 5, 2, 3, 7, 1, 2, 3]
    # of two equally long matches, the later one
    assert draft_host([4, 5, 1, 4, 5, 2, 4, 5]) == [2, 4, 5]
    # one matching token is not enough (NMIN = 2); nothing matches: no draft
    assert draft_host([7, 1, 8, 1]) == []
    assert draft_host([1, 2, 3, 4]) == []
    assert draft_host([]) == [] and draft_host([3]) == []
    # at most K tokens
    assert len(draft_host(list(range(40)) + [0, 1])) == K


def test_the_walk_commits_agreeing_predictions_from_the_head():
    ctx = [10, 11, 12, 13, 14, 15, 10, 11]  # the draft after "10 11": 12 13 14 15 10 11
    M = -1  # a mask
    block = [M, M, M, M, M]
    masked = [True] * 5
    pred = [12, 13, 99, 15, 10]
    conf = [0.6, 0.6, 0.99, 0.6, 0.6]
    # 12 and 13 agree; 99 does not: the walk ends there, though 15 and 10 agree after it
    assert extra_host(ctx, block, masked, pred, conf, 0.5) == [0, 1]
    # too little confidence at the second position ends it sooner
    assert extra_host(ctx, block, masked, pred, [0.6, 0.4, 0.9, 0.6, 0.6], 0.5) == [0]
    # a committed position whose token is the draft's lets the walk go on; the head moves the draft
    block, masked = [12, M, 14, M, M], [False, True, False, True, True]
    assert extra_host(ctx, block, masked, [12, 13, 0, 15, 10], [0.6] * 5, 0.5) == [1, 3, 4]
    # ... a committed one that disagrees (token and prediction) ends it
    assert extra_host(ctx, [12, M, 77, M, M], masked, [12, 13, 0, 15, 10], [0.6] * 5, 0.5) == [1]
    # the draft follows the committed head: after "10 11 12", "10 11 12" at 0 continues with 13
    assert extra_host(ctx, [12, M, M, M, M], [False, True, True, True, True],
                      [0, 13, 14, 0, 0], [0.6] * 5, 0.5) == [1, 2]
    # no draft, no extra commits
    assert extra_host([1, 2, 3], [M, M], [True, True], [1, 2], [1.0, 1.0], 0.5) == []


@pytest.mark.parametrize("seed", range(40))
def test_the_device_version_equals_the_host_version(seed):
    rng = random.Random(seed)
    vocab = rng.choice([3, 4, 6])  # few tokens: many matches of every length
    b, H = rng.choice([4, 8, 16, 32]), 96
    end = rng.randint(0, H - b)
    ctx = [rng.randrange(vocab) for _ in range(end)]
    masked = [rng.random() < 0.6 for _ in range(b)]
    block = [rng.randrange(vocab) if not m else 50 for m in masked]
    pred = [rng.randrange(vocab) for _ in range(b)]
    for j in range(b):  # often the draft's token, so that walks get long
        d = draft_host(ctx + block[: masked.index(True) if True in masked else b])
        if d and rng.random() < 0.7:
            k = j - (masked.index(True) if True in masked else b)
            if 0 <= k < len(d):
                pred[j] = d[k]
    conf = [rng.random() for _ in range(b)]
    want = extra_host(ctx, block, masked, pred, conf, 0.3)
    hist = torch.tensor(ctx + [rng.randrange(vocab) for _ in range(H - end)])  # garbage past end
    got = copy_extra_reference(hist, torch.tensor(end), torch.tensor(block), torch.tensor(masked),
                               torch.tensor(pred), torch.tensor(conf), 0.3, NMIN, NMAX, K)
    assert got.nonzero().flatten().tolist() == want


@pytest.fixture(scope="module")
def shipped():
    ckpt = default_checkpoint()
    if ckpt is None:
        pytest.skip("no shipped model")
    return load_checkpoint(ckpt)


# a multi-line completion whose answer repeats the lines above it
REPEAT = ("def load(cfg):\n    a = cfg.get('alpha', 1)\n    b = cfg.get('beta', 2)\n    c = cfg.get('gamma', 3)\n"
          "    d = cfg.get('delta', 4)\n    e = cfg.get(", "\n    return a, b, c, d, e\n")


def test_the_copy_prior_takes_fewer_steps_and_the_graphed_decoder_agrees(shipped):
    model, tok = shipped
    on = SamplerConfig(block_size=32, max_tokens=48, copy=0.5)
    off = SamplerConfig(block_size=32, max_tokens=48, copy=0.0)
    with_copy = Sampler(model, tok, on).complete(*REPEAT, mode="block")
    without = Sampler(model, tok, off).complete(*REPEAT, mode="block")
    assert with_copy.trace.steps < without.trace.steps
    assert with_copy.trace.tokens / with_copy.trace.steps > without.trace.tokens / without.trace.steps
    dec = GraphedDecoder(Sampler(model, tok, on), on)
    got = dec.complete(*REPEAT, mode="block", cold=True)
    assert (got.text, got.stop, got.trace.per_step) == (with_copy.text, with_copy.stop, with_copy.trace.per_step)
    again = dec.complete(REPEAT[0] + "'e", REPEAT[1], mode="block")  # the prompt's KV partly reused
    want = Sampler(model, tok, on).complete(REPEAT[0] + "'e", REPEAT[1], mode="block")
    assert (again.text, again.trace.per_step) == (want.text, want.trace.per_step)
    assert 0 < again.trace.reused_tokens


def test_the_kernel_in_the_graphed_decoder_equals_the_sampler(shipped, monkeypatch):
    """The graphed decoder with the Triton kernel of the copy prior (Triton's interpreter on CPU
    tensors; the rest of its step in torch) gives the Sampler's completions."""
    import os

    pytest.importorskip("triton")
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("TRITON_INTERPRET is not 1")
    from dllm_ls.kernels import copy_prior as kcp

    from ..kernels.conftest import _patch_interpreter

    _patch_interpreter()
    monkeypatch.setattr(kcp, "copy_boost_reference", kcp.copy_boost_triton)
    model, tok = shipped
    on = SamplerConfig(block_size=32, max_tokens=48, copy=0.5)
    dec = GraphedDecoder(Sampler(model, tok, on), on)
    for prefix, suffix in (REPEAT, (REPEAT[0] + "'e", REPEAT[1])):
        want = Sampler(model, tok, on).complete(prefix, suffix, mode="block")
        got = dec.complete(prefix, suffix, mode="block")
        assert (got.text, got.trace.per_step) == (want.text, want.trace.per_step)
    assert max(want.trace.per_step) > 1


def test_line_mode_and_off_do_not_use_it(shipped, monkeypatch):
    model, tok = shipped
    calls = []
    monkeypatch.setattr(copy_prior, "extra_host", lambda *a: calls.append(a) or [])
    Sampler(model, tok, SamplerConfig(copy=0.5)).complete(*REPEAT, mode="line")
    Sampler(model, tok, SamplerConfig(copy=0.0)).complete(*REPEAT, mode="block")
    assert calls == []
    Sampler(model, tok, SamplerConfig(copy=0.5)).complete(*REPEAT, mode="block")
    assert calls
    with pytest.raises(ValueError, match="copy"):
        SamplerConfig(copy=1.5)


@pytest.mark.gpu
def test_cuda_graph_replays_with_the_copy_prior_equal_the_sampler():
    """On CUDA the copy prior runs inside the captured step (and the Sampler's eager steps, with
    the same kernels for the forward, on the host): one result, graph replays or not."""
    ckpt = default_checkpoint()
    if ckpt is None:
        pytest.skip("no shipped model")
    model, tok = load_checkpoint(ckpt, device="cuda")
    cfg = SamplerConfig(block_size=32, max_tokens=48, copy=0.5)
    s = Sampler(model, tok, cfg)
    g = GraphedDecoder(s, cfg, use_graphs=True)
    e = GraphedDecoder(s, cfg, use_graphs=False)
    for prefix, suffix in (REPEAT, (REPEAT[0] + "'e", REPEAT[1])):
        a = g.complete(prefix, suffix, mode="block", cold=True)
        assert g.graph is not None, g.graph_error
        b = e.complete(prefix, suffix, mode="block", cold=True)
        assert (a.text, a.trace.per_step) == (b.text, b.trace.per_step)
        want = s.complete(prefix, suffix, mode="block")
        assert a.text == want.text
    off = GraphedDecoder(s, SamplerConfig(block_size=32, max_tokens=48, copy=0.0), use_graphs=True)
    on = g.complete(*REPEAT, mode="block", cold=True)
    assert off.complete(*REPEAT, mode="block", cold=True).trace.steps > on.trace.steps
