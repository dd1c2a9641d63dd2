"""The core's scheduler: in-flight completions batched into one forward per step (service.py)."""

import time

import pytest

from dllm_ls.diffusion_core.rpc import RpcError
from dllm_ls.diffusion_core.sampler import Sampler, SamplerConfig
from dllm_ls.diffusion_core.service import CoreService

from .test_batch import DOCS


def params(i, doc, uri=None):
    p, s, mode, bs, th, mt = doc
    return dict(id=i, uri=uri or f"file:///d{i}.py", prefix=p, suffix=s, mode=mode, max_tokens=mt,
                block_size=bs, threshold=th)


def test_concurrent_documents_share_forwards_and_equal_single_requests(tiny_model, tokenizer):
    sampler = Sampler(tiny_model, tokenizer)
    cold = [sampler.complete(p, s, mode, cfg=SamplerConfig(block_size=bs, threshold=th, max_tokens=mt))
            for p, s, mode, bs, th, mt in DOCS]
    svc = CoreService(sampler=sampler)
    owner = object()
    futures = [svc.submit(params(i, d), owner, i) for i, d in enumerate(DOCS)]  # queued before the worker runs
    svc.start()
    try:
        results = [f.result(timeout=60) for f in futures]
        for c, r in zip(cold, results):
            assert (r["text"], r["stop"], r["steps"]) == (c.text, c.stop, c.trace.steps)
        h = svc.stats()
        assert h["max_batch"] == len(DOCS)
        assert h["steps"] == sum(c.trace.steps for c in cold)
        assert h["forwards"] == max(c.trace.steps for c in cold)  # one forward per step for all of them
        assert h["running"] == h["queued"] == 0 and h["completed"] == len(DOCS)
    finally:
        svc.stop()
        svc.join(5)


def test_newer_request_supersedes_and_cancel_stops_between_steps(tiny_model, tokenizer):
    sampler = Sampler(tiny_model, tokenizer)
    svc = CoreService(sampler=sampler)
    owner = object()
    slow = (DOCS[3][0], DOCS[3][1], "block", 1, 1.0, 40)  # one token per step: 40 steps
    f_old = svc.submit(params(1, slow, uri="file:///a.py"), owner, 1)
    f_other = svc.submit(params(2, slow, uri="file:///b.py"), owner, 2)
    svc.start()
    try:
        while svc.stats()["steps"] < 4:  # both are running
            time.sleep(0.001)
        f_new = svc.submit(params(3, DOCS[0], uri="file:///a.py"), owner, 3)
        assert svc.cancel(owner, 2)
        for f in (f_old, f_other):
            with pytest.raises(RpcError) as e:
                f.result(timeout=60)
            assert e.value.code == "cancelled" or "cancel" in str(e.value)
        assert "superseded" in str(f_old.exception())
        r = f_new.result(timeout=60)
        p, s, mode, bs, th, mt = DOCS[0]
        c = sampler.complete(p, s, mode, cfg=SamplerConfig(block_size=bs, threshold=th, max_tokens=mt))
        assert r["text"] == c.text and r["reused_tokens"] > 0  # the cancelled request's cache was kept
        h = svc.stats()
        assert h["cancelled_running"] == 2 and h["steps"] < 80
    finally:
        svc.stop()
        svc.join(5)


def test_superseded_queued_requests_do_not_cost_a_step_each(tiny_model, tokenizer):
    """Keystrokes queued behind a running request for the same document: the superseded ones end
    in the same turn as the newest starts, instead of holding the document one step each."""
    sampler = Sampler(tiny_model, tokenizer)
    svc = CoreService(sampler=sampler)
    owner = object()
    slow = (DOCS[3][0], DOCS[3][1], "block", 1, 1.0, 40)  # one token per step: 40 steps
    other = svc.submit(params(0, slow, uri="file:///other.py"), owner, 0)  # keeps the loop stepping
    svc.start()
    try:
        while svc.stats()["steps"] < 2:
            time.sleep(0.001)
        at_end = []
        with svc._cond:  # ten keystrokes arrive within one step, behind nothing for a.py
            futures = [svc.submit(params(i, DOCS[0], uri="file:///a.py"), owner, i) for i in range(1, 11)]
            steps_before = svc.h["forwards"]
            # the forward count when the newest is answered (the callback runs in the worker thread,
            # before `other`'s next forward)
            futures[-1].add_done_callback(lambda f: at_end.append(svc.h["forwards"]))
        r = futures[-1].result(timeout=60)
        assert all("superseded" in str(f.exception()) for f in futures[:-1])
        p, s, mode, bs, th, mt = DOCS[0]
        c = sampler.complete(p, s, mode, cfg=SamplerConfig(block_size=bs, threshold=th, max_tokens=mt))
        assert r["text"] == c.text
        # the newest starts within a turn or two: its own steps plus a few forwards of latency
        # (before the fix it was one forward per superseded keystroke: 16 here)
        assert at_end[0] - steps_before <= r["steps"] + 4
        other.result(timeout=60)
    finally:
        svc.stop()
        svc.join(5)
