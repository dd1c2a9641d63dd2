"""InProcessCore and the sampler's should_stop hook: serialised requests, per-document caches,
cancellation between steps, and errors a user can act on."""

from __future__ import annotations

import asyncio
import time

import pytest

from dllm_ls.diffusion_core.sampler import CompletionCancelled as SamplerCancelled
from dllm_ls.diffusion_core.sampler import Sampler, SamplerConfig
from dllm_ls.lsp_server.core_client import CompletionCancelled, CompletionRequest, CompletionResult, CoreError
from dllm_ls.lsp_server.inprocess import InProcessCore

from .harness import SlowModel

PREFIX = "def mean(xs):\n    total = 0\n    for x in xs:\n        total += x\n    return "
SUFFIX = "\n\nprint(mean([1, 2, 3]))\n"


def req(id, uri="file:///a.py", prefix=PREFIX, **kw):
    return CompletionRequest(id=id, uri=uri, prefix=prefix, suffix=SUFFIX, **{"max_tokens": 16, **kw})


def test_should_stop_hook_stops_between_steps_and_leaves_the_cache_valid(tiny_model, tokenizer):
    s = Sampler(tiny_model, tokenizer, SamplerConfig(block_size=4, max_tokens=16, threshold=1.0))
    cache = s.new_cache()
    polls = []

    def stop_after_5():
        polls.append(1)
        return len(polls) > 5

    with pytest.raises(SamplerCancelled):
        s.complete(PREFIX, SUFFIX, mode="block", cache=cache, should_stop=stop_after_5)
    assert len(polls) == 6  # five steps ran, the sixth was refused
    assert cache.length == len(cache.tokens)
    warm = s.complete(PREFIX, SUFFIX, mode="block", cache=cache)
    cold = s.complete(PREFIX, SUFFIX, mode="block")
    assert warm.text == cold.text and warm.trace.reused_tokens > 0


def test_requests_and_results_map_to_msgpack_params():
    r = req(7, mode="block", block_size=8)
    params = r.to_params()
    assert set(params) == {"id", "uri", "prefix", "suffix", "mode", "max_tokens", "block_size", "threshold", "language"}
    assert CompletionRequest.from_params({**params, "future_field": 1}) == r
    res = CompletionResult(id=7, text="x", stop="eos", steps=2)
    assert CompletionResult.from_params(res.to_params()) == res
    with pytest.raises(ValueError, match="mode"):
        req(1, mode="paragraph")


def test_completes_and_reuses_each_documents_cache(tiny_model, tokenizer):
    core = InProcessCore(sampler=Sampler(tiny_model, tokenizer), max_documents=2)

    async def go():
        a1 = await core.complete(req(1))
        a2 = await core.complete(req(2, prefix=PREFIX + "tot"))
        b1 = await core.complete(req(3, uri="file:///b.py"))
        c1 = await core.complete(req(4, uri="file:///c.py"))  # evicts a.py (2 documents kept)
        a3 = await core.complete(req(5, prefix=PREFIX + "tota"))
        return a1, a2, b1, c1, a3
    a1, a2, b1, c1, a3 = asyncio.run(go())
    assert a1.reused_tokens == 0 and a2.reused_tokens > 0.8 * a2.prompt_tokens
    assert b1.reused_tokens == 0 and a3.reused_tokens == 0
    assert 1 <= a1.steps <= a1.tokens and a1.compute_ms > 0
    h = core.health()
    assert (h.state, h.started, h.completed, h.running, h.queued) == ("ready", 5, 5, 0, 0)
    assert h.steps == sum(r.steps for r in (a1, a2, b1, c1, a3))


def test_cancelled_before_it_starts(tiny_model, tokenizer):
    core = InProcessCore(sampler=Sampler(SlowModel(tiny_model, 20), tokenizer))

    async def go():
        first = asyncio.ensure_future(core.complete(req(1, threshold=1.0)))
        second = asyncio.ensure_future(core.complete(req(2, uri="file:///b.py")))
        await asyncio.sleep(0.05)
        core.cancel(2)  # still queued behind the first
        core.cancel(1)  # running: stops at its next step
        for f in (first, second):
            with pytest.raises(CompletionCancelled):
                await f
    asyncio.run(go())
    h = core.health()
    assert h.cancelled_queued == 1 and h.cancelled_running == 1 and h.started == 1 and h.running == h.queued == 0


def test_cancelling_the_awaiting_task_stops_the_model_within_a_step(tiny_model, tokenizer):
    core = InProcessCore(sampler=Sampler(SlowModel(tiny_model, 20), tokenizer))

    async def go():
        task = asyncio.ensure_future(core.complete(req(1, threshold=1.0, max_tokens=64)))
        while not core.health().running:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        t0 = time.perf_counter()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.perf_counter() - t0
    waited = asyncio.run(go())
    h = core.health()
    assert h.running == 0 and h.cancelled_running == 1  # the model is free when the answer goes out
    assert waited < 0.5 and h.steps < 40
    steps = h.steps
    time.sleep(0.1)
    assert core.health().steps == steps


def test_a_bad_checkpoint_is_an_error_with_a_fix(tmp_path):
    core = InProcessCore(checkpoint=tmp_path / "missing")
    h = asyncio.run(core.wait_ready())
    assert h.state == "error" and "missing" in h.message and "--checkpoint" in h.fix
    with pytest.raises(CoreError) as err:
        asyncio.run(core.complete(req(1)))
    assert err.value.fix == h.fix and core.health().queued == 0


def test_no_model_at_all(tmp_path, monkeypatch):
    from dllm_ls.diffusion_core import checkpoint

    monkeypatch.setattr(checkpoint, "DEFAULT_CHECKPOINT", tmp_path / "no-default")
    h = asyncio.run(InProcessCore(checkpoint=None).wait_ready())
    assert h.state == "error" and h.message.startswith("no model") and "dllm.checkpoint" in h.fix


def test_loads_a_checkpoint(tiny_checkpoint):
    core = InProcessCore(checkpoint=tiny_checkpoint, device="cpu", threads=1)
    h = asyncio.run(core.wait_ready())
    assert (h.state, h.model, h.device) == ("ready", str(tiny_checkpoint), "cpu")
    assert asyncio.run(core.complete(req(1))).id == 1
