"""The KV cache of clean tokens.

Layout: k and v are preallocated buffers of shape (n_layer, B, H, capacity, D). Slots
[0, length) hold the exact keys/values of clean tokens (prompt and finished blocks), which
attend causally and so never change once written. During a step, the positions after
`length` are scratch: the clean tokens being appended and the block being denoised are written
there, attended to, and only the clean ones are kept (by `advance`). The block being denoised
never enters the cache; it is recomputed causally when it is finished (fused with the first
step of the next block).
"""

from __future__ import annotations

import torch


class KVCache:
    def __init__(self, n_layer: int, batch: int, n_head: int, head_dim: int, capacity: int,
                 dtype=torch.float32, device=None):
        shape = (n_layer, batch, n_head, capacity, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.capacity = capacity
        self.pos = torch.zeros((), dtype=torch.long, device=device)  # length as a tensor, for compiled code
        self._length = 0
        self.tokens: list[int] = []  # the clean token ids behind the cache (row 0), for prefix reuse
        # a shift model's final hidden state (B, C) of the last cached token, which gives the logits
        # of a block's first position; None when unknown (a new or truncated cache)
        self.bound: torch.Tensor | None = None

    @classmethod
    def for_model(cls, model, batch: int = 1, capacity: int | None = None) -> "KVCache":
        cfg = model.cfg
        p = next(model.parameters())
        return cls(cfg.n_layer, batch, cfg.n_head, cfg.head_dim, capacity or cfg.max_seq_len,
                   dtype=p.dtype, device=p.device)

    @property
    def length(self) -> int:
        return self._length

    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor, n_append: int):
        """Write this step's keys/values (B, H, T, D) after the clean ones and return all of them."""
        T = k.shape[2]
        end = self._length + T
        if end > self.capacity:
            raise ValueError(f"KV cache overflow: {end} > capacity {self.capacity}")
        self.k[layer, :, :, self._length:end] = k
        self.v[layer, :, :, self._length:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, n: int, device: bool = True):
        """Keep the first n positions written by the last step (the clean ones). device=False: the
        device position `pos` was moved already (by a captured step)."""
        self._length += n
        if device:
            self.pos.fill_(self._length)

    def append_tokens(self, ids: list[int]):
        self.tokens.extend(ids)

    def truncate(self, n: int, device: bool = True):
        """Keep the first n clean tokens (a common prefix); the rest is recomputed when needed.
        device=False leaves `pos` to the caller (a captured step that sets it)."""
        if not 0 <= n <= self._length:
            raise ValueError(f"cannot truncate a cache of {self._length} tokens to {n}")
        if n < self._length:
            self.bound = None
        self._length = n
        if device:
            self.pos.fill_(n)
        del self.tokens[n:]

    def reset(self, device: bool = True):
        self.truncate(0, device)


def common_prefix_len(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
