"""End to end over stdio: "Propagate this edit" and "Repair this file". The model is a scripted
judge of whole files (tests/diffusion_core/scripted.py's FileJudge, the harness' --judge-file):
it takes RIGHT's blocks for the right ones once the rename is in its context (OLD's before), so
the preview's content is known. Shown here: the
action is listed after an edit (and not before), resolves to one TextDocumentEdit whose edits are
annotated per function with needsConfirmation, applying it gives RIGHT; nothing is written (the
file on disk and the server's copy are unchanged until the client applies the edit); progress;
cancellation ($/cancelRequest and the progress' cancel); clear errors."""

from __future__ import annotations

import asyncio
import time

import pytest
import pytest_asyncio
from lsprotocol import types as T
from pygls.exceptions import JsonRpcException

from .conftest import apply_lsp_edits, harness_command, start_client, stop_client, wait_status

pytestmark = pytest.mark.asyncio(loop_scope="module")

RIGHT = ("import os\n\n\ndef area(width, h):\n    return width * h\n\n\n"
         "def double(x):\n    return 2 * x\n\n\nprint(area(2, 3), double(4))\n")
OLD = RIGHT.replace("width", "w")  # before the rename
BUGGY = RIGHT.replace("width * h", "width + h").replace("2 * x", "3 * x")
ANNOTATED = T.WorkspaceEditClientCapabilities(
    document_changes=True, change_annotation_support=T.ChangeAnnotationsSupportOptions(groups_on_label=True))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(lsp_checkpoint, tmp_path_factory):
    d = tmp_path_factory.mktemp("refactor")
    (d / "right.py").write_text(RIGHT)
    (d / "old.py").write_text(OLD)
    c = await start_client(harness_command("--checkpoint", lsp_checkpoint, "--judge-file", d / "right.py",
                                           "--judge-before", d / "old.py", "--step-ms", 40), workspace_edit=ANNOTATED)
    c.dir = d
    await wait_status(c, "ready")
    yield c
    await stop_client(c)


def _open(client, name: str, text: str) -> str:
    path = client.dir / name
    path.write_text(text)
    uri = path.as_uri()
    client.text_document_did_open(T.DidOpenTextDocumentParams(text_document=T.TextDocumentItem(
        uri=uri, language_id="python", version=1, text=text)))
    return uri


def _type(client, uri, version, line, start, end, text):
    rng = T.Range(start=T.Position(line=line, character=start), end=T.Position(line=line, character=end))
    client.text_document_did_change(T.DidChangeTextDocumentParams(
        text_document=T.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[T.TextDocumentContentChangePartial(range=rng, text=text)]))


async def _actions(client, uri, line, character=0, only=None, automatic=False):
    p = T.Position(line=line, character=character)
    kind = T.CodeActionTriggerKind.Automatic if automatic else T.CodeActionTriggerKind.Invoked
    return await client.text_document_code_action_async(T.CodeActionParams(
        text_document=T.TextDocumentIdentifier(uri=uri), range=T.Range(start=p, end=p),
        context=T.CodeActionContext(diagnostics=[], only=only, trigger_kind=kind)))


async def _server_text(client, uri) -> str:
    got = await client.workspace_execute_command_async(T.ExecuteCommandParams(
        command="test.document", arguments=[uri, 0, 0]))
    return got["text"]


