"""Fixtures for the language server's tests: a session-wide tiny checkpoint, LSP clients that
start the real server process over stdio (pytest-lsp's LanguageClient), one CPU thread."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


@pytest.fixture(scope="session")
def lsp_checkpoint(session_checkpoint):
    return session_checkpoint


def apply_lsp_edits(text: str, edits) -> str:
    """The client's side of a WorkspaceEdit: LSP TextEdits (line/character ranges, "\n" lines)
    applied to `text`, last first."""
    lines = text.split("\n")
    starts = [sum(len(s) + 1 for s in lines[:i]) for i in range(len(lines))]
    for e in sorted(edits, key=lambda e: (e.range.start.line, e.range.start.character), reverse=True):
        a = starts[e.range.start.line] + e.range.start.character
        b = starts[e.range.end.line] + e.range.end.character
        text = text[:a] + e.new_text + text[b:]
    return text


def serve_command(*args) -> list[str]:
    return [sys.executable, "-m", "dllm_ls.cli", "serve", *map(str, args)]


def harness_command(*args) -> list[str]:
    return [sys.executable, "-m", "tests.lsp_server.harness", *map(str, args)]


def server_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


async def start_client(command: list[str], *, encodings: list[str] | None = None, inline: bool = True,
                       init_options=None, progress: bool = True, configuration: bool = False,
                       workspace_edit=None):
    """A pytest-lsp client connected to a fresh server process, initialized; `client.statuses`
    collects the `dllm/status` notifications. `workspace_edit`: the client's
    WorkspaceEditClientCapabilities (documentChanges, changeAnnotationSupport)."""
    from lsprotocol import types as T
    from pytest_lsp import ClientServerConfig

    client = await ClientServerConfig(server_command=command, server_env=server_env()).start()
    client.statuses = []
    client.status_event = asyncio.Event()

    @client.feature("dllm/status")
    def _status(params):
        client.statuses.append({"state": params.state, "message": params.message, "fix": params.fix})
        client.status_event.set()

    caps = T.ClientCapabilities(
        text_document=T.TextDocumentClientCapabilities(
            inline_completion=T.InlineCompletionClientCapabilities() if inline else None),
        window=T.WindowClientCapabilities(work_done_progress=progress),
        workspace=T.WorkspaceClientCapabilities(configuration=configuration, workspace_edit=workspace_edit),
        general=T.GeneralClientCapabilities(position_encodings=encodings) if encodings else None)
    client.init_result = await client.initialize_session(
        T.InitializeParams(capabilities=caps, initialization_options=init_options))
    return client


async def wait_status(client, state: str, timeout: float = 30.0) -> dict:
    """The first `dllm/status` with this state (waiting for it if needed)."""
    async def wait():
        while True:
            for s in client.statuses:
                if s["state"] == state:
                    return s
            client.status_event.clear()
            await client.status_event.wait()
    return await asyncio.wait_for(wait(), timeout)


async def stop_client(client):
    await client.shutdown_session()
    await client.stop()
