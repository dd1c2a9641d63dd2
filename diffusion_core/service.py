"""The core's engine behind the daemon: the model, per-document sessions, one worker thread.

Everything that touches the model runs in one worker thread, in order: the checkpoint load, the
requests, checkpoint reloads (between requests, so a request never mixes two models). Callers in
other threads (the daemon's event loop) `submit` a request and get a `concurrent.futures.Future`.

Sessions: per document (uri) the KV cache of its last prompt, whose token ids the cache keeps;
the sampler reuses the longest common token prefix and computes only the rest, with results equal
to a cold start. Their memory is bounded: an LRU by bytes (`KVCache.nbytes`).

Scheduler: the worker thread runs every in-flight completion at once. Each one is a resumable
`DecodeState` (sampler.py); each turn of the loop admits the queued requests, drops the cancelled
ones, runs ONE forward for all the active completions (`Transformer.step_batch`: different
documents at different cache lengths, steps and block sizes), advances each and answers those
that are done. At most one request per document is active (it holds the session's cache); a later
one waits in the queue. A checkpoint reload waits for the active requests to drain (none is
admitted meanwhile), so a request never mixes two models. Repairs and causal (AR baseline)
models run one request at a time, whole, between batched steps.

Cancellation: a request's stop event is checked between steps; a newer request for the same
document from the same client supersedes the older (stopped at its next step, its cache kept:
between steps the cache holds only finished clean tokens).

CUDA graphs: on CUDA a step with one active completion replays the captured forward
(`Sampler.step` through a `graphed_step.GraphedStep`, captured when the model loads) instead of the eager
`model.step`, whose ~250 kernel launches and host syncs cost several ms per step on an H100; the
host side (commits, token healing, the syntax guard, stops) is the same `DecodeState`. Batches of
several requests, prompts longer than a block (the first step) and other block sizes run eagerly.
`DLLM_LS_GRAPHED_STEP=0` turns it off.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import threading
import time
from concurrent.futures import Future
from pathlib import Path

from ..errors import DllmError
from .rpc import CANCELLED, INTERNAL, INVALID_PARAMS, UNAVAILABLE, RpcError

log = logging.getLogger(__name__)

MODES = ("line", "block")
NO_MODEL_FIX = ("start the core with `dllm-ls core --checkpoint DIR` (a directory with config.json, "
                "model.safetensors, tokenizer.json; train one with `dllm-ls train`)")


def default_threads() -> int:
    """CPU threads for the model: $OMP_NUM_THREADS, else half the cores (at most 8), so the
    editor and the machine stay responsive (oversubscribed threads are much slower, not faster)."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, min(8, (os.cpu_count() or 2) // 2))


@dataclasses.dataclass(kw_only=True)
class CompleteParams:
    """The params map of `complete` (the fields of lsp_server's CompletionRequest)."""
    id: int
    uri: str
    prefix: str
    suffix: str = ""
    mode: str = "line"
    max_tokens: int = 64
    block_size: int | None = None
    threshold: float | None = None
    language: str = "python"  # the LSP languageId ("" when unknown): the syntax guard is for Python only

    @classmethod
    def parse(cls, p: dict, default_id: int) -> "CompleteParams":
        def want(name, kinds, default=dataclasses.MISSING, check=None, accepts=""):
            v = p.get(name, default)
            if v is dataclasses.MISSING:
                raise RpcError(INVALID_PARAMS, f"complete: missing {name!r}")
            if v is None and default is None:
                return None
            if isinstance(v, bool) or not isinstance(v, kinds) or (check and not check(v)):
                raise RpcError(INVALID_PARAMS, f"complete: {name} = {v!r:.60} is invalid (expected {accepts})")
            return v
        return cls(
            id=want("id", int, default_id, accepts="an int"),
            uri=want("uri", str, accepts="a string"),
            prefix=want("prefix", str, accepts="a string"),
            suffix=want("suffix", str, "", accepts="a string"),
            mode=want("mode", str, "line", lambda v: v in MODES, '"line" or "block"'),
            max_tokens=want("max_tokens", int, 64, lambda v: 1 <= v <= 1024, "1-1024"),
            block_size=want("block_size", int, None, lambda v: 1 <= v <= 256, "1-256 or nil"),
            threshold=want("threshold", (int, float), None, lambda v: 0 <= v <= 1, "0-1 or nil"),
            language=want("language", str, "python", accepts="a string"))