async def test_propagate_is_listed_after_an_edit_and_resolves_to_an_annotated_preview(client):
    uri = _open(client, "area.py", OLD)
    caps = client.init_result.capabilities.code_action_provider
    assert caps.resolve_provider and T.CodeActionKind.RefactorRewrite in caps.code_action_kinds
    assert "source.repairFile" in caps.code_action_kinds
    titles = [a.title for a in await _actions(client, uri, 3, 10)]
    assert "dllm-ls: Propagate this edit" not in titles and "dllm-ls: Repair this file" in titles
    # the user renames the parameter, keystroke by keystroke: "w" -> "width"
    _type(client, uri, 2, 3, 9, 10, "")
    for k, ch in enumerate("width"):
        _type(client, uri, 3 + k, 3, 9 + k, 9 + k, ch)
    edited = OLD.replace("def area(w, h)", "def area(width, h)")
    assert await _server_text(client, uri) == edited
    actions = await _actions(client, uri, 3, 14, automatic=True)  # the light bulb, at the edit
    [prop] = [a for a in actions if a.kind == T.CodeActionKind.RefactorRewrite]
    assert prop.title == "dllm-ls: Propagate this edit" and prop.edit is None
    assert [a.kind for a in await _actions(client, uri, 3, 14, only=[T.CodeActionKind.Refactor])] == [
        T.CodeActionKind.RefactorRewrite]  # `only` filters by kind
    before = set(client.progress_reports)
    resolved = await client.code_action_resolve_async(prop)
    edit = resolved.edit
    [doc_edit] = edit.document_changes
    assert doc_edit.text_document.uri == uri and doc_edit.text_document.version == 7
    assert all(isinstance(e, T.AnnotatedTextEdit) for e in doc_edit.edits) and doc_edit.edits
    labels = {edit.change_annotations[e.annotation_id].label for e in doc_edit.edits}
    assert labels == {"function area (line 4)"}
    assert all(a.needs_confirmation for a in edit.change_annotations.values())
    assert apply_lsp_edits(edited, doc_edit.edits) == RIGHT  # the use in the body follows the rename
    assert "1 change" in resolved.title
    # progress: begin, a report per block, end
    [token] = set(client.progress_reports) - before
    kinds = [type(v).__name__ for v in client.progress_reports[token]]
    assert kinds[0] == "WorkDoneProgressBegin" and kinds[-1] == "WorkDoneProgressEnd"
    reports = [v.message for v in client.progress_reports[token] if isinstance(v, T.WorkDoneProgressReport)]
    assert reports == ["statements (lines 1-1) (1/4)", "function area (line 4) (2/4)",
                       "function double (line 8) (3/4)", "statements (lines 12-12) (4/4)"]
    # nothing written: the file on disk and the server's document are as they were
    assert (client.dir / "area.py").read_text() == OLD
    assert await _server_text(client, uri) == edited
    # the client applies the preview: the server's copy follows its didChange, and the edits of a
    # preview of ours are not offered for propagation again
    client.text_document_did_change(T.DidChangeTextDocumentParams(
        text_document=T.VersionedTextDocumentIdentifier(uri=uri, version=8),
        content_changes=[T.TextDocumentContentChangeWholeDocument(text=RIGHT)]))
    assert await _server_text(client, uri) == RIGHT
    assert not [a for a in await _actions(client, uri, 4, 10) if a.kind == T.CodeActionKind.RefactorRewrite]


async def test_repair_this_file_one_preview_labelled_per_function(client):
    uri = _open(client, "buggy.py", BUGGY)
    [act] = await _actions(client, uri, 0, 0, only=["source"])
    assert act.title == "dllm-ls: Repair this file" and act.kind == "source.repairFile"
    resolved = await client.code_action_resolve_async(act)
    [doc_edit] = resolved.edit.document_changes
    by_label = {}
    for e in doc_edit.edits:
        by_label.setdefault(resolved.edit.change_annotations[e.annotation_id].label, []).append(e)
    assert set(by_label) == {"function area (line 4)", "function double (line 8)"}
    assert apply_lsp_edits(BUGGY, doc_edit.edits) == RIGHT
    # each function's edits alone: a client may accept one function and reject the other
    assert apply_lsp_edits(BUGGY, by_label["function area (line 4)"]) == BUGGY.replace("width + h", "width * h")
    assert (client.dir / "buggy.py").read_text() == BUGGY
    # a right file: nothing to change, an empty edit
    right = _open(client, "right_copy.py", RIGHT)
    [act] = await _actions(client, right, 0, 0, only=["source.repairFile"])
    resolved = await client.code_action_resolve_async(act)
    assert not resolved.edit.document_changes[0].edits and resolved.title.endswith("finds nothing to change")


