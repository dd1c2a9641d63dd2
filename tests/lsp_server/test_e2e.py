"""End to end over stdio against `dllm-ls serve` (a tiny random model: behaviour, not quality)."""

from __future__ import annotations

import asyncio
import sysconfig
from pathlib import Path

import pytest
import pytest_asyncio
from lsprotocol import types as T

from .conftest import serve_command, start_client, stop_client, wait_status

pytestmark = pytest.mark.asyncio(loop_scope="module")

URI = "file:///work/colorsys.py"
SOURCE = (Path(sysconfig.get_paths()["stdlib"]) / "colorsys.py").read_text(encoding="utf-8")
CURSOR_MARK = "    y = 0.30*r + 0.59*g + 0.11*b\n"  # in rgb_to_yiq: the cursor goes after "    y = "


def cursor_position(text: str, anchor: str, column: int) -> T.Position:
    line = text[: text.index(anchor)].count("\n")
    return T.Position(line=line, character=column)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(lsp_checkpoint):
    c = await start_client(serve_command("--checkpoint", lsp_checkpoint))
    await wait_status(c, "ready")
    doc = SOURCE.replace(CURSOR_MARK, "    y = \n", 1)
    c.text_document_did_open(T.DidOpenTextDocumentParams(text_document=T.TextDocumentItem(
        uri=URI, language_id="python", version=1, text=doc)))
    c.doc = doc
    c.cursor = cursor_position(doc, "    y = \n", 8)
    yield c
    await stop_client(c)


def inline(uri, pos, invoked=False):
    kind = T.InlineCompletionTriggerKind.Invoked if invoked else T.InlineCompletionTriggerKind.Automatic
    return T.InlineCompletionParams(text_document=T.TextDocumentIdentifier(uri=uri), position=pos,
                                    context=T.InlineCompletionContext(trigger_kind=kind))


def items_of(result) -> list:
    return list(result.items) if isinstance(result, T.InlineCompletionList) else list(result or [])


async def telemetry(client) -> dict:
    return await client.workspace_execute_command_async(T.ExecuteCommandParams(command="dllm.telemetry"))


async def test_initialize_advertises_the_capabilities(client):
    caps = client.init_result.capabilities
    assert caps.inline_completion_provider is not None
    assert caps.text_document_sync.change == T.TextDocumentSyncKind.Incremental
    assert caps.text_document_sync.open_close
    assert caps.position_encoding == T.PositionEncodingKind.Utf16  # the client offered none
    assert {"dllm.accept", "dllm.telemetry"} <= set(caps.execute_command_provider.commands)
    assert client.init_result.server_info.name == "dllm-ls"


async def test_model_load_is_reported_with_progress_and_status(client):
    assert client.statuses[0]["state"] == "loading"
    assert (await wait_status(client, "ready"))["message"].startswith("model ")
    kinds = [getattr(v, "kind", None) for reports in client.progress_reports.values() for v in reports]
    assert kinds[0] == "begin" and kinds[-1] == "end"


async def test_automatic_request_on_a_python_file_returns_one_item_with_a_command(client):
    result = await client.text_document_inline_completion_async(inline(URI, client.cursor))
    items = items_of(result)
    assert len(items) == 1
    item = items[0]
    assert item.insert_text and "\n" not in item.insert_text  # mid-statement: one line
    assert item.range.start == client.cursor and item.range.end == client.cursor
    assert item.command.command == "dllm.accept" and item.command.arguments[0]["length"] == len(item.insert_text)


async def test_invoked_request_returns_distinct_items(client):
    items = items_of(await client.text_document_inline_completion_async(inline(URI, client.cursor, invoked=True)))
    assert 2 <= len(items) <= 3  # the variants (other mode, careful decode) differ for this model
    assert len({i.insert_text for i in items}) == len(items)
    health = (await telemetry(client))["core"]
    assert health["max_inflight_per_document"] == 1 and health["running"] == 0


async def test_accepting_runs_the_items_command(client):
    items = items_of(await client.text_document_inline_completion_async(inline(URI, client.cursor)))
    before = (await telemetry(client))["telemetry"]["accepted"]
    cmd = items[0].command
    await client.workspace_execute_command_async(T.ExecuteCommandParams(command=cmd.command, arguments=cmd.arguments))
    after = await telemetry(client)
    assert after["telemetry"]["accepted"] == before + 1
    assert after["telemetry"]["accepted_chars"] >= len(items[0].insert_text)


async def test_typing_into_the_suggestion_is_answered_from_the_cache(client):
    items = items_of(await client.text_document_inline_completion_async(inline(URI, client.cursor)))
    text = items[0].insert_text
    assert len(text) >= 2
    started = (await telemetry(client))["core"]["started"]
    pos = client.cursor
    client.text_document_did_change(T.DidChangeTextDocumentParams(
        text_document=T.VersionedTextDocumentIdentifier(uri=URI, version=2),
        content_changes=[T.TextDocumentContentChangePartial(range=T.Range(start=pos, end=pos), text=text[0])]))
    typed = T.Position(line=pos.line, character=pos.character + 1)
    items = items_of(await client.text_document_inline_completion_async(inline(URI, typed)))
    assert [i.insert_text for i in items] == [text[1:]]
    assert items[0].command.arguments[0]["cached"] is True
    assert (await telemetry(client))["core"]["started"] == started  # the core did no work
    # undo the keystroke for the other tests
    client.text_document_did_change(T.DidChangeTextDocumentParams(
        text_document=T.VersionedTextDocumentIdentifier(uri=URI, version=3),
        content_changes=[T.TextDocumentContentChangePartial(range=T.Range(start=pos, end=typed), text="")]))


async def test_settings_from_did_change_configuration(client):
    client.workspace_did_change_configuration(T.DidChangeConfigurationParams(settings={"dllm": {"enable": False}}))
    assert items_of(await client.text_document_inline_completion_async(inline(URI, client.cursor))) == []
    assert (await wait_status(client, "disabled"))["message"]
    client.workspace_did_change_configuration(T.DidChangeConfigurationParams(
        settings={"dllm": {"enable": True, "maxTokens": "many"}}))
    for _ in range(100):
        if client.messages:
            break
        await asyncio.sleep(0.02)
    warning = client.messages[-1]
    assert warning.type == T.MessageType.Warning and "maxTokens" in warning.message and "1-1024" in warning.message
    assert items_of(await client.text_document_inline_completion_async(inline(URI, client.cursor)))  # still serving