@dataclasses.dataclass(kw_only=True)
class Job:
    params: CompleteParams
    owner: object  # the connection: ids are unique per client, cancel/supersede stay within it
    future: Future = dataclasses.field(default_factory=Future)
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    reason: str = "cancelled"
    submitted: float = dataclasses.field(default_factory=time.perf_counter)
    started: bool = False
    progress: object = None  # refactor: progress(done, total, label), called in the worker thread


@dataclasses.dataclass
class _Running:
    """An admitted completion in the scheduler: its decoding state and its session's cache."""
    job: Job
    state: object  # sampler.DecodeState (None until begun)
    cache: object  # kv_cache.KVCache
    t0: float


class Sessions:
    """uri -> KVCache, least recently used first; at most `max_bytes` in all (the one in use is
    never evicted, so a single session larger than the budget still works)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._d: collections.OrderedDict[str, object] = collections.OrderedDict()
        self.evicted = 0

    def take(self, uri: str, new):
        cache = self._d.pop(uri, None)
        if cache is None:
            cache = new()
        self._d[uri] = cache
        while len(self._d) > 1 and self.nbytes() > self.max_bytes:
            self._d.popitem(last=False)
            self.evicted += 1
        return cache

    def drop(self, uri: str):
        self._d.pop(uri, None)

    def clear(self):
        self._d.clear()

    def nbytes(self) -> int:
        return sum(c.nbytes() for c in self._d.values())

    def __len__(self):
        return len(self._d)

    def __contains__(self, uri):
        return uri in self._d


class CoreService:
    """See the module docstring. `sampler` given: no load (tests); else `checkpoint` is loaded
    on `device` in the worker thread."""

    def __init__(self, *, checkpoint: str | Path | None = None, device: str = "auto", threads: int | None = None,
                 sampler=None, session_bytes: int = 512 << 20):
        self.checkpoint, self.device, self.threads = checkpoint, device, threads
        self.sampler = sampler
        self.sessions = Sessions(session_bytes)
        self._cond = threading.Condition()
        self._queue: collections.deque[Job] = collections.deque()
        self._jobs: dict[tuple[int, int], Job] = {}  # (id(owner), request id) -> job
        self._reload: Path | None = None
        self._stopping = False
        self.t_start = time.time()
        self.h = dict(state="ready" if sampler is not None else "loading", message="", fix="",
                      model="<given sampler>" if sampler is not None else str(checkpoint or ""),
                      device=str(sampler.device) if sampler is not None else device,
                      running=0, queued=0, started=0, completed=0, cancelled_queued=0,
                      cancelled_running=0, steps=0, forwards=0, max_batch=0,
                      max_inflight_per_document=1,
                      reloads=0, reload_error="", pid=os.getpid())
        self._reused = 0
        self._worker = threading.Thread(target=self._work, name="dllm-core-worker", daemon=True)

    def start(self) -> "CoreService":
        self._worker.start()
        return self

    def stop(self):
        with self._cond:
            self._stopping = True
            for job in self._jobs.values():
                job.stop.set()
            self._cond.notify_all()

    def join(self, timeout: float | None = None):
        self._worker.join(timeout)

    # --- the caller's side (any thread) -------------------------------------------------------

    def submit(self, params: dict, owner, default_id: int) -> Future:
        """Queue a completion; the future's result is the result map, or it raises RpcError."""
        return self._submit(Job(params=CompleteParams.parse(params, default_id), owner=owner))

    def submit_repair(self, params: dict, owner, default_id: int) -> Future:
        """Queue a `repair` (diffusion_core/repair.py); it runs in the worker like a completion."""
        from .repair import RepairRequest

        try:
            req = RepairRequest.parse(params, default_id)
        except ValueError as e:
            raise RpcError(INVALID_PARAMS, str(e)) from None
        return self._submit(Job(params=req, owner=owner))

    def submit_refactor(self, params: dict, owner, default_id: int, progress=None) -> Future:
        """Queue a `refactor` (diffusion_core/refactor.py): repair every block of a file, or
        propagate an edit; it runs in the worker like a repair. `progress(done, total, label)` is
        called from the worker thread before each block."""
        from .refactor import RefactorRequest

        try:
            req = RefactorRequest.parse(params, default_id)
        except ValueError as e:
            raise RpcError(INVALID_PARAMS, str(e)) from None
        return self._submit(Job(params=req, owner=owner, progress=progress))

    def _submit(self, job: Job) -> Future:
        with self._cond:
            owner = job.owner
            for other in self._jobs.values():  # the newer request for a document supersedes the older
                if (other.owner is owner and other.params.uri == job.params.uri
                        and type(other.params) is type(job.params)):
                    other.reason = "superseded by a newer request for the document"
                    other.stop.set()
            key = (id(owner), job.params.id)
            if key in self._jobs:
                raise RpcError(INVALID_PARAMS, f"complete: request id {job.params.id} is already in flight")
            self._jobs[key] = job
            self._queue.append(job)
            self.h["queued"] += 1
            self._cond.notify_all()
        return job.future

    def cancel(self, owner, request_id) -> bool:
        with self._cond:
            job = self._jobs.get((id(owner), request_id))
            if job is not None:
                job.stop.set()
                self._cond.notify_all()
        return job is not None

    def cancel_owner(self, owner):
        """The client went away: stop all of its requests."""
        with self._cond:
            for job in self._jobs.values():
                if job.owner is owner:
                    job.reason = "the client disconnected"
                    job.stop.set()
            self._cond.notify_all()

    def close_document(self, uri: str):
        with self._cond:
            self._queue.append(uri)  # handled in order by the worker thread, which owns the sessions
            self._cond.notify_all()

    def request_reload(self, path: str | Path):
        with self._cond:
            self._reload = Path(path)
            self._cond.notify_all()

    def health(self) -> dict:
        with self._cond:
            return dict(self.h)

    def stats(self) -> dict:
        with self._cond:
            return {**self.h, "uptime_s": round(time.time() - self.t_start, 3), "sessions": len(self.sessions),
                    "session_bytes": self.sessions.nbytes(), "session_budget_bytes": self.sessions.max_bytes,
                    "sessions_evicted": self.sessions.evicted, "reused_tokens": self._reused,
                    "graphed_forwards": getattr(self.sampler, "graphed_steps", 0)}

    # --- the worker thread --------------------------------------------------------------------

    def _work(self):
        """The scheduler loop (module docstring): admit, drop the cancelled, one batched step."""
        if self.sampler is None:
            self._load()
        elif getattr(getattr(self.sampler, "device", None), "type", None) == "cuda":  # a given sampler
            self.sampler.use_cuda_graph()
        active: list[_Running] = []
        while True:
            with self._cond:
                while not self._queue and self._reload is None and not self._stopping and not active:
                    self._cond.wait()
                if self._stopping:
                    for job in self._queue:
                        if isinstance(job, Job):
                            self._end(job, error=RpcError(CANCELLED, "the core is shutting down"))
                    for r in active:
                        self._close(r, error=RpcError(CANCELLED, "the core is shutting down"))
                    return
                reload, admitted = None, []
                if self._reload is not None:
                    if not active:  # else wait for the active requests to drain, admitting none
                        reload, self._reload = self._reload, None
                else:
                    busy = {r.job.params.uri for r in active}
                    waiting: collections.deque = collections.deque()
                    for item in self._queue:  # in order; a document's items wait while it is busy
                        uri = item if isinstance(item, str) else item.params.uri
                        if uri in busy:
                            waiting.append(item)
                            continue
                        admitted.append(item)
                        if isinstance(item, Job) and not item.stop.is_set():
                            busy.add(uri)  # a superseded job only ends: the next one starts this turn
                    self._queue = waiting
            if reload is not None:
                self._do_reload(reload)
            for item in admitted:
                if isinstance(item, str):
                    with self._cond:
                        self.sessions.drop(item)
                elif (r := self._begin(item)) is not None:
                    active.append(r)
            if active:
                active = self._step(active)

    def _begin(self, job: Job) -> "_Running | None":
        """Start a queued job: a `DecodeState` over its document's session; None when it ended at
        once (cancelled, no model, bad params) or ran whole (repairs, causal models)."""
        if (job.stop.is_set() or self.sampler is None or not isinstance(job.params, CompleteParams)
                or self.sampler.model.cfg.causal):
            self._run(job)
            return None
        p = job.params
        with self._cond:
            self._mark_started(job)
            cache = self.sessions.take(p.uri, self.sampler.new_cache)
        r = _Running(job=job, state=None, cache=cache, t0=time.perf_counter())
        try:
            r.state = self.sampler.begin(p.prefix, p.suffix, mode=p.mode, cache=cache, cfg=self._cfg(p),
                                         language=p.language)
        except (DllmError, ValueError) as e:
            self._close(r, error=RpcError(INVALID_PARAMS, f"complete: {e}"))
            return None
        except Exception as e:
            log.exception("sampling failed")
            self._close(r, error=RpcError(INTERNAL, f"the core failed ({type(e).__name__}: {e}); see its log"))
            return None
        return r

    def _step(self, active: list["_Running"]) -> list["_Running"]:
        """One batched forward for every active request that is not cancelled; returns those not done."""
        live = []
        for r in active:  # cancellation between steps
            if r.job.stop.is_set():
                with self._cond:
                    self.h["cancelled_running"] += 1
                self._close(r, error=RpcError(CANCELLED, r.job.reason))
            else:
                live.append(r)
        if not live:
            return []
        model = self.sampler.model
        try:
            inputs = [(*r.state.next_inputs(), r.cache) for r in live]
            rows = [r.state.rows() for r in live]  # the commit candidates (None on CUDA: all)
            if len(live) == 1 and hasattr(self.sampler, "step"):  # graphed where it fits (module docstring)
                logits = [self.sampler.step(*inputs[0], rows[0])]
            elif hasattr(model, "step_batch"):
                logits = model.step_batch(inputs, rows) if getattr(model, "step_rows", False) else model.step_batch(inputs)
            else:  # a stand-in model (tests): the same scheduling, one forward per request
                logits = [model.step(*x) for x in inputs]
        except Exception as e:
            log.exception("batched step failed")
            for r in live:
                self._close(r, error=RpcError(INTERNAL, f"the core failed ({type(e).__name__}: {e}); see its log"))
            return []
        with self._cond:
            self.h["steps"] += len(live)
            self.h["forwards"] += 1
            self.h["max_batch"] = max(self.h["max_batch"], len(live))
        still = []
        for r, lg, rw in zip(live, logits, rows):
            try:
                done = r.state.advance(lg[0], rw)
            except Exception as e:
                log.exception("sampling failed")
                self._close(r, error=RpcError(INTERNAL, f"the core failed ({type(e).__name__}: {e}); see its log"))
                continue
            if not done:
                still.append(r)
                continue
            out, p = r.state.result(), r.job.params
            t = out.trace
            with self._cond:
                self.h["completed"] += 1
                self._reused += t.reused_tokens
            self._close(r, result=dict(id=p.id, text=out.text.replace("\r\n", "\n"), stop=out.stop,
                                       steps=t.steps, tokens=t.tokens, prompt_tokens=t.prompt_tokens,
                                       reused_tokens=t.reused_tokens, queue_ms=(r.t0 - r.job.submitted) * 1000,
                                       compute_ms=(time.perf_counter() - r.t0) * 1000))
        return still

    def _close(self, r: "_Running", result=None, error: RpcError | None = None):
        """End an active request; a cache left inconsistent (a failed forward) is never kept."""
        with self._cond:
            self.h["running"] -= 1
            if r.cache.length != len(r.cache.tokens):
                self.sessions.drop(r.job.params.uri)
        self._end(r.job, result=result, error=error)

    def _cfg(self, p: CompleteParams):
        cfg = self.sampler.cfg
        return dataclasses.replace(cfg, max_tokens=p.max_tokens,
                                   block_size=p.block_size if p.block_size is not None else cfg.block_size,
                                   threshold=float(p.threshold) if p.threshold is not None else cfg.threshold)

    def _load(self):
        import torch

        from .checkpoint import CheckpointError, freeze_heap, load_checkpoint, resolve_checkpoint
        from .sampler import Sampler, SamplerConfig

        torch.set_num_threads(self.threads or default_threads())
        try:
            path = resolve_checkpoint(self.checkpoint)
            device = self.device
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            t0 = time.perf_counter()
            model, tok = load_checkpoint(path, device=device)
            self.sampler = Sampler(model, tok, SamplerConfig.for_server())
            self.sampler.use_cuda_graph()
            freeze_heap()
            self._set(state="ready", model=str(path), device=device, message="", fix="")
            log.info("model %s loaded on %s in %.1f s", path, device, time.perf_counter() - t0)
        except CheckpointError as e:
            self._set(state="error", message=f"no model: {e}", fix=NO_MODEL_FIX)
            log.error("no model: %s", e)
        except Exception as e:
            log.exception("model load failed")
            self._set(state="error", message=f"cannot load the model ({type(e).__name__}: {e})",
                      fix="check the checkpoint and --device (cpu or cuda)")

    def _do_reload(self, path: Path):
        """Load `path` beside the serving model; swap it in only if it loads and its forward is
        finite. A broken checkpoint is refused with a logged reason; the old model keeps serving."""
        import torch

        from .checkpoint import freeze_heap, load_checkpoint
        from .sampler import Sampler

        device = str(self.sampler.device) if self.sampler is not None else self.device
        try:
            model, tok = load_checkpoint(path, device="cpu" if device == "auto" else device)
            sampler = Sampler(model, tok, self.sampler.cfg if self.sampler is not None else None)
            ids = torch.tensor([tok.encode("def f(x):\n")], device=sampler.device)
            cache = sampler.new_cache()
            with torch.no_grad():
                logits = model.step(ids, torch.full((1, 2), tok.mask_id, device=sampler.device), cache)
            if not bool(torch.isfinite(logits).all()):
                raise DllmError(f"{path}: the model's logits are not finite (NaN or inf weights)")
        except Exception as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            log.warning("checkpoint %s refused, the old model keeps serving: %s", path, reason)
            self._set(reload_error=f"{path}: {reason}")
            return
        sampler.use_cuda_graph()
        with self._cond:
            self.sampler = sampler
            self.sessions.clear()  # the caches belong to the old weights
            self.h["reloads"] += 1
        freeze_heap()
        self._set(state="ready", model=str(path), message="", fix="", reload_error="")
        log.info("checkpoint %s loaded (reload %d)", path, self.h["reloads"])

    def _set(self, **kw):
        with self._cond:
            self.h.update(kw)

    def _mark_started(self, job: Job):
        """Queued -> running, under self._cond."""
        job.started = True
        self.h["queued"] -= 1
        self.h["running"] += 1
        self.h["started"] += 1

    def _end(self, job: Job, result=None, error: RpcError | None = None):
        """Worker or stop(): resolve the job's future and forget it (lock held or not)."""
        with self._cond:
            self._jobs.pop((id(job.owner), job.params.id), None)
            if not job.started:
                self.h["queued"] -= 1
                if error is not None and error.code == CANCELLED:
                    self.h["cancelled_queued"] += 1
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)

    def _run(self, job: Job):
        from .sampler import CompletionCancelled

        if job.stop.is_set():
            return self._end(job, error=RpcError(CANCELLED, job.reason))
        if self.sampler is None:
            return self._end(job, error=RpcError(UNAVAILABLE, (self.h["message"] or "no model loaded")
                                                 + (f"; fix: {self.h['fix']}" if self.h["fix"] else "")))
        if not isinstance(job.params, CompleteParams):
            return self._run_repair(job)
        p = job.params
        with self._cond:
            self._mark_started(job)
        t0 = time.perf_counter()

        def should_stop() -> bool:
            if job.stop.is_set():
                return True
            with self._cond:
                self.h["steps"] += 1
            return False

        try:
            cfg = self._cfg(p)
            with self._cond:
                cache = self.sessions.take(p.uri, self.sampler.new_cache)
            try:
                out = self.sampler.complete(p.prefix, p.suffix, mode=p.mode, cache=cache, cfg=cfg,
                                            should_stop=should_stop, language=p.language)
            except BaseException:
                if cache.length != len(cache.tokens):  # never keep a cache left inconsistent
                    with self._cond:
                        self.sessions.drop(p.uri)
                raise
        except CompletionCancelled:
            with self._cond:
                self.h["cancelled_running"] += 1
            return self._end(job, error=RpcError(CANCELLED, job.reason))
        except (DllmError, ValueError) as e:
            return self._end(job, error=RpcError(INVALID_PARAMS, f"complete: {e}"))
        except Exception as e:
            log.exception("sampling failed")
            return self._end(job, error=RpcError(INTERNAL, f"the core failed ({type(e).__name__}: {e}); see its log"))
        finally:
            with self._cond:
                self.h["running"] -= 1
        t = out.trace
        with self._cond:
            self.h["completed"] += 1
            self._reused += t.reused_tokens
        self._end(job, result=dict(id=p.id, text=out.text.replace("\r\n", "\n"), stop=out.stop, steps=t.steps,
                                   tokens=t.tokens, prompt_tokens=t.prompt_tokens, reused_tokens=t.reused_tokens,
                                   queue_ms=(t0 - job.submitted) * 1000,
                                   compute_ms=(time.perf_counter() - t0) * 1000))

    def _run_repair(self, job: Job):
        """Worker: one `repair` (the model judges the function; see diffusion_core/repair.py)."""
        from .refactor import RefactorRequest, run_refactor
        from .repair import Repairer, RepairError, run_repair
        from .sampler import CompletionCancelled

        name = "refactor" if isinstance(job.params, RefactorRequest) else "repair"
        run = run_refactor if name == "refactor" else run_repair

        with self._cond:
            self._mark_started(job)
        try:
            s = self.sampler
            kw = {"progress": job.progress} if name == "refactor" and job.progress is not None else {}
            result = run(Repairer(s.model, s.tok), job.params, should_stop=job.stop.is_set, **kw)
        except CompletionCancelled:
            with self._cond:
                self.h["cancelled_running"] += 1
            return self._end(job, error=RpcError(CANCELLED, job.reason))
        except (RepairError, DllmError, ValueError) as e:
            return self._end(job, error=RpcError(INVALID_PARAMS, f"{name}: {e}"))
        except Exception as e:
            log.exception("%s failed", name)
            return self._end(job, error=RpcError(INTERNAL, f"the core failed ({type(e).__name__}: {e}); see its log"))
        finally:
            with self._cond:
                self.h["running"] -= 1
        with self._cond:
            self.h["completed"] += 1
        self._end(job, result=result)
