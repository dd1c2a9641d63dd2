"""The interface between the language server and the diffusion core.

Today the core runs in the server's process (`inprocess.InProcessCore`); the resident core
daemon (a later issue) will serve the same calls over msgpack-rpc, so the requests and results
are plain dataclasses whose fields map 1:1 to the wire's params maps:

    [0, 7, "complete", [{"id": 7, "uri": ..., "prefix": ..., "suffix": ..., "mode": "line",
                         "max_tokens": 64, "block_size": 32, "threshold": 0.9}]]
    [1, 7, nil, {"id": 7, "text": ..., "stop": "eol", "steps": 3, "tokens": 9, ...}]
    [2, "cancel", [{"id": 7}]]          [0, 8, "health", [{}]]          [2, "close", [{"uri": ...}]]

A cancelled request answers with the error `{"code": "cancelled"}` (CompletionCancelled here).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Protocol

from ..errors import DllmError

MODES = ("line", "block")


class CoreError(DllmError):
    """The core cannot complete: no model, a bad checkpoint, a crash. `fix` says what to do."""

    def __init__(self, message: str, fix: str = ""):
        super().__init__(message)
        self.message, self.fix = message, fix


class CompletionCancelled(Exception):
    """The request was cancelled (by the client, or by a newer request for the same document)."""


def _from_params(cls, params: dict):
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in params.items() if k in names})


@dataclass(kw_only=True)
class CompletionRequest:
    id: int  # unique per server process; `cancel(id)` refers to it
    uri: str  # the document: the core keeps one KV cache per document
    prefix: str  # text before the cursor (LF line endings; a window of the document is enough)
    suffix: str = ""  # text after the cursor
    mode: str = "line"  # "line": finish the current line; "block": several lines
    max_tokens: int = 64
    block_size: int | None = None  # None: the core's default
    threshold: float | None = None  # None: the core's default

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {self.mode!r}")

    def to_params(self) -> dict:
        return asdict(self)

    @classmethod
    def from_params(cls, params: dict) -> "CompletionRequest":
        return _from_params(cls, params)


@dataclass(kw_only=True)
class CompletionResult:
    id: int
    text: str  # LF line endings, before the server's post-processing
    stop: str  # why it ended: "eos", "eol", "dedent", "brackets", "suffix", "max_tokens"
    steps: int = 0  # model forward passes
    tokens: int = 0  # tokens committed
    prompt_tokens: int = 0
    reused_tokens: int = 0  # prompt tokens whose KV came from the document's cache
    queue_ms: float = 0.0  # waiting for the core
    compute_ms: float = 0.0  # sampling

    def to_params(self) -> dict:
        return asdict(self)

    @classmethod
    def from_params(cls, params: dict) -> "CompletionResult":
        return _from_params(cls, params)


@dataclass(kw_only=True)
class CoreHealth:
    state: str  # "loading", "ready", "error"
    message: str = ""  # what is wrong, when state is "error"
    fix: str = ""  # what the user can do about it
    model: str = ""  # checkpoint directory
    device: str = ""
    running: int = 0  # requests being sampled now (at most 1: the core serialises them)
    queued: int = 0
    started: int = 0  # requests that reached the model
    completed: int = 0
    cancelled_queued: int = 0  # cancelled before they reached the model
    cancelled_running: int = 0  # stopped between two denoising steps
    steps: int = 0  # model steps run since the start
    max_inflight_per_document: int = 0  # high-water mark of queued + running requests of one document

    def to_params(self) -> dict:
        return asdict(self)


class CoreClient(Protocol):
    """What the server needs from a core, in process or behind a socket."""

    async def complete(self, request: CompletionRequest) -> CompletionResult:
        """Sample a completion; raises CompletionCancelled or CoreError. Cancelling the awaiting
        task cancels the request in the core too."""
        ...

    def cancel(self, id: int) -> None:
        """Stop request `id` at the next denoising step (or before it starts); no-op if done."""
        ...

    def health(self) -> CoreHealth:
        ...

    def close_document(self, uri: str) -> None:
        """Forget the document's KV cache."""
        ...

    async def close(self) -> None:
        ...
