"""The completion engine without LSP: a fake core with scripted answers and delays."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from dllm_ls.lsp_server.core_client import CompletionCancelled, CompletionResult, CoreError, CoreHealth
from dllm_ls.lsp_server.engine import ANCHOR_CHARS, CompletionEngine, InlineQuery, prompt_window
from dllm_ls.lsp_server.settings import Settings


class FakeCore:
    """Answers `answers[mode]` (or a function of the request) after `delay` seconds; cancellable."""

    def __init__(self, answers=None, delay=0.0, error: CoreError | None = None):
        self.answers = answers or {"line": "x + 1", "block": "x + 1\n    y = 2"}
        self.delay, self.error = delay, error
        self.requests, self.cancelled = [], []
        self.inflight, self.max_inflight = 0, 0
        self._stop: dict[int, asyncio.Event] = {}

    async def complete(self, req):
        self.requests.append(req)
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        stop = self._stop[req.id] = asyncio.Event()
        try:
            try:
                await asyncio.wait_for(stop.wait(), self.delay)
                raise CompletionCancelled
            except asyncio.TimeoutError:
                pass
            if self.error:
                raise self.error
            a = self.answers
            text = a(req) if callable(a) else a[req.mode]
            return CompletionResult(id=req.id, text=text, stop="eos", compute_ms=1.0)
        finally:
            self.inflight -= 1

    def cancel(self, id):
        self.cancelled.append(id)
        if id in self._stop:
            self._stop[id].set()

    def health(self):
        return CoreHealth(state="ready")

    def close_document(self, uri):
        pass

    async def close(self):
        pass


def engine(core=None, **settings):
    statuses = []
    e = CompletionEngine(core or FakeCore(), Settings(**{"debounce_ms": 0, **settings}),
                         on_status=lambda *s: statuses.append(s))
    e.statuses = statuses
    return e


def query(text, cursor_mark="|", **kw):
    offset = text.index(cursor_mark)
    return InlineQuery(uri=kw.pop("uri", "file:///a.py"), text=text.replace(cursor_mark, "", 1), offset=offset,
                       language_id="python", **kw)


def run(coro):
    return asyncio.run(coro)


def test_automatic_gives_one_post_processed_suggestion():
    e = engine(FakeCore({"line": "a, b)  ", "block": "a, b)"}))
    out = run(e.complete(query("print(|)\n")))
    assert [(s.text, s.start, s.end, s.mode) for s in out] == [("a, b", 6, 6, "line")]
    assert e.core.requests[0].prefix == "print(" and e.core.requests[0].suffix == ")\n"


def test_invoked_gives_the_variants_without_duplicates():
    core = FakeCore(lambda r: {"line": "x + 1", "block": "x + 1\n    y = 2"}[r.mode])
    out = run(engine(core).complete(query("def f(x):\n    return |\n", invoked=True)))
    assert [s.text for s in out] == ["x + 1", "x + 1\n    y = 2"]  # the careful decode repeated the first
    assert [r.mode for r in core.requests] == ["line", "block", "line"]
    # each mode's block size (settings: line 8, block 32); the careful decode a quarter of its mode's
    assert [r.block_size for r in core.requests] == [8, 32, 2] and core.requests[2].threshold == 0.95
    assert len({s.id for s in out}) == 2


def test_mode_comes_from_the_syntax_tree_and_the_settings():
    core = FakeCore()
    run(engine(core).complete(query("def f(x):\n    |\n")))
    run(engine(core, modes=["line"]).complete(query("def f(x):\n    |\n")))
    run(engine(core, mode="block").complete(query("x = |\n")))
    assert [r.mode for r in core.requests] == ["block", "line", "block"]


def test_newest_request_cancels_the_older_in_the_core():
    async def go():
        core = FakeCore(delay=0.3)
        e = engine(core)
        first = asyncio.ensure_future(e.complete(query("x = |\n")))
        await asyncio.sleep(0.05)  # the first is in the core now
        second = asyncio.ensure_future(e.complete(query("x = y|\n")))
        return core, await first, await second
    core, first, second = run(go())
    assert first == [] and second and core.cancelled == [core.requests[0].id]
    assert core.max_inflight == 1  # the second waited for the first to leave the core


def test_a_request_superseded_during_its_debounce_never_reaches_the_core():
    async def go():
        core = FakeCore()
        e = engine(core, debounce_ms=200)
        first = asyncio.ensure_future(e.complete(query("x = |\n")))
        await asyncio.sleep(0.02)
        second = asyncio.ensure_future(e.complete(query("x = y|\n")))
        return core, e, await first, await second
    core, e, first, second = run(go())
    assert first == [] and second and len(core.requests) == 1 and core.requests[0].prefix == "x = y"
    assert e.telemetry.superseded == 1


def test_typing_into_the_suggestion_stays_a_cache_hit():
    core = FakeCore({"line": "foo(bar)", "block": "foo(bar)"})
    e = engine(core)
    assert [s.text for s in run(e.complete(query("x = |\n")))] == ["foo(bar)"]
    hit = run(e.complete(query("x = fo|\n")))
    assert [(s.text, s.cached) for s in hit] == [("o(bar)", True)]
    assert len(core.requests) == 1 and e.telemetry.cache_hits == 1
    assert run(e.complete(query("x = fob|\n")))[0].cached is False  # typed something else
    assert len(core.requests) == 2
    # asking explicitly for alternatives computes them; typing into those is a hit for either trigger
    assert run(e.complete(query("x = fob|\n", invoked=True)))[0].cached is False
    assert run(e.complete(query("x = fobf|\n", invoked=True)))[0].cached is True
    assert run(e.complete(query("x = fobfo|\n")))[0].cached is True


def test_selected_completion_info():
    core = FakeCore({"line": "(x)", "block": "(x)"})
    text = "def f(x):\n    return abs|\n"
    q = query(text, invoked=True)
    q.selected = (q.offset - 3, q.offset, "abs_value")  # the widget would replace "abs" with "abs_value"
    out = run(engine(core).complete(q))
    assert out and all(s.text == "abs_value(x)" and (s.start, s.end) == (q.offset - 3, q.offset) for s in out)
    assert core.requests[0].prefix.endswith("return abs_value")


def test_crlf_documents_get_crlf():
    out = run(engine(FakeCore({"block": "\n    return 1", "line": "1"})).complete(
        query("def f():|\r\n\r\nx = 1\r\n", eol="\r\n")))
    assert [s.text for s in out] == ["\r\n    return 1"]


def test_disabled_and_disabled_languages():
    core = FakeCore()
    assert run(engine(core, enable=False).complete(query("x = |"))) == []
    assert run(engine(core, disabled_languages=["python"]).complete(query("x = |"))) == []
    assert core.requests == []


def test_core_errors_become_a_status_and_no_items():
    e = engine(FakeCore(error=CoreError("no model", "pass --checkpoint")))
    assert run(e.complete(query("x = |"))) == []
    assert e.statuses[-1] == ("error", "no model", "pass --checkpoint") and e.telemetry.errors == 1
    e.core.error = None
    assert run(e.complete(query("x = |")))
    assert e.statuses[-1] == ("ready", "", "")  # no "busy" flicker while the status shows the error
    assert run(e.complete(query("x = 2|")))
    assert e.statuses[-2:] == [("busy", "", ""), ("ready", "", "")]


def test_client_cancellation_propagates():
    async def go():
        e = engine(FakeCore(delay=5))
        t = asyncio.ensure_future(e.complete(query("x = |")))
        await asyncio.sleep(0.05)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        return e
    e = run(go())
    assert e.telemetry.cancelled == 1 and not e._in_core and not e._slots


def test_prompt_window_is_anchored_while_typing():
    doc = "".join(f"line_{i} = {i}\n" for i in range(5000))
    p1, s1, start1 = prompt_window(doc, "\nend\n")
    p2, s2, start2 = prompt_window(doc + "tot", "\nend\n")
    assert start1 == start2 > 0 and p2.startswith(p1) and doc[start1 - 1] == "\n"
    p3, _, start3 = prompt_window(doc + "x" * (2 * ANCHOR_CHARS), "")
    assert start3 > start1  # it moves, in a large step
    assert prompt_window("a\r\nb", "c\r\n")[:2] == ("a\nb", "c\n")


def test_variants_respect_invoked_items():
    e = engine(invoked_items=1)
    assert len(e.variants("line", True)) == 1
    e.configure(dataclasses.replace(e.settings, invoked_items=5, mode="line"))
    assert [v.mode for v in e.variants("line", True)] == ["line", "line"]  # mode forced: no other mode
