"""Bad input over stdio against `dllm-ls serve`: each answered per the spec, the server keeps serving."""

from __future__ import annotations

import time

import pytest

from .conftest import serve_command, server_env
from .rawclient import RawClient

INIT = {"processId": None, "rootUri": None, "capabilities": {"textDocument": {"inlineCompletion": {}}}}


def inline(uri, line, character, kind=2):
    return {"textDocument": {"uri": uri}, "position": {"line": line, "character": character},
            "context": {"triggerKind": kind}}


@pytest.fixture(scope="module")
def server(lsp_checkpoint):
    c = RawClient(serve_command("--checkpoint", lsp_checkpoint), server_env())
    yield c
    c.close()
    assert b"Traceback" not in b"".join(c.stderr)


@pytest.fixture(scope="module")
def ready(server):
    """The server after the request-before-initialize check, initialized, with a document open."""
    r = server.request("textDocument/inlineCompletion", inline("file:///a.py", 0, 0))
    assert r["error"]["code"] == -32002 and "initialize" in r["error"]["message"]
    server.notify("textDocument/didOpen", {"textDocument": {"uri": "file:///early.py", "languageId": "python",
                                                            "version": 1, "text": "x"}})  # dropped
    assert "capabilities" in server.request("initialize", INIT)["result"]
    server.notify("initialized", {})
    server.notify("textDocument/didOpen", {"textDocument": {
        "uri": "file:///a.py", "languageId": "python", "version": 1, "text": "def f(x):\n    return \n"}})
    return server


def still_serving(server):
    r = server.request("textDocument/inlineCompletion", inline("file:///a.py", 1, 11))
    assert "result" in r and isinstance(r["result"]["items"], list)


def test_request_before_initialize_and_notifications_before_it_are_dropped(ready):
    r = ready.request("textDocument/inlineCompletion", inline("file:///early.py", 0, 0))
    assert r["error"]["code"] == -32803  # the early didOpen never counted
    still_serving(ready)


def test_second_initialize_is_refused(ready):
    assert ready.request("initialize", INIT)["error"]["code"] == -32600
    still_serving(ready)


@pytest.mark.parametrize("body,code", [
    (b"{not json", -32700),
    (b"\xff\xfe{}", -32700),
    (b"[1, 2, 3]", -32600),
    (b'{"id": 5, "method": "textDocument/inlineCompletion"}', -32600),  # no "jsonrpc"
])
def test_invalid_json_rpc_is_answered_with_id_null(ready, body, code):
    ready.send_bytes(body)
    r = ready.response(None if code == -32700 or body.startswith(b"[") else 5, timeout=30)
    assert r["error"]["code"] == code
    still_serving(ready)


def test_invalid_params_are_answered_with_the_request_id(ready):
    r = ready.request("textDocument/inlineCompletion", {"textDocument": {"uri": "file:///a.py"}})
    assert r["error"]["code"] == -32602 and "inlineCompletion" in r["error"]["message"]
    r = ready.request("textDocument/inlineCompletion", inline("file:///a.py", -1, 0))
    assert r["error"]["code"] == -32602
    still_serving(ready)


def test_unknown_method_and_unknown_document(ready):
    assert ready.request("textDocument/nonsense", {})["error"]["code"] == -32601
    r = ready.request("textDocument/inlineCompletion", inline("file:///never-opened.py", 0, 0))
    assert r["error"]["code"] == -32803 and "didOpen" in r["error"]["message"]
    ready.notify("textDocument/didChange", {"textDocument": {"uri": "file:///never-opened.py", "version": 2},
                                            "contentChanges": [{"text": "x"}]})  # a notification: no answer
    still_serving(ready)


def test_positions_past_the_end(ready):
    r = ready.request("textDocument/inlineCompletion", inline("file:///a.py", 99, 0))
    assert r["error"]["code"] == -32602 and "line 99 is past the end" in r["error"]["message"]
    r = ready.request("textDocument/inlineCompletion", inline("file:///a.py", 1, 500))  # clamps to the line end
    assert "result" in r
    for item in r["result"]["items"]:
        assert item["range"]["start"] == {"line": 1, "character": 11}
    still_serving(ready)


def test_a_5mb_file(ready):
    line = "value_%d = compute(%d, 'text') + 1\n"
    text = "".join(line % (i, i) for i in range(150_000))
    assert len(text) > 5_000_000
    ready.notify("textDocument/didOpen", {"textDocument": {"uri": "file:///big.py", "languageId": "python",
                                                           "version": 1, "text": text}})
    n = text.count("\n")
    t0 = time.perf_counter()
    r = ready.request("textDocument/inlineCompletion", inline("file:///big.py", n // 2, 10, kind=1))
    assert "result" in r
    ready.notify("textDocument/didChange", {"textDocument": {"uri": "file:///big.py", "version": 2}, "contentChanges": [
        {"range": {"start": {"line": n, "character": 0}, "end": {"line": n, "character": 0}}, "text": "tail = "}]})
    r = ready.request("textDocument/inlineCompletion", inline("file:///big.py", n, 7, kind=1))
    assert "result" in r
    assert time.perf_counter() - t0 < 30
    ready.notify("textDocument/didClose", {"textDocument": {"uri": "file:///big.py"}})
    still_serving(ready)


def test_request_after_shutdown_is_refused(lsp_checkpoint):
    c = RawClient(serve_command("--checkpoint", lsp_checkpoint), server_env())
    try:
        c.request("initialize", INIT)
        c.notify("initialized", {})
        assert c.request("shutdown")["result"] is None
        assert c.request("textDocument/inlineCompletion", inline("file:///a.py", 0, 0))["error"]["code"] == -32600
        c.notify("exit")
        assert c.proc.wait(timeout=20) == 0
    finally:
        if c.proc.poll() is None:
            c.proc.kill()


def test_exit_without_shutdown_is_code_1_and_exit_is_prompt(lsp_checkpoint):
    """`exit` ends the process with 1 without a `shutdown` first (the spec), and at once: clients
    kill a server that lingers (vscode-languageclient after 2 s)."""
    c = RawClient(serve_command("--checkpoint", lsp_checkpoint), server_env())
    try:
        c.request("initialize", INIT)
        c.notify("initialized", {})
        t0 = time.perf_counter()
        c.notify("exit")
        assert c.proc.wait(timeout=20) == 1
        assert time.perf_counter() - t0 < 1.5
    finally:
        if c.proc.poll() is None:
            c.proc.kill()
