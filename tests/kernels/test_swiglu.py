"""The fused SwiGLU gate against the torch reference and the model's feed-forward."""

import pytest
import torch

from dllm_ls.kernels.swiglu import swiglu, swiglu_reference, swiglu_triton

from .util import DTYPES, assert_within_torch_error


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("T,hidden", [(1, 16), (5, 70), (33, 1024), (2, 1500)])
def test_matches_the_reference(triton_device, dtype, T, hidden):
    g = torch.Generator().manual_seed(T)
    gu = (torch.randn(T, 2 * hidden + 5, generator=g) * 4)[:, :2 * hidden]  # rows with a wider stride
    x = gu.to(triton_device, dtype)
    got = swiglu_triton(x)
    x64 = x.double()
    want64 = torch.nn.functional.silu(x64[:, :hidden]) * x64[:, hidden:]
    assert got.shape == (T, hidden) and got.dtype == dtype
    assert_within_torch_error(got, swiglu_reference(x), want64, dtype, what=f"swiglu {dtype}")


def test_reference_is_the_models_feed_forward():
    from dllm_ls.diffusion_core.model import FeedForward, ModelConfig

    cfg = ModelConfig(vocab_size=64, dim=16, n_layer=1, n_head=2, ffn_hidden=24, max_seq_len=32)
    ffn = FeedForward(cfg)
    x = torch.randn(3, 16)
    assert torch.equal(ffn.w2(swiglu_reference(ffn.w13(x))), ffn(x))


def test_dispatch_and_bad_shapes():
    gu = torch.randn(3, 8)
    assert torch.equal(swiglu(gu), swiglu_reference(gu))  # the reference on CPU
    with pytest.raises(ValueError, match="swiglu"):
        swiglu_triton(torch.randn(3, 7))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_the_norm_rides_along(triton_device, dtype):
    """With x, the gate and up rows are scaled by x's 1/rms first (the feed-forward's RMSNorm
    folded into w13), against the model's norm + projection + gate in float64."""
    T, C, hidden = 6, 40, 72
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(T, C, generator=g) * 3).to(triton_device, dtype)
    gw = torch.rand(C, generator=g) + 0.5
    w = torch.randn(2 * hidden, C, generator=g) / C ** 0.5
    gu = (x.float() @ (w * gw).t().to(x.device)).to(dtype)
    got = swiglu_triton(gu, x=x, eps=1e-5)
    x64 = x.double().cpu()
    h64 = x64 * torch.rsqrt(x64.pow(2).mean(-1, keepdim=True) + 1e-5) * gw.double()
    gu64 = h64 @ w.double().t()
    want64 = (torch.nn.functional.silu(gu64[:, :hidden]) * gu64[:, hidden:]).to(got.device)
    assert_within_torch_error(got, swiglu_reference(gu, x=x, eps=1e-5), want64, dtype, n_ulps=4,
                              what=f"swiglu+norm {dtype}")
