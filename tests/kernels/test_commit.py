"""Fused commit: token, confidence and commit mask against the torch reference and the sampler."""

import pytest
import torch

from dllm_ls.kernels.commit import (commit_mask_reference, confidence_reference, fused_commit,
                                    fused_commit_reference, fused_commit_triton)

from .util import DTYPES, assert_within_torch_error


def _logits(T, V, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, V, generator=g) * 4
    x[1, 17] = 30.0  # a confident row
    x[2, 7] = x[2, V - 20] = 40.0  # a tie: the first index wins, the margin is 0
    return x.to(device, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", ["maxprob", "margin", "entropy"])
def test_tokens_and_confidence(triton_device, kind, dtype):
    T, V = 6, 1000  # V not a multiple of the chunk: the last chunk is ragged
    x = _logits(T, V, dtype, triton_device)
    ban = torch.zeros(V, dtype=torch.bool, device=triton_device)
    ban[:6] = True
    ban[990:] = True
    masked = torch.ones(T, dtype=torch.bool, device=triton_device)
    tok, conf, _ = fused_commit_triton(x, masked, ban=ban, kind=kind, block_v=256)
    tok64, conf64 = confidence_reference(x.double(), kind, ban)
    tok32, conf32 = confidence_reference(x, kind, ban)
    assert tok.tolist() == tok64.tolist() == tok32.tolist()
    assert tok[2] == 7 and not bool(ban[tok].any())
    assert_within_torch_error(conf, conf32, conf64, torch.float32, n_ulps=8, what=f"{kind} {dtype}")
    if kind == "margin":
        assert conf[2].abs() < 1e-6


@pytest.mark.parametrize("fallback", ["leftmost", "confident"])
@pytest.mark.parametrize("rule,threshold,factor", [("threshold", 0.05, 1.0), ("threshold", 1.5, 1.0),
                                                   ("factor", 0.0, 1.5), ("factor", 0.0, 0.01)])
def test_commit_mask(triton_device, rule, threshold, factor, fallback):
    T, V = 9, 300
    x = _logits(T, V, torch.float32, triton_device, seed=1)
    masked = torch.tensor([0, 1, 0, 1, 1, 1, 0, 1, 1], dtype=torch.bool, device=triton_device)
    kw = dict(kind="maxprob", rule=rule, threshold=threshold, factor=factor, fallback=fallback)
    got = fused_commit_triton(x, masked, **kw)
    want = fused_commit_reference(x, masked, **kw)
    assert got[2].tolist() == want[2].tolist()
    assert int(got[2].sum()) >= 1 and not bool((got[2] & ~masked).any())
    if rule == "threshold" and threshold > 1:  # nothing passes: one position all the same
        conf = want[1].masked_fill(~masked, -1.0)
        one = 1 if fallback == "leftmost" else int(conf.argmax())  # the first masked, or the most confident
        assert got[2].nonzero().flatten().tolist() == [one]


def test_commit_rule_equals_the_samplers():
    """The rank form of the rule commits exactly what the sampler's sort-and-count commits."""
    from dllm_ls.diffusion_core.sampler import SamplerConfig, choose, commit_count

    g = torch.Generator().manual_seed(3)
    for trial in range(40):
        T = int(torch.randint(1, 20, (1,), generator=g))
        conf = torch.rand(T, generator=g)
        conf[torch.rand(T, generator=g) < 0.2] = 0.5  # ties
        masked = torch.rand(T, generator=g) < 0.7
        masked[int(torch.randint(0, T, (1,), generator=g))] = True
        for fallback in ("leftmost", "confident"):
            for cfg in (SamplerConfig(threshold=0.6), SamplerConfig(threshold=0.99), SamplerConfig(threshold=0.0),
                        SamplerConfig(rule="factor", factor=1.0), SamplerConfig(rule="factor", factor=0.3)):
                idx = masked.nonzero().squeeze(1)
                order = conf[idx].argsort(descending=True, stable=True)
                n = commit_count(conf[idx][order], cfg)
                want = torch.zeros(T, dtype=torch.bool)
                want[choose(idx.tolist(), order.tolist(), n, fallback)] = True
                got = commit_mask_reference(conf, masked, cfg.rule, cfg.threshold, cfg.factor, fallback)
                assert got.tolist() == want.tolist(), (trial, cfg.rule, fallback)


def test_nothing_masked_commits_nothing():
    x = torch.randn(4, 50)
    _, _, commit = fused_commit_reference(x, torch.zeros(4, dtype=torch.bool))
    assert not commit.any()


def test_dispatch_uses_the_reference_on_cpu():
    x = torch.randn(3, 40)
    m = torch.ones(3, dtype=torch.bool)
    for a, b in zip(fused_commit(x, m, kind="margin"), fused_commit_reference(x, m, kind="margin")):
        assert torch.equal(a, b)


@pytest.mark.gpu
@pytest.mark.parametrize("T", [1, 33, 128])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_full_vocabulary_on_gpu(T, dtype):
    V = 8192
    x = (torch.randn(T, V, device="cuda") * 5).to(dtype)
    ban = torch.zeros(V, dtype=torch.bool, device="cuda")
    ban[:6] = True
    masked = torch.rand(T, device="cuda") < 0.6
    masked[0] = True
    for kind, fallback in (("maxprob", "leftmost"), ("margin", "confident"), ("entropy", "leftmost")):
        tok, conf, commit = fused_commit_triton(x, masked, ban=ban, kind=kind, threshold=0.3, fallback=fallback)
        tok64, conf64 = confidence_reference(x.double(), kind, ban)
        assert torch.equal(tok, tok64)
        _, conf32 = confidence_reference(x, kind, ban)
        assert_within_torch_error(conf, conf32, conf64, torch.float32, n_ulps=8, what=kind)
        assert torch.equal(commit, commit_mask_reference(conf, masked, "threshold", 0.3, fallback=fallback))
