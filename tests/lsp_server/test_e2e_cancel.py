"""End to end: cancellation reaches the core; rapid requests on one document leave one running.

The server is tests/lsp_server/harness.py with the tiny model slowed to 25 ms per step, so a
request runs long enough (64 steps) to be cancelled in the middle."""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio
from lsprotocol import types as T
from pygls.exceptions import JsonRpcException

from .conftest import harness_command, start_client, stop_client, wait_status
from .test_e2e import inline, items_of, telemetry

pytestmark = pytest.mark.asyncio(loop_scope="module")

URI = "file:///work/slow.py"
TEXT = "def mean(xs):\n    total = 0\n    for x in xs:\n        total += x\n    return \n"
CURSOR = T.Position(line=4, character=11)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(lsp_checkpoint):
    c = await start_client(harness_command("--checkpoint", lsp_checkpoint, "--step-ms", 25))
    await wait_status(c, "ready")
    # one token per step, 64 of them: a request takes ~1.6 s
    c.workspace_did_change_configuration(T.DidChangeConfigurationParams(
        settings={"dllm": {"threshold": 1.0, "maxTokens": 64, "debounceMs": 50}}))
    c.text_document_did_open(T.DidOpenTextDocumentParams(text_document=T.TextDocumentItem(
        uri=URI, language_id="python", version=1, text=TEXT)))
    yield c
    await stop_client(c)


async def core(client) -> dict:
    return (await telemetry(client))["core"]


async def wait_until_running(client, timeout=10.0):
    for _ in range(int(timeout / 0.02)):
        if (await core(client))["running"]:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the request never reached the model")


async def test_cancel_request_returns_32800_and_stops_the_core(client):
    before = await core(client)
    fut = client.protocol.send_request(T.TEXT_DOCUMENT_INLINE_COMPLETION, inline(URI, CURSOR, invoked=True),
                                       msg_id="cancel-me")
    await wait_until_running(client)
    await asyncio.sleep(0.2)  # in the middle of the request
    client.protocol.notify(T.CANCEL_REQUEST, T.CancelParams(id="cancel-me"))
    with pytest.raises(JsonRpcException) as err:
        await asyncio.wait_for(asyncio.wrap_future(fut), 10)
    assert err.value.code == -32800
    after = await core(client)
    assert after["cancelled_running"] == before["cancelled_running"] + 1
    assert after["running"] == 0 and after["queued"] == 0
    steps = after["steps"] - before["steps"]
    assert 0 < steps < 60  # it stopped long before its 64 steps
    await asyncio.sleep(0.3)
    assert (await core(client))["steps"] == after["steps"]  # and does no more work on it


async def test_twenty_rapid_requests_leave_at_most_one_running(client):
    before = await core(client)
    running_seen, inflight_seen = [], []

    done = asyncio.Event()

    async def watch():  # stops between requests: a cancelled in-flight request upsets the client
        while not done.is_set():
            h = await core(client)
            running_seen.append(h["running"])
            inflight_seen.append(h["running"] + h["queued"])
            await asyncio.sleep(0.01)

    watcher = asyncio.ensure_future(watch())
    line = "    return "
    futures = []
    for i in range(20):  # a keystroke, then the client asks; nobody waits for the answers
        typed = "total"[: i % 6]
        futures.append(asyncio.ensure_future(client.text_document_inline_completion_async(
            inline(URI, T.Position(line=4, character=len(line) + len(typed))))))
        await asyncio.sleep(0.005)
        client.text_document_did_change(T.DidChangeTextDocumentParams(
            text_document=T.VersionedTextDocumentIdentifier(uri=URI, version=10 + i),
            content_changes=[T.TextDocumentContentChangePartial(
                range=T.Range(start=T.Position(line=4, character=0), end=T.Position(line=4, character=99)),
                text=line + "total"[: (i + 1) % 6])]))
    results = await asyncio.wait_for(asyncio.gather(*futures), 60)
    done.set()
    await watcher
    after = await core(client)
    assert all(items_of(r) == [] for r in results[:-1])  # superseded: answered with no items
    assert max(running_seen) <= 1 and max(inflight_seen) <= 1
    assert after["max_inflight_per_document"] == 1
    started = after["started"] - before["started"]
    assert started <= 3  # debounce and supersession: the core never worked through the backlog
    assert after["running"] == 0 and after["queued"] == 0


async def test_a_newer_request_cancels_the_one_running_in_the_core(client):
    before = await core(client)
    futures = []
    for _ in range(4):  # invoked: no debounce, each one reaches the model before the next comes
        futures.append(asyncio.ensure_future(client.text_document_inline_completion_async(inline(URI, CURSOR, invoked=True))))
        await wait_until_running(client)
        await asyncio.sleep(0.1)
    futures.append(asyncio.ensure_future(client.text_document_inline_completion_async(inline(URI, CURSOR))))
    results = await asyncio.wait_for(asyncio.gather(*futures), 60)
    after = await core(client)
    assert all(items_of(r) == [] for r in results[:-1])
    assert after["cancelled_running"] - before["cancelled_running"] == 4
    assert after["max_inflight_per_document"] == 1 and after["running"] == 0
