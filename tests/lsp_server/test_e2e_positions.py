"""End to end: positions with emoji and CJK in UTF-16 and UTF-8, and CRLF documents.

The server is tests/lsp_server/harness.py (the real server with a scripted model and a
`test.document` command that reports what the server's document store holds)."""

from __future__ import annotations

import pytest
import pytest_asyncio
from lsprotocol import types as T

from .conftest import harness_command, start_client, stop_client, wait_status
from .test_e2e import inline, items_of

pytestmark = pytest.mark.asyncio(loop_scope="module")

LINE = "s = '😀 世界 ok'  # 😀"
SCRIPT = "\n    return 1\n"  # the scripted model writes this (then eos)


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["utf-16", "utf-8"])
async def client(request, lsp_checkpoint):
    c = await start_client(harness_command("--checkpoint", lsp_checkpoint, "--script", SCRIPT),
                           encodings=[request.param])
    await wait_status(c, "ready")
    c.encoding = request.param
    yield c
    await stop_client(c)


def units(s: str, encoding: str) -> int:
    return len(s.encode("utf-16-le")) // 2 if encoding == "utf-16" else len(s.encode("utf-8"))


async def document(client, uri, line, character) -> dict:
    return await client.workspace_execute_command_async(
        T.ExecuteCommandParams(command="test.document", arguments=[uri, line, character]))


def change(uri, version, start, end, text):
    return T.DidChangeTextDocumentParams(
        text_document=T.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[T.TextDocumentContentChangePartial(
            range=T.Range(start=T.Position(line=start[0], character=start[1]),
                          end=T.Position(line=end[0], character=end[1])), text=text)])


async def test_the_negotiated_encoding_is_advertised(client):
    assert client.init_result.capabilities.position_encoding == client.encoding


async def test_emoji_and_cjk_positions(client):
    uri = f"file:///emoji-{client.encoding}.py"
    client.text_document_did_open(T.DidOpenTextDocumentParams(text_document=T.TextDocumentItem(
        uri=uri, language_id="python", version=1, text=f"x = 1\n{LINE}\n")))
    enc = client.encoding
    col = units("s = '😀 世界", enc)  # just after the CJK characters
    got = await document(client, uri, 1, col)
    assert got["encoding"] == enc and got["before"].endswith("😀 世界")
    # half an emoji (UTF-16) or inside a multi-byte character (UTF-8) rounds down to its start
    inside = units("s = '", enc) + 1
    assert (await document(client, uri, 1, inside))["before"].endswith("s = '")
    # past the end of the line: the end of the line (the protocol's rule)
    assert (await document(client, uri, 1, 999))["before"].endswith(LINE)
    # an incremental edit at a position after the emoji and CJK text lands where it should
    client.text_document_did_change(change(uri, 2, (1, col), (1, col + units(" ok", enc)), "!"))
    got = await document(client, uri, 1, 0)
    assert got["text"] == "x = 1\ns = '😀 世界!'  # 😀\n"
    # and a completion there comes back at the same position, in the same units
    pos = T.Position(line=1, character=col + units("!'  # 😀", enc))
    items = items_of(await client.text_document_inline_completion_async(inline(uri, pos, invoked=True)))
    assert items and all(i.range.start == pos and i.range.end == pos for i in items)


async def test_crlf_round_trip(client):
    uri = f"file:///crlf-{client.encoding}.py"
    text = "import os\r\n\r\ndef f():\r\n"
    client.text_document_did_open(T.DidOpenTextDocumentParams(text_document=T.TextDocumentItem(
        uri=uri, language_id="python", version=1, text=text)))
    # an edit at the end of a CRLF line (character past the "\r" clamps to the line end)
    client.text_document_did_change(change(uri, 2, (0, 9), (0, 99), " as o"))
    got = await document(client, uri, 2, 8)
    assert got["text"] == "import os as o\r\n\r\ndef f():\r\n"
    assert got["before"] == "import os as o\r\n\r\ndef f():"
    items = items_of(await client.text_document_inline_completion_async(inline(uri, T.Position(line=2, character=8))))
    assert [i.insert_text for i in items] == ["\r\n    return 1"]


async def test_selected_completion_info_is_honoured(client):
    uri = f"file:///sel-{client.encoding}.py"
    client.text_document_did_open(T.DidOpenTextDocumentParams(text_document=T.TextDocumentItem(
        uri=uri, language_id="python", version=1, text="def f():\n    re\n")))
    # the completion widget shows "return" for "re": the item must start with it and replace "re"
    rng = T.Range(start=T.Position(line=1, character=4), end=T.Position(line=1, character=6))
    params = T.InlineCompletionParams(
        text_document=T.TextDocumentIdentifier(uri=uri), position=T.Position(line=1, character=6),
        context=T.InlineCompletionContext(trigger_kind=T.InlineCompletionTriggerKind.Invoked,
                                          selected_completion_info=T.SelectedCompletionInfo(range=rng, text="return")))
    items = items_of(await client.text_document_inline_completion_async(params))
    assert items and all(i.insert_text.startswith("return") and i.range == rng for i in items)
