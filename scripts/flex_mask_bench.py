"""Why FlexAttention is slow on the diffusion training mask (issue 8, session 25).

`scripts/train_step_profile.py` on one H100 (session 25): the `base` pair's diffusion step takes
2.93x the AR step, and FlexAttention is most of the difference: 3.04 ms a forward call and 5.72 ms
a backward one against 0.28 / 0.86 ms for the AR's causal mask, for 2x the tokens and ~2.4x the
128x128 tiles. This times flex_attention (compiled, bf16, B 64, H 8, D 64) forward and forward +
backward on the masks involved, and the block mask's construction, side by side:

    causal over L and 2L tokens; the diffusion mask over [x_t ; x_0] (2L) as the trainer builds it
    with block ids by integer division in the mask_mod (the trainer's before session 25) and looked
    up from a (B, 2L) table (`training_mask_mod` now); each with block sizes 4 and 32; and the
    block mask built from each tile's range of block ids (`training_block_mask`, the trainer's now).

    python scripts/flex_mask_bench.py [--batch 64] [--seq 1024]
"""

from __future__ import annotations

import argparse

import torch
from torch.nn.attention.flex_attention import create_block_mask, create_mask, flex_attention

from dllm_ls.kernels._triton import bench_ms
from dllm_ls.trainer.objectives import causal_mask_mod, training_block_mask, training_mask_mod


def division_mask_mod(L: int, bs: torch.Tensor, offset: torch.Tensor):
    """The trainer's mask_mod before session 25: block ids by integer division per element."""
    off = offset.long() % bs

    def mask_mod(b, h, q_idx, kv_idx):
        q_noisy, k_noisy = q_idx < L, kv_idx < L
        qi = torch.where(q_noisy, q_idx, q_idx - L)
        ki = torch.where(k_noisy, kv_idx, kv_idx - L)
        bq = (qi + bs - off[b]) // bs
        bk = (ki + bs - off[b]) // bs
        noisy = q_noisy & ((k_noisy & (bq == bk)) | (~k_noisy & (bk < bq)))
        clean = ~q_noisy & ~k_noisy & (ki <= qi)
        return noisy | clean

    return mask_mod


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--n", type=int, default=20, help="calls timed on the CPU; on CUDA do_bench runs 10n ms")
    ap.add_argument("--device", default="cuda", help="cpu: a smoke run (--batch 2 --seq 128 --n 1)")
    args = ap.parse_args()
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    B, L, H, D = args.batch, args.seq, args.heads, args.head_dim
    print(torch.cuda.get_device_name() if cuda else "cpu", torch.__version__)
    attn = torch.compile(flex_attention)
    g = torch.Generator(device="cpu").manual_seed(0)
    offsets = {bs: (torch.randint(0, 1 << 20, (B,), generator=g) % bs).to(dev) for bs in (4, 32)}

    # the two masks are the same (a small case, element by element)
    for bs in (4, 32):
        off = offsets[bs][:2]
        a = create_mask(division_mask_mod(64, torch.tensor(bs, device=dev), off), 2, None, 128, 128, device=dev)
        b = create_mask(training_mask_mod(64, bs, off), 2, None, 128, 128, device=dev)
        assert torch.equal(a, b), bs

    cases = [("causal L", L, lambda: create_block_mask(causal_mask_mod, None, None, L, L, device=dev)),
             ("causal 2L", 2 * L, lambda: create_block_mask(causal_mask_mod, None, None, 2 * L, 2 * L, device=dev))]
    for bs in (4, 32):
        off = offsets[bs]
        bs_t = torch.tensor(bs, device=dev)
        cases.append((f"diffusion bs {bs} (division)", 2 * L,
                      lambda off=off, bs_t=bs_t: create_block_mask(division_mask_mod(L, bs_t, off), B, None,
                                                                   2 * L, 2 * L, device=dev)))
        cases.append((f"diffusion bs {bs} (lookup)", 2 * L,
                      lambda off=off, bs=bs: create_block_mask(training_mask_mod(L, bs, off), B, None,
                                                               2 * L, 2 * L, device=dev)))
    cases.append(("diffusion bs 32 (tile ranges)", 2 * L, lambda: training_block_mask(L, 32, offsets[32])))
    off1 = offsets[32][:1]
    cases.append(("diffusion bs 32 (lookup, B 1)", 2 * L,
                  lambda: create_block_mask(training_mask_mod(L, 32, off1), None, None, 2 * L, 2 * L, device=dev)))
    print(f"B {B}, H {H}, D {D}, {dtype}, flex_attention compiled; median ms a call (kernels' bench_ms)")

    def timed(fn):  # do_bench over 10n ms on CUDA; n calls on the CPU
        return bench_ms(fn, warmup=3, rep=10 * args.n)

    print(f"{'mask':30s} {'T':>5s} {'tiles':>6s} {'partial':>7s} {'mask ms':>8s} {'fwd ms':>8s} {'fwd+bwd ms':>10s}")

    def row(name, T, make):
        bm = make()
        tiles = int(bm.kv_num_blocks.sum() + (bm.full_kv_num_blocks.sum() if bm.full_kv_num_blocks is not None else 0))
        per = bm.kv_num_blocks.shape[0]
        partial = int(bm.kv_num_blocks.sum()) // per
        tiles //= per
        t_mask = timed(make)
        q, k, v = (torch.randn(B, H, T, D, device=dev, dtype=dtype, requires_grad=True) for _ in range(3))
        if not cuda:  # no backward there
            q, k, v = (x.detach() for x in (q, k, v))
        t_fwd = timed(lambda: attn(q, k, v, block_mask=bm))
        go = torch.randn(B, H, T, D, device=dev, dtype=dtype)

        def fb():
            attn(q, k, v, block_mask=bm).backward(go)

        t_fb = timed(fb) if cuda else float("nan")
        print(f"{name:30s} {T:5d} {tiles:6d} {partial:7d} {t_mask:8.3f} {t_fwd:8.3f} {t_fb:10.3f}", flush=True)

    for name, T, make in cases:
        try:
            row(name, T, make)
        except Exception as e:  # noqa: BLE001 - one case's failure (CPU inductor, a B 1 mask) ends only its row
            print(f"{name:30s} {T:5d} failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}", flush=True)


if __name__ == "__main__":
    main()
