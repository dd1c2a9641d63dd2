"""Sync-free decoding at batch 1: static shapes, state on the device, CUDA graphs (gpt-fast style).

`Sampler.complete` reads every step back to the host (commit counts, stops on the text). Here the
whole denoising state lives in preallocated device tensors and ONE static step does, on the device:

    [prev block (b) ; block (b)] -> forward with the KV cache -> logits (b, V) -> fused commit
    -> block/masked updated -> eos fill -> if the block is finished: it becomes `prev` (its clean KV
    enters the cache in the next step), a new block of masks starts, gen += b_eff

so a block boundary needs no host decision either: the step always runs 2b tokens, and `n_prev`
(0 or the finished block's length) says whether the first b are real. `b_eff` = min(b, max_tokens
- generated) makes the last block shorter, as in the Sampler (its extra positions are inactive:
never committed, invisible as keys). The step is captured once as a CUDA graph and replayed; after
each replay a 2b+2-long snapshot (block, masked, committed count, b_eff) is copied to pinned memory
asynchronously, and the host applies the Sampler's stops to the snapshot of step s while the GPU
already runs step s+1 (`lag`): the GPU never waits for Python, and at most `lag` steps are wasted
at the end of a completion (their results are dropped).

The result equals `Sampler.complete` (text, stop, per-step commits, blocks): the first step
computes `model.step(prompt, block)` (one graph per prompt-length bucket, which also sets the block
state up from one host-to-device copy), later steps the same function with keys masked instead
of sliced (tests/diffusion_core/test_graphed.py checks it on CPU, where the same step runs eagerly
with torch ops). `GraphedAR` (graphed_ar.py) does the same for the autoregressive baseline: one
token per replay (or K + 1 with prompt lookup), argmax on the device.

Not covered (the Sampler keeps them): `should_stop` cancellation, batching of many requests and
token healing (its constrained first tokens; S1's prompts end at line starts, where it never applies).
Attention goes over the whole static buffer on the CPU path (masked), and on CUDA through the
block-attention kernel, which reads the length from the device and skips the empty splits.
"""

from __future__ import annotations

import functools
import logging
import time

import torch
import torch.nn.functional as F

from ..kernels import use_triton
from .kv_cache import KVCache
from .sampler import Completion, Sampler, SamplerConfig
from .stops import find_stop

log = logging.getLogger(__name__)


def _rope(x: torch.Tensor, cos2: torch.Tensor, sin2: torch.Tensor) -> torch.Tensor:
    """`model.apply_rope` with full-width tables (cos2 = [cos, cos], sin2 = [-sin, sin]): bit for bit
    the same values (a - b = a + (-b); the sums' order kept), 6 launches instead of 10."""
    d = x.shape[-1] // 2
    xf = x.float()
    return (xf * cos2 + torch.cat([xf[..., d:], xf[..., :d]], -1) * sin2).type_as(x)


def _fused_norm(mod, x: torch.Tensor) -> torch.Tensor:
    """RMSNorm in one kernel (torch's fused rms_norm on CUDA) instead of the module's eight; the
    module rounds to x's dtype before the weight, this once after it (1 ulp in bf16 at most)."""
    return F.rms_norm(x, (x.shape[-1],), mod.weight, mod.eps)


def prefill_buckets(top: int) -> list[int]:
    """The prompt lengths a prefill graph is captured for (a prompt pads up to the next one): steps
    of 64 up to 512, where cold prompts mostly fall, then doubling, and `top` (max_seq_len)."""
    small = [32, 64] + list(range(128, 513, 64))
    return sorted({t for t in small + [768, 1024, 1536, 2048, 3072, 4096] if t < top} | {top})


