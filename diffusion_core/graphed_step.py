"""The server's graphed forward: `model.step(clean, block, cache)` as one CUDA-graph replay.

`GraphedStep` replays `graphed.GraphedDecoder`'s captured forward without the commit, for
`Sampler.step` (the core's single-request steps and the in-process server on CUDA);
`graphed_step(sampler)` captures one at the sampler's block size, or gives None where the eager
step serves.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import torch

from .graphed import GraphedDecoder
from .kv_cache import KVCache
from .sampler import Sampler

log = logging.getLogger(__name__)


class GraphedStep(GraphedDecoder):
    """`model.step(clean, block, cache)` as one CUDA-graph replay, for the core's `DecodeState` on CUDA
    (the server path: token healing, the syntax guard and the stops stay on the host, per step).

    The eager step launches ~250 kernels and syncs with the host; this one replays the captured
    `GraphedDecoder._forward` over its own static cache: the session cache's first `length` slots
    are copied in before the replay (a few MB at most, device to device) and the new clean tokens'
    K/V copied back after, so any session's `KVCache` works with the one graph. `fits` says which
    calls it takes: batch 1, non-shift models, 1 <= block <= b tokens, and clean <= b tokens or a
    longer prompt within max_seq_len (then its bucketed prefill graph runs first, and the step
    after it). On CPU the same code runs without a graph (the tests)."""

    FUSED_FIRST = False  # its steps start from the session's cache, one `model.step` at a time

    def __init__(self, sampler: Sampler, block_size: int, *, use_graphs: bool | None = None):
        if sampler.model.cfg.shift:
            raise ValueError("GraphedStep: shift models keep a bound state; decode them eagerly")
        super().__init__(sampler, dataclasses.replace(sampler.cfg, block_size=block_size),
                         use_graphs=use_graphs, lag=0)
        self.out = torch.zeros(self.b, self.model.cfg.vocab_size, device=self.device)

    def _step(self):  # what the graph holds: the forward alone, into a static output
        self.out.copy_(self._forward())

    def fits(self, clean: torch.Tensor, block: torch.Tensor, cache: KVCache) -> bool:
        n, b = clean.shape[1], block.shape[1]
        ck, sk = cache.k, self.cache.k  # (n_layer, batch, H, capacity, D)
        return ((n <= self.b or self._bucket(n, cache.length) is not None)
                and 1 <= b <= self.b and cache.length + n + b <= self.max_seq_len
                and clean.shape[0] == block.shape[0] == 1 and ck.shape[:3] == sk.shape[:3]
                and ck.shape[4] == sk.shape[4] and ck.dtype == sk.dtype and ck.device == sk.device)

    @torch.no_grad()
    def step(self, clean: torch.Tensor, block: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """As `model.step(clean, block, cache)` (logits (1, b, V), the clean tokens' K/V appended
        to `cache`) for a call that `fits`. The result is a view of a static buffer: read it before
        the next step."""
        self._capture()
        L, n, b = cache.length, clean.shape[1], block.shape[1]
        s = self.cache
        if L:
            s.k[:, :, :, :L].copy_(cache.k[:, :, :, :L])
            s.v[:, :, :, :L].copy_(cache.v[:, :, :, :L])
        s.pos.fill_(L)
        self.ids.fill_(self.tok.mask_id)
        pre = n > self.b  # a long prompt: its own bucketed prefill first, then the step
        if pre:
            self._run_prefill(clean[0], self._bucket(n, L))
            s.pos.fill_(L + n)
        else:
            self.ids[:n].copy_(clean[0])
        self.ids[self.b:self.b + b].copy_(block[0])
        self.n_prev.fill_(0 if pre else n)
        self.active.copy_(self.ar_b < b)
        self._run_step()
        if n:
            cache.k[:, :, :, L:L + n].copy_(s.k[:, :, :, L:L + n])
            cache.v[:, :, :, L:L + n].copy_(s.v[:, :, :, L:L + n])
        cache.advance(n)
        return self.out[:b][None]


def graphed_step(sampler: Sampler) -> GraphedStep | None:
    """A captured `GraphedStep` of the sampler's block size on CUDA, else None: on CPU, for causal
    and shift models, with DLLM_LS_GRAPHED_STEP=0, or when the capture fails (logged)."""
    m = sampler.model.cfg
    if sampler.device.type != "cuda" or m.causal or m.shift or os.environ.get("DLLM_LS_GRAPHED_STEP", "1") == "0":
        return None
    try:
        gs = GraphedStep(sampler, sampler.cfg.block_size)
        gs._capture()
    except Exception as e:  # noqa: BLE001 - the eager step serves
        log.warning("no graphed step, decoding eagerly: %s: %s", type(e).__name__, e)
        return None
    if gs.graph is None:
        log.warning("no graphed step, decoding eagerly: %s", gs.graph_error)
        return None
    return gs
