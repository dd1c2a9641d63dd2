"""The copy prior's step kernel against its torch reference and the host walk
(diffusion_core/copy_prior.py), case by case: previous block or prompt, heads of every length,
walks long and short, line mode."""

import random

import pytest
import torch

from dllm_ls.diffusion_core.copy_prior import K, NMAX, NMIN, extra_host
from dllm_ls.kernels.copy_prior import copy_boost_reference, copy_boost_triton

KW = dict(nmin=NMIN, nmax=NMAX, k=K)


def _case(rng: random.Random, b: int, first: bool):
    vocab = rng.choice([3, 4, 6])  # few tokens: matches of every length
    H = 2 * b + 20 + rng.choice([4, 50, 100])
    n_prev = rng.randint(1 if first else 0, b if not first else 20)
    pos = rng.randint(0, H - b - n_prev - 1)
    hist = [rng.randrange(vocab) for _ in range(H)]  # past pos + n_prev: stale ids (ignored)
    prev = [rng.randrange(vocab) for _ in range(b)]
    masked = [rng.random() < 0.6 for _ in range(b)]
    block = [rng.randrange(vocab) if not m else 99 for m in masked]
    ctx = hist[:pos + n_prev] if first else hist[:pos] + prev[:n_prev]
    p = masked.index(True) if True in masked else b
    from dllm_ls.diffusion_core.copy_prior import draft_host
    d = draft_host(ctx + block[:p])
    pred = [d[j - p] if 0 <= j - p < len(d) and rng.random() < 0.8 else rng.randrange(vocab) for j in range(b)]
    conf = [rng.random() for _ in range(b)]
    return hist, pos, n_prev, prev, block, masked, pred, conf, ctx


@pytest.mark.parametrize("b", [1, 4, 32])
@pytest.mark.parametrize("first", [False, True])
def test_matches_the_reference_and_the_host_walk(triton_device, b, first):
    rng = random.Random(b * 2 + first)
    walked = 0
    for trial in range(20):
        hist, pos, n_prev, prev, block, masked, pred, conf, ctx = _case(rng, b, first)
        line = trial % 5 == 4
        want = [1.0 if (i in extra_host(ctx, block, masked, pred, conf, 0.4) and not line) else c
                for i, c in enumerate(conf)]
        t = lambda x, **kw: torch.tensor(x, device=triton_device, **kw)
        args = (t(pos), t(n_prev), t(prev + block), t(masked), t(pred), t(conf, dtype=torch.float32), t(line))
        h_ref, h_tri = t(hist), t(hist)
        ref = copy_boost_reference(h_ref, *args, threshold=0.4, first=first, **KW)
        got = copy_boost_triton(h_tri, *args[:5], args[5].clone(), args[6], threshold=0.4, first=first, **KW)
        assert got.tolist() == ref.tolist(), trial
        assert ref.cpu().tolist() == pytest.approx(want), trial
        assert torch.equal(h_tri, h_ref), trial  # the previous block entered the cache's ids alike
        if not first:
            assert h_ref[pos:pos + n_prev].tolist() == prev[:n_prev]
        walked += sum(c == 1.0 for c in ref.tolist()) > 0
    assert walked >= 2  # the cases do exercise walks


def test_refuses_shapes_it_cannot_hold(triton_device):
    z = torch.zeros((), dtype=torch.long, device=triton_device)
    with pytest.raises(ValueError, match="copy_boost"):
        copy_boost_triton(torch.zeros(10000, dtype=torch.long, device=triton_device), z, z,
                          torch.zeros(8, dtype=torch.long, device=triton_device),
                          torch.ones(4, dtype=torch.bool, device=triton_device),
                          torch.zeros(4, dtype=torch.long, device=triton_device),
                          torch.zeros(4, device=triton_device), torch.tensor(False, device=triton_device),
                          threshold=0.5, first=False, **KW)


@pytest.mark.parametrize("seed", range(6))
def test_the_draft_matches_the_reference_and_the_host(triton_device, seed):
    from dllm_ls.diffusion_core.copy_prior import draft_host
    from dllm_ls.kernels.copy_prior import draft_reference, draft_triton

    rng = random.Random(seed)
    found = 0
    for trial in range(15):
        H = rng.choice([20, 70, 200])
        pos = rng.randint(0, H - 2)
        hist = [rng.randrange(rng.choice([3, 5])) for _ in range(H)]
        tok = rng.randrange(3)
        want = draft_host(hist[:pos] + [tok], 8)
        h_tri = torch.tensor(hist, device=triton_device)
        d, n = draft_triton(h_tri, torch.tensor([tok], device=triton_device), torch.tensor(pos, device=triton_device),
                            nmin=NMIN, nmax=NMAX, k=8)
        h_ref = torch.tensor(hist, device=triton_device)
        h_ref[pos] = tok
        dr, nr = draft_reference(h_ref, torch.tensor(pos + 1, device=triton_device), NMIN, NMAX, 8)
        assert int(n) == int(nr) == len(want), trial
        assert d[:int(n)].tolist() == dr[:int(nr)].tolist() == want, trial
        assert torch.equal(h_tri, h_ref)  # the last token entered the ids
        found += len(want) > 0
    assert found
