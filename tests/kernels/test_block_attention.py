"""Block-decode attention: the Triton kernel (interpreter on CPU) against the torch reference."""

import pytest
import torch

from dllm_ls.kernels.block_attention import (block_attention, block_attention_reference,
                                             block_attention_triton, full_mask)

from .util import DTYPES, assert_within_torch_error


def _inputs(B, H, T, L, D, dtype, device, spare=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, n, D, generator=g) for n in (T, L + T + spare, L + T + spare))
    return q.to(device, dtype), k.to(device, dtype), v.to(device, dtype)


def _step_mask(n_clean: int, T: int) -> torch.Tensor:
    """The model's pattern among new tokens: clean ones causal, the block bidirectional."""
    q = torch.arange(T)[:, None]
    k = torch.arange(T)[None, :]
    return (k <= q) | (q >= n_clean)


# odd shapes: head dims that are not powers of two, one query, an empty cache, several splits
CASES = [  # B, H, T, L, D, self-mask
    (1, 2, 5, 37, 16, "step"),
    (2, 1, 3, 0, 24, None),
    (1, 2, 17, 130, 16, "step"),
    (1, 1, 1, 70, 40, None),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_kernel_matches_reference(triton_device, case, dtype):
    B, H, T, L, D, kind = case
    q, k, v = _inputs(B, H, T, L, D, dtype, triton_device)
    sm = _step_mask(T // 3, T).to(triton_device) if kind == "step" else None
    ref64 = block_attention_reference(q.double(), k.double(), v.double(), L, sm)
    lowp = block_attention_reference(q, k, v, L, sm)
    out = block_attention_triton(q, k, v, L, sm, chunk=16)  # chunk 16: several splits even here
    assert out.dtype == dtype and out.shape == (B, H, T, D)
    assert_within_torch_error(out, lowp, ref64, dtype, what=f"{case} {dtype}")


def test_device_length_and_strided_mask(triton_device):
    """cache_len as a device tensor (what a CUDA graph replays) over a longer buffer, and the mask a
    strided slice of a bigger one (as model.step passes it), give the int-length result."""
    B, H, T, L, D = 1, 2, 6, 45, 16
    q, k, v = _inputs(B, H, T, L, D, torch.float32, triton_device, spare=40)
    big = torch.zeros(T, L + T, dtype=torch.bool, device=triton_device)
    big[:, L:] = _step_mask(2, T).to(triton_device)
    sm = big[:, L:]  # non-contiguous
    want = block_attention_triton(q, k, v, L, sm.contiguous(), chunk=16)
    got = block_attention_triton(q, k, v, torch.tensor([L], device=triton_device), sm, chunk=16)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    ref = block_attention_reference(q, k, v, torch.tensor(L, device=triton_device), sm)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_reference_equals_sdpa_with_the_model_mask():
    """The reference (and so the CPU path) is the model's SDPA with `step_mask`."""
    import torch.nn.functional as F

    from dllm_ls.diffusion_core.model import step_mask

    P, n, b = 23, 4, 7
    q, k, v = _inputs(1, 2, n + b, P, 16, torch.float64, "cpu", spare=0)
    m = step_mask(P, n, b)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=m)
    got = block_attention_reference(q, k, v, P, m[0, 0, :, P:])
    torch.testing.assert_close(got, want)
    assert torch.equal(full_mask(P, n + b, P + n + b, m[0, 0, :, P:], "cpu"), m[0, 0])
    got_t = block_attention_reference(q, k, v, torch.tensor(P), m[0, 0, :, P:])  # static-shape form
    torch.testing.assert_close(got_t, want)


def test_dispatch_uses_the_reference_on_cpu():
    q, k, v = _inputs(1, 1, 3, 5, 8, torch.float32, "cpu")
    torch.testing.assert_close(block_attention(q, k, v, 5), block_attention_reference(q, k, v, 5))


@pytest.mark.gpu
@pytest.mark.parametrize("T", [1, 37, 128])
@pytest.mark.parametrize("L", [0, 511, 8192])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)  # fp16: the small cases
def test_kernel_long_caches_on_gpu(T, L, dtype):
    q, k, v = _inputs(1, 6, T, L, 64, dtype, "cuda", spare=5)
    sm = _step_mask(T // 2, T).cuda()
    ref64 = block_attention_reference(q.double(), k.double(), v.double(), L, sm)
    lowp = block_attention_reference(q, k, v, L, sm)
    for cache_len in (L, torch.tensor([L], device="cuda", dtype=torch.int32)):
        out = block_attention_triton(q, k, v, cache_len, sm)
        assert_within_torch_error(out, lowp, ref64, dtype, what=f"T={T} L={L} {dtype}")


@pytest.mark.gpu
def test_kernel_replays_in_a_cuda_graph():
    """Captured once, replayed as the device-side length grows: each replay equals a fresh call."""
    q, k, v = _inputs(1, 6, 8, 1000, 64, torch.bfloat16, "cuda", spare=8)
    length = torch.tensor([100], device="cuda")
    out = block_attention_triton(q, k, v, length)  # compile outside the capture
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = block_attention_triton(q, k, v, length)
    for L in (100, 517, 1000):
        length.fill_(L)
        g.replay()
        fresh = block_attention_triton(q, k, v, torch.tensor([L], device="cuda"))  # the same split plan
        torch.testing.assert_close(out, fresh, atol=0, rtol=0)
        ref = block_attention_reference(q, k, v, L)
        assert_within_torch_error(out, ref, block_attention_reference(q.double(), k.double(), v.double(), L),
                                  torch.bfloat16, what=f"graph L={L}")


def test_a_prefill_sized_block(triton_device):
    """A prompt's prefill: hundreds of causal queries (a bucket above the decoding blocks) over a
    short cache, in bf16, against the reference."""
    B, H, T, L, D = 1, 2, 300, 20, 16
    q, k, v = _inputs(B, H, T, L, D, torch.bfloat16, triton_device, seed=4)
    sm = _step_mask(T, T).to(triton_device)  # all clean: causal
    ref64 = block_attention_reference(q.double(), k.double(), v.double(), L, sm)
    out = block_attention_triton(q, k, v, torch.tensor([L], device=triton_device), sm)
    assert_within_torch_error(out, block_attention_reference(q, k, v, L, sm), ref64, torch.bfloat16, what="prefill")
    with pytest.raises(ValueError, match="1-1024"):
        block_attention_triton(torch.zeros(1, 1, 1025, 16), k, v, 0)
