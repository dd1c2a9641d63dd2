"""End to end over stdio: the repair code actions, resolved to a WorkspaceEdit that fixes a planted
bug (the model is tests/diffusion_core/scripted.py's JudgeModel), progress, cancellation, and a
position outside any function. The server never writes the file: the edit comes back."""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio
from lsprotocol import types as T
from pygls.exceptions import JsonRpcException

from .conftest import apply_lsp_edits, harness_command, start_client, stop_client, wait_status

pytestmark = pytest.mark.asyncio(loop_scope="module")

GOOD = "def add(a, b):\n    total = a + b\n    return total\n"
FILE = "import os\n\n\n" + GOOD + "\n\nprint(add(1, 2))\n"
BUGGY = FILE.replace("a + b", "a - b")
BROKEN = FILE.replace("a + b", "a b")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(lsp_checkpoint):
    c = await start_client(harness_command("--checkpoint", lsp_checkpoint, "--judge", GOOD, "--step-ms", 60))
    await wait_status(c, "ready")
    for uri, text in (("file:///w/bug.py", BUGGY), ("file:///w/broken.py", BROKEN)):
        c.text_document_did_open(T.DidOpenTextDocumentParams(text_document=T.TextDocumentItem(
            uri=uri, language_id="python", version=1, text=text)))
    yield c
    await stop_client(c)


def _params(uri, line, character):
    """Quick fixes only (the whole-file actions are test_e2e_refactor.py's)."""
    p = T.Position(line=line, character=character)
    return T.CodeActionParams(text_document=T.TextDocumentIdentifier(uri=uri), range=T.Range(start=p, end=p),
                              context=T.CodeActionContext(diagnostics=[], only=[T.CodeActionKind.QuickFix]))


async def test_capabilities_and_fix_this_function(client):
    caps = client.init_result.capabilities.code_action_provider
    assert caps.resolve_provider and T.CodeActionKind.QuickFix in caps.code_action_kinds
    actions = await client.text_document_code_action_async(_params("file:///w/bug.py", 4, 10))
    assert [a.title for a in actions] == ["dllm-ls: Fix this function"]
    assert actions[0].edit is None and actions[0].kind == T.CodeActionKind.QuickFix
    progress_before = len(client.progress_reports)
    resolved = await client.code_action_resolve_async(actions[0])
    edits = resolved.edit.changes["file:///w/bug.py"]
    assert apply_lsp_edits(BUGGY, edits) == FILE
    assert len(client.progress_reports) > progress_before  # a $/progress token per resolve
    # outside any function: no action
    assert not await client.text_document_code_action_async(_params("file:///w/bug.py", 0, 3))


async def test_fix_syntax_error(client):
    actions = await client.text_document_code_action_async(_params("file:///w/broken.py", 4, 10))
    assert [a.title for a in actions] == ["dllm-ls: Fix syntax error", "dllm-ls: Fix this function"]
    resolved = await client.code_action_resolve_async(actions[0])
    assert apply_lsp_edits(BROKEN, resolved.edit.changes["file:///w/broken.py"]) == FILE


async def test_cancelling_the_resolve_stops_it(client):
    import time

    actions = await client.text_document_code_action_async(_params("file:///w/bug.py", 4, 10))
    t0 = time.perf_counter()
    await client.code_action_resolve_async(actions[0])
    full = time.perf_counter() - t0  # every model call sleeps 60 ms
    t0 = time.perf_counter()
    fut = client.protocol.send_request(T.CODE_ACTION_RESOLVE, actions[0], msg_id="cancel-fix")
    await asyncio.sleep(0.15)
    client.protocol.notify(T.CANCEL_REQUEST, T.CancelParams(id="cancel-fix"))
    with pytest.raises(JsonRpcException) as err:
        await asyncio.wait_for(asyncio.wrap_future(fut), 10)
    assert err.value.code == -32800
    assert time.perf_counter() - t0 < full * 0.8, (full, time.perf_counter() - t0)
    # the server goes on: a second resolve works
    resolved = await client.code_action_resolve_async(actions[0])
    assert apply_lsp_edits(BUGGY, resolved.edit.changes["file:///w/bug.py"]) == FILE
