"""Fixtures for the language server's tests: a session-wide tiny checkpoint, LSP clients that
start the real server process over stdio (pytest-lsp's LanguageClient), one CPU thread."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _one_thread():
    """The tiny models run fastest on one thread; the machine is shared."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def lsp_checkpoint(tmp_path_factory, tokenizer):
    from dllm_ls.diffusion_core.checkpoint import save_checkpoint
    from dllm_ls.diffusion_core.model import ModelConfig, Transformer

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("lsp") / "ckpt"
    save_checkpoint(d, Transformer(ModelConfig.from_name("test")).eval(), tokenizer)
    return d


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
