"""Fused linear + cross-entropy: loss and both gradients against the unfused torch path."""

import pytest
import torch

from dllm_ls.kernels.fused_ce import fused_linear_cross_entropy, fused_linear_cross_entropy_reference

from .util import DTYPES, assert_within_torch_error


def _run(fn, x0, w0, t, dce, dtype, device):
    x = x0.to(device, dtype).clone().requires_grad_()
    w = w0.to(device, dtype).clone().requires_grad_()
    ce = fn(x, w, t)
    (ce * dce.to(ce.dtype)).sum().backward()
    return ce, x.grad, w.grad


def _data(N, C, V, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0, w0 = torch.randn(N, C, generator=g), torch.randn(V, C, generator=g) * 0.3
    t = torch.randint(0, V, (N,), generator=g)
    t[3] = -100  # ignored
    return x0, w0, t.to(device), torch.rand(N, generator=g).to(device)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kernels", ["triton", "torch"])
def test_loss_and_gradients(request, kernels, dtype):
    if kernels == "triton":
        device = request.getfixturevalue("triton_device")
    else:
        device = "cpu"
    N, C, V = 37, 24, 300  # odd sizes; chunks of 16 rows: the last one ragged
    x0, w0, t, dce = _data(N, C, V, device)

    def fused(x, w, t_):
        return fused_linear_cross_entropy(x, w, t_, chunk=16, use_triton_kernels=kernels == "triton")

    got = _run(fused, x0, w0, t, dce, dtype, device)
    lowp = _run(fused_linear_cross_entropy_reference, x0, w0, t, dce, dtype, device)
    ref64 = _run(fused_linear_cross_entropy_reference, x0, w0, t, dce, torch.float64, device)
    assert got[0][3] == 0 and not got[1][3].any()  # the ignored row: no loss, no gradient
    for name, a, b, r in zip(("ce", "dx", "dw"), got, lowp, ref64):
        assert a.dtype == b.dtype
        assert_within_torch_error(a, b, r, dtype, what=f"{name} {dtype} {kernels}")


@pytest.mark.gpu
def test_large_vocabulary_on_gpu():
    N, C, V = 4096, 384, 8192
    x0, w0, t, dce = _data(N, C, V, "cuda")
    got = _run(fused_linear_cross_entropy, x0, w0, t, dce, torch.bfloat16, "cuda")
    lowp = _run(fused_linear_cross_entropy_reference, x0, w0, t, dce, torch.bfloat16, "cuda")
    ref64 = _run(fused_linear_cross_entropy_reference, x0, w0, t, dce, torch.float64, "cuda")
    for name, a, b, r in zip(("ce", "dx", "dw"), got, lowp, ref64):
        assert_within_torch_error(a, b, r, torch.bfloat16, what=name)