class _Static:
    """What both decoders share: the static KV cache, the attention over it, graph capture, and the
    pipelined host loop over snapshots."""

    def __init__(self, sampler: Sampler, capacity_margin: int, *, use_graphs: bool | None, lag: int):
        self.sampler, self.model, self.tok = sampler, sampler.model, sampler.tok
        self.device = sampler.device
        cfg = self.model.cfg
        self.max_seq_len = cfg.max_seq_len
        p = next(self.model.parameters())
        self.cache = KVCache(cfg.n_layer, 1, cfg.n_head, cfg.head_dim, cfg.max_seq_len + capacity_margin,
                             dtype=p.dtype, device=p.device)
        self.cuda = self.device.type == "cuda"
        self.use_graphs = self.cuda if use_graphs is None else (use_graphs and self.cuda)
        self.kernels = use_triton(p)  # the Triton kernels run here
        self.triton = self.kernels  # ... and serve the step's attention and commit
        self.lag = max(0, lag) if self.cuda else 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.graph_error: str | None = None
        self.steps_run = 0
        # the prompt's prefill, one static shape (and graph) per bucket of lengths
        top = cfg.max_seq_len
        self.buckets = prefill_buckets(top)
        self.pf_ids = torch.zeros(top, dtype=torch.long, device=p.device)
        self.pf_n = torch.zeros((), dtype=torch.long, device=p.device)
        self.pf_h = torch.zeros(cfg.dim, dtype=p.dtype, device=p.device)  # final-normed, last real token
        self.pf_ar = torch.arange(top, device=p.device)
        self.pf_causal = self.pf_ar[:, None] >= self.pf_ar[None, :]
        self.pf_graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.prefills_graphed = 0
        # the largest bucket whose prefill attends through the Triton kernel (masked SDPA over the
        # buffer above it), set before the first capture: every bucket (the kernel took 316-592 us
        # for buckets of 320-1,024 tokens on the H100, SDPA 730-760 us: scripts/profile_step.py)
        self.prefill_triton_max = 1024
        # a cold completion's start in one graph (`_first_step`, per bucket): its inputs travel in
        # one copy, [cache position, prompt length n, first block's length, max_tokens, line mode,
        # -, -, -, the prompt's ids], from pinned memory (`ctl_h`, written through `ctl_np`)
        self.fused_first = False  # the subclasses that have a `_first_step` say so
        self.first_rows = 0  # ... and how many rows it runs past the prompt's bucket
        self.ctl = torch.zeros(8 + top, dtype=torch.long, device=p.device)
        self.ctl_h = torch.zeros(8 + top, dtype=torch.long, pin_memory=self.cuda)
        self.ctl_np = self.ctl_h.numpy()
        self.first_graphs: dict[int, torch.cuda.CUDAGraph] = {}

    # --- the model over static buffers -------------------------------------------------------

    def _layers(self, ids, positions, slots, self_mask, triton: bool | None = None):
        """Transformer.forward for n_tok tokens at RoPE `positions`, their K/V written to cache
        `slots` (= pos + arange), attending to the cache's first `pos` slots and to each other
        under `self_mask` (n_tok, n_tok). Returns the final hidden states after the last norm.
        `triton` (default: `self.triton`) False: masked SDPA over the buffer."""
        m, cache = self.model, self.cache
        T = ids.shape[0]
        triton = self.triton if triton is None else triton
        H, D, C = m.cfg.n_head, m.cfg.head_dim, m.cfg.dim
        x = m.tok_emb(ids)[None]  # (1, T, C)
        cos, sin = m.rope_cos[positions], m.rope_sin[positions]  # (T, D/2)
        if not self.kernels:
            cos2 = torch.cat([cos, cos], -1)  # (T, D): RoPE as x * cos2 + rotate_half(x) * sin2, the
            sin2 = torch.cat([-sin, sin], -1)  # same products and sums as apply_rope, in fewer launches
        pos = cache.pos
        if not triton:  # static-shape SDPA over the whole buffer, masked
            from ..kernels.block_attention import full_mask

            mask = full_mask(pos, T, cache.capacity, self_mask, x.device)[None, None]
        norm = _fused_norm if self.cuda else (lambda mod, x: mod(x))
        for i, layer in enumerate(m.layers):
            att = layer.attn
            kc, vc = cache.k[i], cache.v[i]  # (1, H, capacity, D)
            if self.kernels:  # the norm, RoPE and the cache write in one launch after the projection
                from ..kernels.rope_kv import rope_kv_triton
                from ..kernels.swiglu import swiglu_triton

                wqkv, w13 = self._norm_folded()[i]
                eps = layer.attn_norm.eps
                q = rope_kv_triton(torch.mm(x[0], wqkv.t()), cos, sin, kc[0], vc[0], slots, H, x=x[0], eps=eps)
            else:
                qkv = att.wqkv(norm(layer.attn_norm, x)).view(1, T, 3, H, D).permute(2, 0, 3, 1, 4)  # (3, 1, H, T, D)
                q, k = _rope(qkv[:2], cos2, sin2)  # q and k in one pass
                kc.index_copy_(2, slots, k)
                vc.index_copy_(2, slots, qkv[2])
            if triton:
                from ..kernels.block_attention import block_attention_triton

                y = block_attention_triton(q, kc, vc, pos.view(1), self_mask)
            else:
                y = F.scaled_dot_product_attention(q, kc, vc, attn_mask=mask)
            y = y.transpose(1, 2).reshape(T, C)
            if self.kernels:  # the residual adds inside the GEMMs, in place (cuBLAS's beta = 1; an
                x = x[0].addmm_(y, att.wo.weight.t())  # out-of-place addmm copies x first): 2 launches fewer
                h = swiglu_triton(torch.mm(x, w13.t()), x=x, eps=layer.ffn_norm.eps)  # the norm rides along
                x = x.addmm_(h, layer.ffn.w2.weight.t())[None]
            else:
                x = x + att.wo(y[None])
                x = x + layer.ffn(norm(layer.ffn_norm, x))
        return norm(m.norm, x[0])

    def _norm_folded(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer, wqkv and w13 with their RMSNorm's weight folded in (W * g: the columns scaled):
        the kernel path projects x itself and `rope_kv` / `swiglu` apply x's 1/rms, so the
        norms cost no launch. Made once (the model's weights are fixed while it serves)."""
        if getattr(self, "_folded", None) is None:
            def fold(w, norm):
                return (w.float() * norm.weight.float()).to(w.dtype)

            self._folded = [(fold(layer.attn.wqkv.weight, layer.attn_norm), fold(layer.ffn.w13.weight, layer.ffn_norm))
                            for layer in self.model.layers]
        return self._folded

    def _prefill_step(self, T: int):
        """The first `pf_n` of `pf_ids[:T]` enter the cache at `pos` (causally, as `model.extend`),
        padded to the bucket T (the pads come after them: no real token sees one; their K/V land in
        scratch slots past the prompt). `pf_h` = the last real token's final hidden state."""
        pos = self.cache.pos
        ar = self.pf_ar[:T]
        positions = (pos + ar).clamp(max=self.max_seq_len - 1)
        slots = (pos + ar).clamp(max=self.cache.capacity - 1)  # real slots stay < capacity - 1
        h = self._layers(self.pf_ids[:T], positions, slots, self.pf_causal[:T, :T].contiguous(),
                         triton=self.kernels and T <= self.prefill_triton_max)
        self.pf_h.copy_(h.index_select(0, (self.pf_n - 1).clamp(min=0).view(1))[0])

    def _bucket(self, n: int, length: int) -> int | None:
        """The prefill bucket for n tokens onto a cache of `length`, None if they do not fit one."""
        if not 0 < n <= self.max_seq_len - length:  # (so the real slots stay < capacity - 1)
            return None
        return next((t for t in self.buckets if t >= n), None)

    def _run_prefill(self, ids: torch.Tensor, T: int):
        """The prefill of `ids` (n,) at the device position `cache.pos` (not advanced) in bucket T."""
        self.pf_ids[:ids.numel()].copy_(ids, non_blocking=self.cuda)
        self.pf_n.fill_(ids.numel())
        self._replay(self.pf_graphs, self._prefill_step, T)

    def _replay(self, graphs: dict, fn, T: int):
        """Bucket T's graph of `fn` replayed, or `fn(T)` run eagerly where none was captured."""
        g = graphs.get(T)
        if g is not None:
            g.replay()
            self.prefills_graphed += 1
        else:
            fn(T)

    def _prefill(self, clean: list[int]) -> bool:
        """Append `clean` to the cache in one bucketed forward (a graph replay on CUDA); `pf_h` holds
        the last token's final hidden state. False (nothing done) when no bucket holds it."""
        n = len(clean)
        T = self._bucket(n, self.cache.length)
        if T is None:
            return False
        self._run_prefill(torch.tensor(clean, dtype=torch.long), T)
        self.cache.advance(n)
        self.cache.append_tokens(clean)
        self.cache.bound = self.pf_h[None].clone() if self.model.cfg.shift else None
        return True

    def _start(self, clean: list[int], head: tuple[int, ...]) -> bool:
        """`_first_step` of `clean` on the cache (one copy and one replay), with the subclass's
        inputs `head` (ctl[2:5]); False when no bucket holds the prompt: then only the device
        position is set (to the cache's length), for the caller's other way in."""
        cache, n = self.cache, len(clean)
        T = self._bucket(n, cache.length) if self.fused_first else None
        if T is None or cache.length + T + self.first_rows > cache.capacity:
            cache.pos.fill_(cache.length)
            return False
        self.ctl_np[:2] = (cache.length, n)
        self.ctl_np[2:2 + len(head)] = head
        self.ctl_np[8:8 + n] = clean
        self.ctl[:8 + n].copy_(self.ctl_h[:8 + n], non_blocking=self.cuda)
        self._replay(self.first_graphs, self._first_step, T)
        self.steps_run += 1
        cache.advance(n, device=False)  # (the graph moved the device position)
        cache.append_tokens(clean)
        cache.bound = None
        return True

    def _ids_buffers(self, n: int):
        """The cache's token ids on the device (`hist`, n long), for the drafts of the copy prior
        and of prompt lookup, and the pinned buffer the prompt's travel through."""
        self.hist = torch.zeros(n, dtype=torch.long, device=self.device)
        self.hist_h = torch.zeros(n, dtype=torch.long, pin_memory=self.cuda)

    def _copy_kernels_ok(self) -> bool:
        """Whether `kernels.copy_prior`'s kernels serve `hist`: Triton here, at most 8k ids, and
        their own self-check passed (a failure turns them alone off, with a warning)."""
        if not (self.kernels and self.hist.numel() <= 8192):
            return False
        from ..kernels._triton import self_check

        err = self_check(self.device, ("copy_prior",))
        if err:
            log.warning("the copy prior's kernels are off, their torch references run: %s", err)
        return err is None

    def _prompt_ids(self, toks: list[int]):
        """The prompt's ids (the cache's after this call's prefill) into `hist`, one async copy;
        the steps then add the generated ones on the device."""
        self.hist_h[:len(toks)] = torch.tensor(toks, dtype=torch.long)
        self.hist[:len(toks)].copy_(self.hist_h[:len(toks)], non_blocking=self.cuda)

    def _run_step(self):
        if self.graph is not None:
            self.graph.replay()
        else:
            self._step()
        self.steps_run += 1

    @staticmethod
    def _record(fn, warmup: int, pool=None) -> "torch.cuda.CUDAGraph":
        """`fn` run `warmup` times on a side stream (Triton compiles, cuBLAS picks kernels), then
        captured as a CUDA graph (in `pool` when given)."""
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s), torch.no_grad():
            for _ in range(warmup):
                fn()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(g, pool=pool):
            fn()
        return g

    def _capture(self):
        """Warm up (Triton compiles, cuBLAS picks kernels) on scratch state, then capture `_step`."""
        if not self.use_graphs or self.graph is not None or self.graph_error is not None:
            return
        try:
            self._scratch_state()
            self.graph = self._record(self._step, warmup=3)
            self.cache.reset()  # the warm-up wrote scratch
        except Exception as e:  # noqa: BLE001 - decode eagerly (still sync-free) rather than fail
            self.graph_error = f"{type(e).__name__}: {e}"
            log.warning("CUDA graph capture failed, decoding eagerly: %s", self.graph_error)
            torch.cuda.synchronize()
            self.cache.reset()
            return
        try:  # the prefills (or the first steps), one graph per bucket, from an empty cache (what they
            # run is the same whatever the position and the tokens)
            graphs, fn = (self.first_graphs, self._first_step) if self.fused_first else (self.pf_graphs,
                                                                                        self._prefill_step)
            self.ctl[:5] = torch.tensor([0, 1, 1, 1, 0])  # a valid start: one prompt token, a block of one
            for T in self.buckets:
                graphs[T] = self._record(functools.partial(fn, T), warmup=1, pool=self.graph.pool())
        except Exception as e:  # noqa: BLE001 - the prompts run eagerly, the steps replay
            self.pf_graphs, self.first_graphs = {}, {}
            log.warning("prefill graph capture failed, prompts run eagerly: %s: %s", type(e).__name__, e)
            torch.cuda.synchronize()
        self.cache.reset()

    def _pipeline(self, first_snapshot: torch.Tensor, process, max_steps: int):
        """Run steps until `process(snapshot row)` says done; the GPU runs up to `lag` steps ahead."""
        R = self.lag + 2
        if getattr(self, "_host", None) is None:  # a ring of snapshots in pinned memory, and events
            self._host = torch.empty((R, self.snap.numel()), dtype=torch.long, pin_memory=self.cuda)
            self._events = [torch.cuda.Event() for _ in range(R)] if self.cuda else None
        host, events = self._host, self._events

        def launch(i, snap):
            host[i % R].copy_(snap, non_blocking=self.cuda)
            if events is not None:
                events[i % R].record()

        launch(0, first_snapshot)
        launched, processed = 1, 0
        while True:
            while launched < processed + 1 + self.lag and launched < max_steps:
                self._run_step()
                launch(launched, self.snap)
                launched += 1
            if events is not None:
                events[processed % R].synchronize()
            done = process(host[processed % R])
            processed += 1
            if done or processed >= max_steps:
                break
        # the steps launched past the last one (at most lag) are not waited for: the answer is known,
        # and the next request's work queues behind them on the stream (whatever they wrote, the
        # next request overwrites before it reads; the snapshot ring's slots are read only after
        # their own event)


class GraphedDecoder(_Static):
    """Block-diffusion decoding with a fixed block size, sync-free inside and across blocks."""

    FUSED_FIRST = True  # the prompt and the first block in one forward (not for shift models)

    def __init__(self, sampler: Sampler, cfg: SamplerConfig | None = None, *, use_graphs: bool | None = None,
                 lag: int = 1):
        if sampler.model.cfg.causal:
            raise ValueError("GraphedDecoder is for diffusion models; use GraphedAR for the AR baseline")
        self.cfg = cfg or sampler.cfg
        b = self.b = self.cfg.block_size
        super().__init__(sampler, 4 * b, use_graphs=use_graphs, lag=lag)
        self.triton = self.triton and 2 * b <= 256  # the kernels' block limits; SDPA beyond
        dev = self.device
        self.ids = torch.full((2 * b,), self.tok.mask_id, dtype=torch.long, device=dev)  # [prev ; block]
        self.masked = torch.zeros(b, dtype=torch.bool, device=dev)
        self.active = torch.zeros(b, dtype=torch.bool, device=dev)
        self.n_prev = torch.zeros((), dtype=torch.long, device=dev)
        self.gen = torch.zeros((), dtype=torch.long, device=dev)
        self.max_tok = torch.zeros((), dtype=torch.long, device=dev)
        self.snap = torch.zeros(2 * b + 2, dtype=torch.long, device=dev)  # block, masked, n committed, b_eff
        self.ar_b = torch.arange(b, device=dev)
        self.step_in = (torch.zeros(2 * b, dtype=torch.long, device=dev), torch.zeros(2 * b, dtype=torch.long, device=dev),
                        torch.zeros(2 * b, 2 * b, dtype=torch.bool, device=dev))  # positions, slots, mask
        self.ban = sampler.ban
        self.line_mode = torch.zeros((), dtype=torch.bool, device=dev)
        # shift models: the final hidden state of the last clean token (the block's first row)
        self.shift = self.model.cfg.shift
        self.bound = torch.zeros(self.model.cfg.dim, dtype=next(self.model.parameters()).dtype, device=dev)
        self.fused_first = not self.shift and type(self).FUSED_FIRST
        self.first_rows = b  # the first step's rows past the prompt's bucket
        self.first_ar = torch.arange(self.max_seq_len + b, device=dev)
        # the copy prior (copy_prior.py): the cache's token ids on the device, the prompt copied in
        # by `complete`, each finished block by the step that puts its KV into the cache
        self.copy = self.cfg.copy
        self.copy_triton = False  # its Triton kernel runs (else its torch reference)
        if self.copy > 0:
            self._ids_buffers(self.cache.capacity + b)
            self.copy_triton = self.triton and self._copy_kernels_ok()

    # --- device side --------------------------------------------------------------------------

    def _forward(self) -> torch.Tensor:
        """The step's forward: logits (b, V) of the block."""
        from ..kernels.block_update import step_inputs_reference, step_inputs_triton

        b, n_prev = self.b, self.n_prev
        args = (self.cache.pos, n_prev, self.active, self.max_seq_len, self.cache.capacity)
        positions, slots, self_mask = (step_inputs_triton(*args, out=self.step_in) if self.triton
                                       else step_inputs_reference(*args))
        h = self._layers(self.ids, positions, slots, self_mask)  # final-normed
        if self.shift:  # block row r from position r-1; -1: the last real prev row, else the kept bound
            last = h.index_select(0, (n_prev - 1).clamp(min=0).view(1))[0]
            self.bound.copy_(torch.where(n_prev > 0, last, self.bound))
            return F.linear(torch.cat([self.bound[None], h[b:2 * b - 1]]), self.model.tok_emb.weight).float()
        return F.linear(h[b:], self.model.tok_emb.weight).float()  # (b, V)

    def _update(self, logits: torch.Tensor, first: bool = False):
        """Commit (as DecodeState: in line mode nothing after a committed line break, a device flag
        so that one graph serves both modes), fill after eos, snapshot, and move to the next block
        when this one is finished: `kernels.block_update`, one launch on CUDA. Before it the copy
        prior (`kernels.copy_prior`, one launch), which also puts the previous block into the
        cache's ids unless `first` (the prompt is the previous block: the host wrote it)."""
        from ..kernels.block_update import BlockState, block_update_reference, block_update_triton
        from ..kernels.commit import confidence_reference, confidence_triton

        c = self.cfg
        st = BlockState(self.ids, self.masked, self.active, self.n_prev, self.gen, self.max_tok, self.cache.pos,
                        self.line_mode, self.sampler.newline, self.snap)
        conf_fn, update_fn = ((confidence_triton, block_update_triton) if self.triton
                              else (confidence_reference, block_update_reference))
        pred, conf = conf_fn(logits, c.confidence, self.ban)
        if self.copy > 0:  # the copy prior's positions pass the rule (block mode only)
            from ..kernels.copy_prior import copy_boost_reference, copy_boost_triton
            from .copy_prior import K, NMAX, NMIN

            boost = copy_boost_triton if self.copy_triton else copy_boost_reference
            conf = boost(self.hist, self.cache.pos, self.n_prev, self.ids, self.masked, pred, conf, self.line_mode,
                         threshold=self.copy, first=first, nmin=NMIN, nmax=NMAX, k=K)
        update_fn(pred, conf, st, eos_id=self.tok.eos_id, mask_id=self.tok.mask_id, max_seq_len=self.max_seq_len,
                  rule=c.rule, threshold=c.threshold, factor=c.factor, fallback=c.fallback,
                  revise=c.revise)

    def _step(self):
        self._update(self._forward())

    def _first_step(self, T: int):
        """A cold completion's first step, as `Sampler`'s: [prompt padded to T ; block] in one
        forward, whose previous block is the prompt (n tokens, causal, their K/V kept: the commit
        moves the position by n_prev = n), with the block state set up from `ctl` first."""
        from ..kernels.block_attention import MAX_QUERIES

        b, ctl, ar = self.b, self.ctl, self.first_ar[:T + self.b]
        pos, n = ctl[0], ctl[1]
        self.cache.pos.copy_(pos)
        self.ids.fill_(self.tok.mask_id)
        self.active.copy_(self.ar_b < ctl[2])
        self.masked.copy_(self.active)
        self.n_prev.copy_(n)
        self.gen.zero_()
        self.max_tok.copy_(ctl[3])
        self.line_mode.copy_(ctl[4] != 0)
        positions = torch.where(ar < T, pos + ar, pos + n + ar - T).clamp(max=self.max_seq_len - 1)
        slots = (pos + ar).clamp(max=self.cache.capacity - 1)
        i, j = ar[:, None], ar[None, :]
        block_key = torch.cat([self.active.new_zeros(T), self.active])[None, :]
        mask = torch.where(i < T, j <= i, (j < n) | block_key)  # prompt rows causal; block rows see
        h = self._layers(torch.cat([ctl[8:8 + T], self.ids[b:]]), positions, slots, mask,  # the prompt
                         triton=self.kernels and T + b <= MAX_QUERIES)  # and the live block
        self._update(F.linear(h[T:], self.model.tok_emb.weight).float(), first=True)

    def _first_unfused(self, clean: list[int], b0: int, max_tokens: int, line_mode: bool):
        """The first step where `_start` declines (a shift model, no bucket, an empty prompt): the
        prompt's bucketed prefill then the step, or else `model.step` of the prompt and the block."""
        b, cache = self.b, self.cache
        self.line_mode.fill_(line_mode)
        self._set_block(0, b0, max_tokens)
        if self._prefill(clean):
            if self.shift:
                self.bound.copy_(self.pf_h)
            self._run_step()
            return
        clean_t = torch.tensor([clean], dtype=torch.long, device=self.device).view(1, len(clean))
        logits = self.model.step(clean_t, self.ids[b:b + b0][None], cache)[0]  # (b0, V)
        cache.append_tokens(clean)
        if self.shift:
            self.bound.copy_(cache.bound[0])
        if b0 < b:
            logits = torch.cat([logits, logits.new_zeros(b - b0, logits.shape[1])])
        self._update(logits)

    def _scratch_state(self):
        self.cache.pos.fill_(1)
        self._set_block(0, self.b, 10 * self.b)

    def _set_block(self, n_prev: int, b_eff: int, max_tokens: int):
        self.ids.fill_(self.tok.mask_id)
        self.active.copy_(self.ar_b < b_eff)
        self.masked.copy_(self.active)
        self.n_prev.fill_(n_prev)
        self.gen.zero_()
        self.max_tok.fill_(max_tokens)

    # --- host side ----------------------------------------------------------------------------

    @torch.no_grad()
    def complete(self, prefix: str, suffix: str = "", mode: str = "line", cold: bool = False) -> Completion:
        """`Sampler.complete` with this decoder's block size and commit rule (cfg fixed at creation).
        The prompt's KV is reused from the previous call unless `cold`."""
        s, b = self.sampler, self.b
        self._capture()
        t0 = time.perf_counter()
        if cold:  # (the device position is set by `_start`, whether it runs or declines)
            self.cache.reset(device=False)
        ctx, crlf, clean, max_tokens, cache, trace = s._prepare(prefix, suffix, mode, self.cache, self.cfg,
                                                                 heal=False, device_pos=False)
        b0 = min(b, max_tokens)
        if self.copy > 0:
            self._prompt_ids(cache.tokens + clean)
        if not self._start(clean, (b0, max_tokens, int(ctx.mode == "line"))):  # (one copy, one replay)
            self._first_unfused(clean, b0, max_tokens, ctx.mode == "line")
        st = {"generated": [], "stop": None, "text": ""}
        eos = self.tok.eos_id

        def process(row: torch.Tensor) -> bool:
            snap = row.tolist()
            toks, masked, n, beff = snap[:b], snap[b:2 * b], snap[2 * b], snap[2 * b + 1]
            trace.steps += 1
            trace.tokens += n
            trace.per_step.append(n)
            live = masked[:beff]
            upto = live.index(1) if 1 in live else beff
            head = toks[:upto]
            if eos in head:
                st["text"] = s._text(st["generated"] + head[: head.index(eos)])
                stop = (len(st["text"]), "eos")
            else:
                st["text"] = s._text(st["generated"] + head)
                stop = find_stop(st["text"], ctx, final=False)
            if stop is None and 1 in live:
                return False
            st["generated"] += toks[:beff]
            trace.blocks += 1
            st["stop"] = stop
            return stop is not None or len(st["generated"]) >= max_tokens

        self._pipeline(self.snap, process, max_steps=max_tokens)
        cache.truncate(cache.length)  # the device position back to the clean prompt
        return s._finish(st["stop"], st["text"], ctx, crlf, trace, t0)


def graphed(sampler: Sampler, cfg: SamplerConfig | None = None, **kw):
    """The graphed decoder for the sampler's model: `graphed_ar.GraphedAR` for a causal model, else
    GraphedDecoder."""
    if sampler.model.cfg.causal:
        from .graphed_ar import GraphedAR

        return GraphedAR(sampler, cfg, **kw)
    return GraphedDecoder(sampler, cfg, **kw)
