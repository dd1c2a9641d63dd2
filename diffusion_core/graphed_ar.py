"""`GraphedAR`: the AR baseline's sync-free decoding at batch 1 (graphed.py's static cache, graph
capture and pipelined host loop): greedy, one token per replay, or with prompt lookup K + 1."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from .graphed import _Static
from .sampler import Completion, Sampler, SamplerConfig
from .stops import find_stop


class GraphedAR(_Static):
    """Greedy next-token decoding of the AR baseline: one token per replay, argmax on the device.
    With `cfg.lookup` = K > 0 (prompt lookup, as `Sampler._decode_ar`): each replay verifies K
    tokens drafted after the last one (`kernels.copy_prior.draft_triton`, or its reference, over
    a device copy of the cache's ids) and keeps those equal to its own greedy ones, plus its next
    token; the snapshot is [count, K + 1 tokens]."""

    def __init__(self, sampler: Sampler, cfg: SamplerConfig | None = None, *, use_graphs: bool | None = None,
                 lag: int = 1):
        if not sampler.model.cfg.causal:
            raise ValueError("GraphedAR is for the causal (AR) baseline")
        self.cfg = cfg or sampler.cfg
        K = self.lookup = self.cfg.lookup
        super().__init__(sampler, 4 + K, use_graphs=use_graphs, lag=lag)
        dev = self.device
        self.tok_in = torch.zeros(1, dtype=torch.long, device=dev)
        self.snap = torch.zeros(K + 2 if K else 1, dtype=torch.long, device=dev)
        self.one = torch.ones(1, 1, dtype=torch.bool, device=dev)
        self.fused_first = True
        if K:
            n = self.cache.capacity + K + 2
            self._ids_buffers(n)
            self.ar_k = torch.arange(K + 1, device=dev)
            self.causal_k = self.ar_k[:, None] >= self.ar_k[None, :]
            self.one_token = torch.ones(1, dtype=torch.long, device=dev)  # the first step's count ...
            self.no_tokens = torch.zeros(K, dtype=torch.long, device=dev)  # ... and its snapshot's padding
            self.draft_out = (torch.zeros(K, dtype=torch.long, device=dev),
                              torch.zeros((), dtype=torch.long, device=dev))
            self.draft_triton = self._copy_kernels_ok()  # the draft's Triton kernel runs (else its reference)

    def _next(self, logits: torch.Tensor):
        """The greedy next token (banned ones never) into the step's input and the snapshot."""
        nxt = logits.masked_fill(self.sampler.ban, float("-inf")).argmax().view(1)
        self.snap.copy_(torch.cat([self.one_token, nxt, self.no_tokens]) if self.lookup else nxt)
        self.tok_in.copy_(nxt)

    def _step_lookup(self):
        """One verify step: [last token ; K drafted] causally, the drafted tokens kept up to the
        first that differs from the model's own, the cache's position past them."""
        from ..kernels.copy_prior import draft_reference, draft_triton
        from .copy_prior import NMAX, NMIN

        K, pos, ar = self.lookup, self.cache.pos, self.ar_k
        H = self.hist.shape[0]
        if self.draft_triton:  # one launch: the last token into the ids, the draft after them
            d, n_d = draft_triton(self.hist, self.tok_in, pos, nmin=NMIN, nmax=NMAX, k=K, out=self.draft_out)
        else:
            self.hist.index_copy_(0, pos.clamp(max=H - 1).view(1), self.tok_in)
            d, n_d = draft_reference(self.hist, pos + 1, NMIN, NMAX, K)
        positions = (pos + ar).clamp(max=self.max_seq_len - 1)
        slots = (pos + ar).clamp(max=self.cache.capacity - 1)
        h = self._layers(torch.cat([self.tok_in, d]), positions, slots, self.causal_k)  # final-normed
        g = F.linear(h, self.model.tok_emb.weight).float().masked_fill(self.sampler.ban, float("-inf")).argmax(-1)
        m = ((d == g[:K]) & (ar[:K] < n_d)).int().cumprod(0).sum()  # drafted tokens kept
        self.hist.index_copy_(0, (pos + 1 + ar).clamp(max=H - 1), g)
        self.tok_in.copy_(g.gather(0, m.view(1)))
        self.snap.copy_(torch.cat([(m + 1).view(1), g]))
        self.cache.pos.copy_(pos + 1 + m)

    def _step(self):
        if self.lookup:
            return self._step_lookup()
        pos = self.cache.pos
        positions = pos.clamp(max=self.max_seq_len - 1).view(1)
        slots = pos.clamp(max=self.cache.capacity - 1).view(1)
        h = self._layers(self.tok_in, positions, slots, self.one)  # final-normed
        self._next(F.linear(h, self.model.tok_emb.weight).float()[0])  # (V,)
        self.cache.pos.copy_(pos + 1)

    def _first_step(self, T: int):
        """The prompt's prefill (ids and length from `ctl`) and its first token, in one graph."""
        ctl = self.ctl
        self.cache.pos.copy_(ctl[0])
        self.pf_n.copy_(ctl[1])
        self.pf_ids[:T].copy_(ctl[8:8 + T])
        self._prefill_step(T)
        self._next(F.linear(self.pf_h, self.model.tok_emb.weight).float())
        self.cache.pos.copy_(ctl[0] + ctl[1])

    def _scratch_state(self):
        self.cache.pos.fill_(1)
        self.tok_in.zero_()

    @torch.no_grad()
    def complete(self, prefix: str, suffix: str = "", mode: str = "line", cold: bool = False) -> Completion:
        s = self.sampler
        self._capture()
        t0 = time.perf_counter()
        if cold:  # (the device position is set by `_start`, whether it runs or declines)
            self.cache.reset(device=False)
        ctx, crlf, clean, max_tokens, cache, trace = s._prepare(prefix, suffix, mode, self.cache, self.cfg,
                                                                 heal=False, device_pos=False)
        K = self.lookup
        if K:
            self._prompt_ids(cache.tokens + clean)
        if not self._start(clean, ()):  # step 1: the prompt in one bucketed forward, and its argmax
            logits = self.model.extend(torch.tensor([clean], device=self.device), cache)[0]
            cache.append_tokens(clean)
            self._next(logits)
        st = {"generated": [], "stop": None, "text": ""}
        eos = self.tok.eos_id

        def process(row: torch.Tensor) -> bool:
            vals = row.tolist()
            count, toks = (vals[0], vals[1:]) if K else (1, vals)
            trace.steps += 1
            n, done = 0, False
            for t in toks[:count]:
                n += 1
                if t == eos:
                    st["stop"] = (len(st["text"]), "eos")
                    done = True
                    break
                st["generated"].append(t)
                st["text"] = s._text(st["generated"])
                st["stop"] = find_stop(st["text"], ctx, final=False)
                done = st["stop"] is not None or len(st["generated"]) >= max_tokens
                if done:
                    break
            trace.tokens += n
            trace.per_step.append(n)
            return done

        self._pipeline(self.snap, process, max_steps=max_tokens)
        cache.truncate(cache.length)
        return s._finish(st["stop"], st["text"], ctx, crlf, trace, t0)
