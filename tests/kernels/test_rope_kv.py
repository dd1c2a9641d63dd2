"""Fused RoPE + K/V cache write against the torch reference and the model's own attention."""

import pytest
import torch

from dllm_ls.kernels.rope_kv import rope_kv, rope_kv_reference, rope_kv_triton

from .util import DTYPES, assert_within_torch_error


def _inputs(T, H, D, S, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    qkv = (torch.randn(T, 3 * H * D + 7, generator=g) * 2)[:, :3 * H * D]  # rows with a wider stride
    ang = torch.rand(T, D // 2, generator=g, dtype=torch.float64) * 40
    cache = torch.randn(2, 1, H, S, D, generator=g)  # (layer, batch, H, S, D) as a KVCache holds it
    slots = torch.randperm(S, generator=g)[:T]
    return (qkv.to(device, dtype), ang.cos().float().to(device), ang.sin().float().to(device),
            cache.to(device, dtype), slots.to(device), ang)


def _rotate64(u, ang):
    """The rotation in float64 (ang: float64 angles (T, D/2)), the tests' ground truth."""
    c, s = ang.cos().to(u.device), ang.sin().to(u.device)
    d = u.shape[-1] // 2
    return torch.cat([u[..., :d] * c - u[..., d:] * s, u[..., :d] * s + u[..., d:] * c], -1)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("T,H,D", [(1, 2, 16), (5, 3, 10), (33, 6, 64)])
def test_matches_the_reference(triton_device, dtype, T, H, D):
    S = 50
    qkv, cos, sin, cache, slots, ang = _inputs(T, H, D, S, dtype, triton_device)
    kc, vc = cache[0, 0], cache[1, 0]  # strided views of one layer
    kr, vr = kc.clone(), vc.clone()
    q = rope_kv_triton(qkv, cos, sin, kc, vc, slots, H)
    q_ref = rope_kv_reference(qkv, cos, sin, kr, vr, slots, H)
    # against float64: the rotation of the same (rounded) inputs
    x = qkv.double().view(T, 3, H, D).permute(1, 2, 0, 3)
    assert q.shape == (1, H, T, D) and q.dtype == dtype
    assert_within_torch_error(q[0], q_ref[0], _rotate64(x[0], ang), dtype, what=f"q {dtype}")
    assert_within_torch_error(kc[:, slots], kr[:, slots], _rotate64(x[1], ang), dtype, what=f"k {dtype}")
    assert torch.equal(vc[:, slots], x[2].to(dtype))  # v is copied as it is
    others = torch.ones(S, dtype=torch.bool)
    others[slots.cpu()] = False
    assert torch.equal(kc[:, others.to(kc.device)], kr[:, others.to(kc.device)])  # nothing else written
    assert torch.equal(vc[:, others.to(vc.device)], vr[:, others.to(vc.device)])


def test_reference_is_the_models_attention_rope():
    """The reference rotates as `model.apply_rope` does, bit for bit."""
    from dllm_ls.diffusion_core.model import apply_rope

    T, H, D = 7, 2, 8
    qkv, cos, sin, cache, slots, _ = _inputs(T, H, D, 20, torch.bfloat16, "cpu", seed=3)
    q = rope_kv_reference(qkv, cos, sin, cache[0, 0], cache[1, 0], slots, H)
    x = qkv.view(1, T, 3, H, D).permute(2, 0, 3, 1, 4)
    assert torch.equal(q, apply_rope(x[0], cos, sin))
    assert torch.equal(cache[0, 0][:, slots], apply_rope(x[1], cos, sin)[0])


def test_dispatch_and_bad_shapes():
    qkv, cos, sin, cache, slots, _ = _inputs(3, 2, 8, 10, torch.float32, "cpu")
    assert rope_kv(qkv, cos, sin, cache[0, 0], cache[1, 0], slots, 2).shape == (1, 2, 3, 8)  # the reference on CPU
    with pytest.raises(ValueError, match="rope_kv"):
        rope_kv_triton(qkv[:, :47], cos, sin, cache[0, 0], cache[1, 0], slots, 2)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("T,H,D", [(1, 2, 16), (9, 3, 10)])
def test_the_norm_rides_along(triton_device, dtype, T, H, D):
    """With x, q/k/v are scaled by x's 1/rms first: the norm folded in (RMSNorm(x) @ W.T =
    (x @ (W * g).T) / rms(x)), against the unfused model computation in float64."""
    from dllm_ls.diffusion_core.model import RMSNorm

    S, C = 40, H * D
    qkv_unused, cos, sin, cache, slots, ang = _inputs(T, H, D, S, dtype, triton_device, seed=5)
    g = torch.Generator().manual_seed(7)
    x = (torch.randn(T, C, generator=g) * 3).to(triton_device, dtype)
    norm = RMSNorm(C, 1e-5)
    norm.weight.data = torch.rand(C, generator=g) + 0.5
    w = torch.randn(3 * C, C, generator=g) / C ** 0.5
    qkv = (x.float() @ (w * norm.weight.data).t().to(x.device)).to(dtype)  # the folded projection
    kc, vc = cache[0, 0], cache[1, 0]
    kr, vr = kc.clone(), vc.clone()
    q = rope_kv_triton(qkv, cos, sin, kc, vc, slots, H, x=x, eps=1e-5)
    q_ref = rope_kv_reference(qkv, cos, sin, kr, vr, slots, H, x=x, eps=1e-5)
    # float64: the model's norm, then the projection, then the rotation
    x64 = x.double().cpu()
    h64 = x64 * torch.rsqrt(x64.pow(2).mean(-1, keepdim=True) + 1e-5) * norm.weight.data.double()
    t = (h64 @ w.double().t()).view(T, 3, H, D).permute(1, 2, 0, 3).to(triton_device)
    assert_within_torch_error(q[0], q_ref[0], _rotate64(t[0], ang), dtype, n_ulps=4, what=f"q {dtype}")
    assert_within_torch_error(kc[:, slots], kr[:, slots], _rotate64(t[1], ang), dtype, n_ulps=4, what=f"k {dtype}")
    assert_within_torch_error(vc[:, slots], vr[:, slots], t[2], dtype, n_ulps=4, what=f"v {dtype}")
    with pytest.raises(ValueError, match="rope_kv: x"):
        rope_kv_triton(qkv, cos, sin, kc, vc, slots, H, x=x[:, :-1])
