"""`InProcessCore`: the CoreClient that runs the sampler in this process, until the daemon exists.

One worker thread per process runs everything that touches the model, in order: first the
checkpoint load, then the requests, one at a time (the event loop never blocks on the model).
Each document keeps its KV cache (an LRU of `max_documents`), so a keystroke that appends to
the prefix reuses the cached prompt. A cancelled request is dropped before it starts, or stops
at the next denoising step through the sampler's `should_stop` hook.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from ..diffusion_core.service import default_threads
from ..errors import DllmError
from .core_client import CompletionCancelled, CompletionRequest, CompletionResult, CoreError, CoreHealth

log = logging.getLogger(__name__)

NO_MODEL_FIX = ("pass `--checkpoint DIR` to `dllm-ls serve`, or set the `dllm.checkpoint` setting, to a "
                "directory with config.json, model.safetensors and tokenizer.json (train one with "
                "`dllm-ls train`)")


@dataclasses.dataclass(kw_only=True)
class _Job:
    request: CompletionRequest
    submitted: float
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    started: bool = False


class InProcessCore:
    """The diffusion core in this process (see the module docstring)."""

    def __init__(self, *, checkpoint: str | Path | None = None, device: str = "auto",
                 max_documents: int = 4, threads: int | None = None, sampler=None):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dllm-core")
        self._lock = threading.Lock()
        self._jobs: dict[int, _Job] = {}
        self._inflight: dict[str, int] = {}
        self._caches: OrderedDict[str, object] = OrderedDict()  # uri -> KVCache, worker thread only
        self.max_documents = max_documents
        self._health = CoreHealth(state="loading", device=device)
        self._sampler = sampler
        if sampler is not None:
            self._health = CoreHealth(state="ready", model="<given sampler>", device=str(sampler.device))
            self._loaded: Future = Future()
            self._loaded.set_result(None)
        else:
            self._loaded = self._pool.submit(self._load, checkpoint, device, threads)

    # --- loading ------------------------------------------------------------------------------

    def _load(self, checkpoint, device: str, threads: int | None):
        """Worker thread: load the checkpoint; failures become the health's message and fix."""
        try:
            import torch

            torch.set_num_threads(threads or default_threads())

            from ..diffusion_core.checkpoint import CheckpointError, freeze_heap, load_checkpoint, resolve_checkpoint
            from ..diffusion_core.sampler import Sampler, SamplerConfig

            try:
                path = resolve_checkpoint(checkpoint)
            except CheckpointError:
                self._set(state="error", message="no model: no checkpoint was given and no default model "
                          "is installed", fix=NO_MODEL_FIX)
                return
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            t0 = time.perf_counter()
            model, tok = load_checkpoint(path, device=device)
            self._sampler = Sampler(model, tok, SamplerConfig.for_server())
            self._sampler.use_cuda_graph()  # on CUDA: steps replay a captured forward (sampler.py)
            freeze_heap()
            self._set(state="ready", model=str(path), device=device, message="")
            log.info("model %s loaded on %s in %.1f s", path, device, time.perf_counter() - t0)
        except DllmError as e:
            self._set(state="error", message=f"cannot load the model: {e}", fix=NO_MODEL_FIX)
        except Exception as e:  # a torch failure, out of memory: still one line for the user
            log.exception("model load failed")
            self._set(state="error", message=f"cannot load the model ({type(e).__name__}: {e})",
                      fix="check the checkpoint and the device setting (`dllm.device`: cpu or cuda)")

    def _set(self, **changes):
        with self._lock:
            self._health = dataclasses.replace(self._health, **changes)

    async def wait_ready(self) -> CoreHealth:
        """Wait for the model load to finish (successfully or not) and return the health."""
        await asyncio.wrap_future(self._loaded)
        return self.health()

    # --- requests -----------------------------------------------------------------------------

    async def complete(self, request: CompletionRequest) -> CompletionResult:
        job = _Job(request=request, submitted=time.perf_counter())
        with self._lock:
            self._jobs[request.id] = job
            n = self._inflight.get(request.uri, 0) + 1
            self._inflight[request.uri] = n
            self._health.queued += 1
            self._health.max_inflight_per_document = max(self._health.max_inflight_per_document, n)
        fut = self._pool.submit(self._run, job)
        fut.add_done_callback(lambda f: self._finished(job, f))
        try:
            return await asyncio.wrap_future(fut)
        except asyncio.CancelledError:  # the awaiting handler was cancelled ($/cancelRequest)
            job.stop.set()
            try:  # returns within one denoising step: the request has left the core when we answer
                await asyncio.wrap_future(fut)
            except BaseException:
                pass
            raise

    async def repair(self, query) -> dict:
        """`CoreClient.repair` in this process: runs in the worker thread, in order with completions;
        the awaiting task's cancellation stops it at its next model call."""
        from ..diffusion_core.repair import RepairRequest, run_repair

        return await self._whole("repair", lambda stop: run_repair(
            self._repairer(), RepairRequest.parse(query.to_params(), query.id), should_stop=stop))

    async def refactor(self, query, progress=None) -> dict:
        """`CoreClient.refactor` in this process (like `repair`); `progress(done, total, label)`
        is called on the event loop before each block."""
        from ..diffusion_core.refactor import RefactorRequest, run_refactor

        loop = asyncio.get_running_loop()
        report = None
        if progress is not None:
            def report(done, total, label):  # worker thread -> the event loop
                try:
                    loop.call_soon_threadsafe(progress, done, total, label)
                except RuntimeError:  # the loop is closed
                    pass
        return await self._whole("refactor", lambda stop: run_refactor(
            self._repairer(), RefactorRequest.parse(query.to_params(), query.id), should_stop=stop,
            progress=report))

    def _repairer(self):
        from ..diffusion_core.repair import Repairer

        if self._sampler is None:
            h = self.health()
            raise CoreError(h.message or "the model is not loaded", h.fix)
        return Repairer(self._sampler.model, self._sampler.tok)

    async def _whole(self, name: str, run) -> dict:
        """Run `run(should_stop)` (a repair or a refactor) in the worker thread; errors become one
        line (CoreError), cancelling the awaiting task stops it at its next model call."""
        from ..diffusion_core.repair import RepairError
        from ..diffusion_core.sampler import CompletionCancelled as SamplerCancelled

        stop = threading.Event()

        def work():
            try:
                return run(stop.is_set)
            except SamplerCancelled:
                raise CompletionCancelled from None
            except CoreError:
                raise
            except (RepairError, ValueError) as e:
                raise CoreError(f"cannot {name}: {e}") from None
            except Exception as e:
                log.exception("%s failed", name)
                raise CoreError(f"the core failed ({type(e).__name__}: {e})",
                                "see the server log (`dllm-ls serve --log-file PATH`) and report it") from None

        fut = self._pool.submit(work)
        try:
            return await asyncio.wrap_future(fut)
        except asyncio.CancelledError:
            stop.set()
            fut.cancel()
            try:
                await asyncio.wrap_future(fut)
            except BaseException:
                pass
            raise

    def _finished(self, job: _Job, fut: Future):
        with self._lock:
            self._jobs.pop(job.request.id, None)
            uri = job.request.uri
            self._inflight[uri] -= 1
            if not self._inflight[uri]:
                del self._inflight[uri]
            if not job.started:
                self._health.queued -= 1
                if fut.cancelled() or isinstance(fut.exception(), CompletionCancelled):
                    self._health.cancelled_queued += 1

    def _run(self, job: _Job) -> CompletionResult:
        """Worker thread: sample one request."""
        from ..diffusion_core.sampler import CompletionCancelled as SamplerCancelled

        if job.stop.is_set():
            raise CompletionCancelled
        if self._sampler is None:
            h = self.health()
            raise CoreError(h.message or "the model is not loaded", h.fix)
        req = job.request
        with self._lock:
            job.started = True
            self._health.queued -= 1
            self._health.running += 1
            self._health.started += 1
        t0 = time.perf_counter()

        def should_stop() -> bool:
            if job.stop.is_set():
                return True
            with self._lock:
                self._health.steps += 1  # a model step follows every False
            return False

        try:
            cfg = self._sampler.cfg
            cfg = dataclasses.replace(
                cfg, max_tokens=req.max_tokens,
                block_size=req.block_size if req.block_size is not None else cfg.block_size,
                threshold=req.threshold if req.threshold is not None else cfg.threshold)
            out = self._sampler.complete(req.prefix, req.suffix, mode=req.mode, cache=self._cache(req.uri),
                                         cfg=cfg, should_stop=should_stop, language=req.language)
        except SamplerCancelled:
            with self._lock:
                self._health.cancelled_running += 1
            raise CompletionCancelled from None
        except DllmError as e:
            raise CoreError(f"the core cannot complete this request: {e}") from None
        except ValueError as e:
            raise CoreError(f"the core rejected the request: {e}") from None
        except Exception as e:
            log.exception("sampling failed")
            raise CoreError(f"the core failed ({type(e).__name__}: {e})",
                            "see the server log (`dllm-ls serve --log-file PATH`) and report it") from None
        finally:
            with self._lock:
                self._health.running -= 1
        with self._lock:
            self._health.completed += 1
        t = out.trace
        return CompletionResult(id=req.id, text=out.text.replace("\r\n", "\n"), stop=out.stop, steps=t.steps,
                                tokens=t.tokens, prompt_tokens=t.prompt_tokens, reused_tokens=t.reused_tokens,
                                queue_ms=(t0 - job.submitted) * 1000, compute_ms=(time.perf_counter() - t0) * 1000)

    def _cache(self, uri: str):
        """Worker thread: the document's KV cache (least recently used ones are dropped)."""
        cache = self._caches.pop(uri, None)
        if cache is None:
            cache = self._sampler.new_cache()
        self._caches[uri] = cache
        while len(self._caches) > self.max_documents:
            self._caches.popitem(last=False)
        return cache

    def cancel(self, id: int) -> None:
        with self._lock:
            job = self._jobs.get(id)
        if job is not None:
            job.stop.set()

    def health(self) -> CoreHealth:
        with self._lock:
            return dataclasses.replace(self._health)

    def close_document(self, uri: str) -> None:
        try:
            self._pool.submit(self._caches.pop, uri, None)
        except RuntimeError:  # the pool is shut down
            pass

    async def close(self) -> None:
        with self._lock:
            for job in self._jobs.values():
                job.stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
