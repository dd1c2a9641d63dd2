"""The interface between the language server and the diffusion core.

The core runs in the server's process (`inprocess.InProcessCore`) or in the resident core daemon
(`dllm-ls core`, `SocketCore` below), which serves the same calls over msgpack-rpc; the requests and
results are plain dataclasses whose fields map 1:1 to the wire's params maps:

    [0, 7, "complete", [{"id": 7, "uri": ..., "prefix": ..., "suffix": ..., "mode": "line",
                         "max_tokens": 64, "block_size": 32, "threshold": 0.9}]]
    [1, 7, nil, {"id": 7, "text": ..., "stop": "eol", "steps": 3, "tokens": 9, ...}]
    [2, "cancel", [{"id": 7}]]          [0, 8, "health", [{}]]          [2, "close", [{"uri": ...}]]

A cancelled request answers with the error `{"code": "cancelled"}` (CompletionCancelled here).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Protocol

from ..errors import DllmError

MODES = ("line", "block")
log = logging.getLogger(__name__)


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
    language: str = "python"  # the LSP languageId ("" when unknown); the core's syntax guard is Python-only

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
    stop: str  # why it ended: "eos", "eol", "dedent", "brackets", "suffix", "repeat", "max_tokens"
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


@dataclass(kw_only=True)
class RepairQuery:
    """The params map of the core's `repair` (diffusion_core/repair.py `RepairRequest`): the
    document's text and the function's span `[line, character, end_line, end_character]` (0-based,
    code points) or a position inside it."""
    id: int
    uri: str
    code: str
    span: list[int] | None = None
    position: list[int] | None = None
    language: str = "python"

    def to_params(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(kw_only=True)
class RefactorQuery:
    """The params map of the core's `refactor` (diffusion_core/refactor.py `RefactorRequest`): the
    document's text (LF) and `since`, its text before the edit to propagate (None: repair every
    function)."""
    id: int
    uri: str
    code: str
    since: str | None = None
    language: str = "python"

    def to_params(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


# progress(done, total, label): called on the event loop before each block of a refactor
Progress = Callable[[int, int, str], None]


class CoreClient(Protocol):
    """What the server needs from a core, in process or behind a socket."""

    async def complete(self, request: CompletionRequest) -> CompletionResult:
        """Sample a completion; raises CompletionCancelled or CoreError. Cancelling the awaiting
        task cancels the request in the core too."""
        ...

    async def repair(self, query: RepairQuery) -> dict:
        """Repair the function: the result map of the core's `repair` ({edits: [{start_line,
        start_character, end_line, end_character, new_text, confidence}], text, rounds, ms, ...}).
        Raises CompletionCancelled or CoreError; cancelling the awaiting task cancels the repair."""
        ...

    async def refactor(self, query: RefactorQuery, progress: Progress | None = None) -> dict:
        """Repair every function of the file, or propagate the edit `query.since` -> `query.code`:
        the result map of the core's `refactor` ({edits: [{start, end, start_line, ..., new_text,
        confidence, label}], text, blocks, trusted, ms}). Raises CompletionCancelled or CoreError;
        cancelling the awaiting task stops it in the core (between model calls)."""
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


# --- the core daemon over its socket -------------------------------------------------------------

CORE_LOG = "core.log"


class SocketCore:
    """The CoreClient of the core daemon (`dllm-ls core`) on a unix socket.

    Connects to the core at `socket_path` (default: the daemon's), or starts one when none answers:
    under an exclusive `flock` on `SOCKET.spawn.lock`, so servers starting at once start one core
    (the core's own lock on `SOCKET.lock` is the backstop). When the connection drops (the core
    died), every pending request fails at once with a CoreError (the engine answers no items) and
    the core is started again in the background; the next request waits for it.
    """

    def __init__(self, socket_path=None, *, spawn: bool = True, checkpoint=None, device: str = "auto",
                 threads: int | None = None, start_timeout: float = 60.0):
        from ..diffusion_core.daemon import default_socket_path

        self.default_path = socket_path is None
        self.path = Path(socket_path) if socket_path is not None else default_socket_path()
        self.spawn, self.checkpoint, self.device, self.threads = spawn, checkpoint, device, threads
        self.start_timeout = start_timeout
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, asyncio.Future] = {}
        self._progress: dict[int, Progress] = {}  # refactor request id -> its progress callback
        self._ids = itertools.count(1)
        self._connecting: asyncio.Task | None = None
        self._closed = False
        self._health = CoreHealth(state="loading", message="connecting to the core", model=str(checkpoint or ""),
                                  device=device)
        self.restarts = 0  # connections lost and made again

    # --- connection -----------------------------------------------------------------------------

    async def _ensure(self):
        if self._writer is not None and not self._writer.is_closing():
            return
        if self._closed:
            raise CoreError("the core client is closed")
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.ensure_future(self._connect())
        await asyncio.shield(self._connecting)

    async def _connect(self):
        """Connect, starting the core when none answers. A connection counts once the core has
        answered `health` (a dying core can still accept a connection, then reset it)."""
        for attempt in range(3):
            try:
                reader, writer, frames = await self._open()
                break
            except (OSError, asyncio.TimeoutError, CoreError):
                if not self.spawn:
                    raise CoreError(f"no core answers on {self.path}",
                                    "start one with `dllm-ls core`, or set dllm.coreAddress to \"auto\"") from None
                if attempt == 2:
                    raise CoreError(f"cannot connect to the core on {self.path}",
                                    f"see {self.path.parent / CORE_LOG}") from None
                await asyncio.get_running_loop().run_in_executor(None, self._start_core)
        self._writer = writer
        asyncio.ensure_future(self._read(reader, writer, frames))

    async def _open(self):
        from ..diffusion_core import rpc

        reader, writer = await asyncio.open_unix_connection(str(self.path), limit=1 << 16)
        try:
            writer.write(rpc.request(0, "health", {}))
            frames = rpc.Reader()
            objs = []
            while not objs:
                data = await asyncio.wait_for(reader.read(1 << 16), 5)
                if not data:
                    raise ConnectionResetError("the core closed the connection")
                objs = frames.feed(data)
            msg = rpc.parse(objs[0])
            if msg.kind != rpc.RESPONSE or msg.msgid != 0 or msg.error is not None or not isinstance(msg.result, dict):
                raise CoreError(f"{self.path}: not a dllm-ls core", "stop what listens there or pick another socket")
        except BaseException:
            writer.close()
            raise
        self._health = _from_params(CoreHealth, msg.result)
        return reader, writer, frames

    def _start_core(self):
        """Executor thread: start a core unless one answers, holding the spawn lock."""
        import fcntl
        import socket
        import subprocess
        import sys
        import time

        from ..diffusion_core.daemon import private_dir

        from ..diffusion_core import rpc

        def answers() -> bool:  # connects and gets an answer to `health`
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(2)
            try:
                s.connect(str(self.path))
                s.sendall(rpc.request(0, "health", {}))
                return bool(s.recv(1 << 16))
            except OSError:
                return False
            finally:
                s.close()

        private_dir(self.path.parent, fix_mode=self.default_path)
        with open(self.path.with_name(self.path.name + ".spawn.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if answers():
                return
            logfile = self.path.parent / CORE_LOG
            cmd = [sys.executable, "-m", "dllm_ls.cli", "core", "--socket", str(self.path), "--device", self.device,
                   "--log-file", str(logfile)]
            if self.checkpoint:
                cmd += ["--checkpoint", str(self.checkpoint)]
            if self.threads:
                cmd += ["--threads", str(self.threads)]
            log.info("starting the core: %s", " ".join(cmd))
            with open(logfile, "ab") as err:
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                        start_new_session=True)  # outlives this server: shared by editors
            deadline = time.monotonic() + self.start_timeout
            while not answers():
                if proc.poll() is not None:
                    tail = logfile.read_text(errors="replace").strip().splitlines()[-1:] or [""]
                    raise CoreError(f"the core exited at start (status {proc.returncode}): {tail[0]}",
                                    f"see {logfile}")
                if time.monotonic() > deadline:
                    raise CoreError(f"the core did not listen on {self.path} within {self.start_timeout:.0f} s",
                                    f"see {logfile}")
                time.sleep(0.05)

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, frames):
        from ..diffusion_core import rpc

        try:
            while data := await reader.read(1 << 16):
                for obj in frames.feed(data):
                    msg = rpc.parse(obj)
                    if msg.kind == rpc.RESPONSE:
                        fut = self._pending.pop(msg.msgid, None)
                        if fut is not None and not fut.done():
                            fut.set_result((msg.error, msg.result))
                    elif msg.kind == rpc.NOTIFICATION and msg.method == "progress":
                        p = msg.params or {}
                        cb = self._progress.get(p.get("id"))
                        if cb is not None:
                            try:
                                cb(int(p.get("done", 0)), int(p.get("total", 0)), str(p.get("label", "")))
                            except Exception:  # a progress report never breaks the connection
                                log.exception("progress callback failed")
        except (OSError, rpc.FrameError, rpc.RpcError) as e:
            log.warning("connection to the core broken: %s", e)
        finally:
            writer.close()
            if self._writer is writer:
                self._writer = None
                pending, self._pending = self._pending, {}
                for fut in pending.values():
                    if not fut.done():
                        fut.set_exception(CoreError("the core exited during the request; it is being restarted",
                                                    f"see {self.path.parent / CORE_LOG}"))
                if not self._closed:
                    self.restarts += 1
                    self._health = dataclasses.replace(self._health, state="loading", message="restarting the core")
                    log.warning("the core went away; reconnecting")
                    if self.spawn and (self._connecting is None or self._connecting.done()):
                        self._connecting = asyncio.ensure_future(self._connect())
                        self._connecting.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _call(self, method: str, params: dict | None = None, timeout: float | None = None):
        from ..diffusion_core import rpc

        await self._ensure()
        msgid = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._pending[msgid] = fut
        self._writer.write(rpc.request(msgid, method, params))
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout) if timeout else await fut
        finally:
            self._pending.pop(msgid, None)

    def _notify(self, method: str, params: dict):
        from ..diffusion_core import rpc

        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(rpc.notification(method, params))

    async def _refresh_health(self):
        try:
            err, res = await self._call("health", timeout=5)
        except (CoreError, asyncio.TimeoutError, OSError):
            return
        if err is None and isinstance(res, dict):
            self._health = _from_params(CoreHealth, res)

    # --- CoreClient -----------------------------------------------------------------------------

    async def complete(self, request: CompletionRequest) -> CompletionResult:
        fut = asyncio.ensure_future(self._call("complete", request.to_params()))
        try:
            err, res = await asyncio.shield(fut)
        except asyncio.CancelledError:
            self.cancel(request.id)
            try:  # the request leaves the core within a step; do not wait longer than a second
                await asyncio.wait_for(fut, 1.0)
            except BaseException:
                pass
            raise
        finally:
            asyncio.ensure_future(self._refresh_health())
        if err is not None:
            code = err.get("code") if isinstance(err, dict) else None
            message = err.get("message", "") if isinstance(err, dict) else str(err)
            if code == "cancelled":
                raise CompletionCancelled(message)
            fix = message.split("; fix: ", 1)[1] if "; fix: " in message else ""
            raise CoreError(f"the core: {message.split('; fix: ', 1)[0]}", fix)
        return CompletionResult.from_params(res)

    async def repair(self, query: RepairQuery) -> dict:
        return await self._whole("repair", query)

    async def refactor(self, query: RefactorQuery, progress: Progress | None = None) -> dict:
        if progress is not None:
            self._progress[query.id] = progress
        try:
            return await self._whole("refactor", query)
        finally:
            self._progress.pop(query.id, None)

    async def _whole(self, method: str, query) -> dict:
        """`repair` / `refactor`: one request whose answer is a map; a cancelled awaiting task
        cancels it in the core and waits at most a second for it to leave."""
        fut = asyncio.ensure_future(self._call(method, query.to_params()))
        try:
            err, res = await asyncio.shield(fut)
        except asyncio.CancelledError:
            self.cancel(query.id)
            try:
                await asyncio.wait_for(fut, 1.0)
            except BaseException:
                pass
            raise
        if err is not None:
            message = err.get("message", "") if isinstance(err, dict) else str(err)
            if isinstance(err, dict) and err.get("code") == "cancelled":
                raise CompletionCancelled(message)
            raise CoreError(f"the core: {message.split('; fix: ', 1)[0]}",
                            message.split("; fix: ", 1)[1] if "; fix: " in message else "")
        return res

    def cancel(self, id: int) -> None:
        self._notify("cancel", {"id": id})

    def health(self) -> CoreHealth:
        return dataclasses.replace(self._health)

    async def wait_ready(self) -> CoreHealth:
        """Connect (starting the core when needed) and wait until its model is loaded or failed."""
        try:
            await self._ensure()
            while True:
                await self._refresh_health()
                if self._health.state != "loading":
                    return self.health()
                await asyncio.sleep(0.1)
        except CoreError as e:
            self._health = dataclasses.replace(self._health, state="error", message=e.message, fix=e.fix)
            return self.health()

    def close_document(self, uri: str) -> None:
        self._notify("close", {"uri": uri})

    async def close(self) -> None:
        """Disconnect; the core keeps running for the other editors."""
        self._closed = True
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
