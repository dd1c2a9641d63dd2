"""End to end: clients without the inlineCompletion capability (opt-in), settings pulled with
workspace/configuration, a language without a grammar, and the TCP transport."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time

import pytest
from lsprotocol import types as T

from .conftest import serve_command, server_env, start_client, stop_client, wait_status
from .test_e2e import inline, items_of, telemetry

@pytest.mark.asyncio
async def test_a_client_without_the_capability_is_not_offered_it_unless_it_opts_in(lsp_checkpoint):
    plain = await start_client(serve_command("--checkpoint", lsp_checkpoint), inline=False)
    try:
        assert plain.init_result.capabilities.inline_completion_provider is None
        assert any("inlineCompletion" in m.message for m in plain.log_messages)
    finally:
        await stop_client(plain)


@pytest.mark.asyncio
async def test_opt_in_pulled_settings_and_a_language_without_grammar(lsp_checkpoint):
    c = await start_client(serve_command("--checkpoint", lsp_checkpoint), inline=False, configuration=True,
                           init_options={"dllm": {"inlineCompletion": True}})
    c.set_configuration({"maxTokens": 7, "invokedItems": 1}, section="dllm")
    try:
        assert c.init_result.capabilities.inline_completion_provider is not None
        await wait_status(c, "ready")
        for _ in range(100):  # the server pulls workspace/configuration after `initialized`
            settings = (await telemetry(c))["settings"]
            if settings["max_tokens"] == 7:
                break
            await asyncio.sleep(0.05)
        assert settings["max_tokens"] == 7 and settings["invoked_items"] == 1
        c.text_document_did_open(T.DidOpenTextDocumentParams(text_document=T.TextDocumentItem(
            uri="file:///m.hs", language_id="haskell", version=1, text="main :: IO ()\nmain = \n")))
        items = items_of(await c.text_document_inline_completion_async(
            inline("file:///m.hs", T.Position(line=1, character=7), invoked=True)))
        assert len(items) == 1  # no grammar for Haskell: completes all the same
    finally:
        await stop_client(c)


def _frame(obj) -> bytes:
    body = json.dumps(obj).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def test_tcp_transport(lsp_checkpoint):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(serve_command("--checkpoint", lsp_checkpoint, "--tcp", f"127.0.0.1:{port}"),
                            env=server_env(), stderr=subprocess.PIPE)
    try:
        for _ in range(300):
            try:
                conn = socket.create_connection(("127.0.0.1", port), timeout=30)
                break
            except OSError:
                if proc.poll() is not None:
                    raise AssertionError(proc.stderr.read().decode())
                time.sleep(0.05)
        with conn:
            conn.sendall(_frame({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                 "params": {"processId": None, "rootUri": None, "capabilities": {}}}))
            data = b""
            while b'"id": 1' not in data and b'"id":1' not in data:
                chunk = conn.recv(65536)
                assert chunk, "connection closed"
                data += chunk
            assert b"capabilities" in data
    finally:
        proc.kill()
        proc.wait()


def test_bad_tcp_address_is_one_line(lsp_checkpoint):
    r = subprocess.run(serve_command("--tcp", "nonsense"), env=server_env(), capture_output=True, timeout=60)
    assert r.returncode == 2 and b"expected HOST:PORT" in r.stderr and b"Traceback" not in r.stderr
