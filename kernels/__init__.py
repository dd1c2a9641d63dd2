"""Triton kernels, each with a pure-torch reference (tensors in, tensors out; nothing of models).

- `block_attention`: a block of queries (1-128) over a KV cache (up to 8k+ tokens) plus the block
  itself, split over the cache length (flash-decoding) for long caches.
- `commit`: logits -> argmax token, confidence (maxprob, margin, entropy) and the commit mask of a
  denoising step (threshold or factor rule), without materialising probabilities over the vocabulary.
- `fused_ce`: linear + cross-entropy over the vocabulary, chunked, forward and backward (training).
- `rope_kv`: RoPE of a step's queries and keys and their K/V cache write, in one launch.
- `block_update`: a block-diffusion step's bookkeeping after the logits (candidates, the commit
  rule, eos fill, the snapshot, the move to the next block), in one launch.
- `swiglu`: the feed-forward's gate, silu(gate) * up, in one launch.
- `copy_prior`: the copy prior of a block-diffusion step (a draft copied from the context backs
  the predictions that agree with it), in one launch.

Each module has `<name>_reference` (pure torch, what CPUs run), `<name>_triton` (the launcher),
`<name>` (picks Triton on CUDA when it is installed, the reference elsewhere) and `bench()`.
Set `DLLM_LS_NO_TRITON=1` to force the references on a GPU too.
"""

from ._triton import has_triton, use_triton

__all__ = ["has_triton", "use_triton"]