async def test_bad_input_is_one_line_not_a_traceback(client):
    uri = _open(client, "broken.py", OLD)
    _type(client, uri, 2, 4, 13, 14, "")  # "return w * h" -> "return w  h": does not parse
    [prop] = [a for a in await _actions(client, uri, 4) if a.kind == T.CodeActionKind.RefactorRewrite]
    with pytest.raises(JsonRpcException) as err:
        await client.code_action_resolve_async(prop)
    assert err.value.code == -32803 and "does not parse (line 5" in err.value.message
    assert "Traceback" not in err.value.message
    stale = T.CodeAction(title="x", data={"uri": uri, "action": "propagate", "edit": 123456789})
    with pytest.raises(JsonRpcException) as err:
        await client.code_action_resolve_async(stale)
    assert err.value.code == -32803 and "no longer in the document's recent edits" in err.value.message
    text_uri = "file:///w/notes.txt"
    client.text_document_did_open(T.DidOpenTextDocumentParams(text_document=T.TextDocumentItem(
        uri=text_uri, language_id="plaintext", version=1, text="hello\n")))
    assert not await _actions(client, text_uri, 0)
    with pytest.raises(JsonRpcException) as err:
        await client.code_action_resolve_async(T.CodeAction(title="x", data={"uri": text_uri, "action": "repairFile"}))
    assert err.value.code == -32803 and "need a Python file" in err.value.message


async def _full_time(client, act) -> float:
    t0 = time.perf_counter()
    await client.code_action_resolve_async(act)
    return time.perf_counter() - t0


async def test_cancel_request_stops_the_refactor_in_the_core(client):
    uri = _open(client, "slow.py", BUGGY)
    [act] = await _actions(client, uri, 0, only=["source.repairFile"])
    full = await _full_time(client, act)
    t0 = time.perf_counter()
    fut = client.protocol.send_request(T.CODE_ACTION_RESOLVE, act, msg_id="cancel-refactor")
    await asyncio.sleep(0.1)
    client.protocol.notify(T.CANCEL_REQUEST, T.CancelParams(id="cancel-refactor"))
    with pytest.raises(JsonRpcException) as err:
        await asyncio.wait_for(asyncio.wrap_future(fut), 20)
    assert err.value.code == -32800
    assert time.perf_counter() - t0 < full * 0.8, (full, time.perf_counter() - t0)
    # the progress' own cancel button does the same
    before = set(client.progress_reports)
    t0 = time.perf_counter()
    fut = client.protocol.send_request(T.CODE_ACTION_RESOLVE, act, msg_id="cancel-progress")
    while not set(client.progress_reports) - before:
        await asyncio.sleep(0.01)
    [token] = set(client.progress_reports) - before
    await asyncio.sleep(0.1)
    client.protocol.notify(T.WINDOW_WORK_DONE_PROGRESS_CANCEL, T.WorkDoneProgressCancelParams(token=token))
    with pytest.raises(JsonRpcException) as err:
        await asyncio.wait_for(asyncio.wrap_future(fut), 20)
    assert err.value.code == -32800 and time.perf_counter() - t0 < full * 0.8
    # the server goes on
    resolved = await client.code_action_resolve_async(act)
    assert apply_lsp_edits(BUGGY, resolved.edit.document_changes[0].edits) == RIGHT


async def test_a_client_without_document_changes_gets_plain_changes(lsp_checkpoint, tmp_path):
    (tmp_path / "right.py").write_text(RIGHT)
    c = await start_client(harness_command("--checkpoint", lsp_checkpoint, "--judge-file", tmp_path / "right.py"))
    try:
        await wait_status(c, "ready")
        c.dir = tmp_path
        uri = _open(c, "b.py", BUGGY)
        [act] = await _actions(c, uri, 0, only=["source.repairFile"])
        resolved = await c.code_action_resolve_async(act)
        assert resolved.edit.document_changes is None and apply_lsp_edits(BUGGY, resolved.edit.changes[uri]) == RIGHT
    finally:
        await stop_client(c)
