"""End to end: without a usable model the server starts, says what is wrong and how to fix it,
answers requests with no items, and recovers when the setting points at a model."""

from __future__ import annotations

import pytest
import pytest_asyncio
from lsprotocol import types as T

from dllm_ls.diffusion_core.checkpoint import default_checkpoint

from .conftest import serve_command, start_client, stop_client, wait_status
from .test_e2e import inline, items_of

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(tmp_path_factory):
    missing = tmp_path_factory.mktemp("nomodel") / "no-such-checkpoint"
    c = await start_client(serve_command("--checkpoint", missing))
    c.missing = missing
    yield c
    await stop_client(c)


async def test_bad_checkpoint_is_a_clear_status_error_and_completions_are_empty(client):
    status = await wait_status(client, "error")
    assert str(client.missing) in status["message"] and "not found" in status["message"]
    assert "--checkpoint" in status["fix"] and "dllm.checkpoint" in status["fix"]
    client.text_document_did_open(T.DidOpenTextDocumentParams(text_document=T.TextDocumentItem(
        uri="file:///a.py", language_id="python", version=1, text="x = \n")))
    pos = T.Position(line=0, character=4)
    assert items_of(await client.text_document_inline_completion_async(inline("file:///a.py", pos, True))) == []
    assert "Traceback" not in status["message"]


async def test_pointing_the_setting_at_a_model_recovers(client, lsp_checkpoint):
    client.statuses.clear()
    client.workspace_did_change_configuration(T.DidChangeConfigurationParams(
        settings={"dllm": {"checkpoint": str(lsp_checkpoint)}}))
    assert (await wait_status(client, "ready"))["message"].startswith(f"model {lsp_checkpoint}")
    pos = T.Position(line=0, character=4)
    assert items_of(await client.text_document_inline_completion_async(inline("file:///a.py", pos, True)))


@pytest.mark.skipif(default_checkpoint() is not None, reason="a default model is installed")
async def test_no_model_at_all():
    c = await start_client(serve_command())
    try:
        status = await wait_status(c, "error")
        assert "no model" in status["message"] and "--checkpoint" in status["fix"]
    finally:
        await stop_client(c)
