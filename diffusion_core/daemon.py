"""`dllm-ls core`: the resident diffusion core, msgpack-rpc over a private unix socket.

One core per user and machine, shared by every editor: it holds an exclusive `flock` on
`SOCKET.lock` for its whole life, so a second core for the same socket exits at once. The socket
lives in a private directory (0700, owned by the user) and is itself 0600; the default is
`$XDG_RUNTIME_DIR/dllm-ls/core.sock`, else `/tmp/dllm-ls-$UID/core.sock`. TCP is off unless
`--tcp HOST:PORT` is given, and then needs `--token-file F`: the first message on a TCP connection
must be `[0, id, "auth", [{"token": ...}]]`; anything else is answered `unauthorized` and closed.

Methods (requests; params an array holding one map):
- `complete` {id, uri, prefix, suffix, mode, max_tokens, block_size, threshold} -> result map
- `repair` {id, uri, code, span [l, c, l, c] | position [l, c], language} -> {edits, text, rounds, ms, ...}
- `refactor` {id, uri, code, since (the text before the edit; absent: repair every function),
  language} -> {edits (each with a `label`: its function), text, blocks, trusted, ms}; while it
  runs, the notification `progress` {id, done, total, label} before each block
  (complete's result: text, stop, steps, tokens, prompt_tokens, reused_tokens, queue_ms, compute_ms), or the error
  `cancelled` (cancelled, superseded, or the client went away).
- `cancel` {id}: request or notification; stops the request at the next denoising step.
- `close` {uri}: forget the document's session.   `health` {} / `stats` {}: maps.
- `shutdown` {}: answers, then the core exits.
Errors are `{"code", "message"}` maps (rpc.py). Bytes that are not msgpack (or a frame over
rpc.MAX_FRAME) get one `parse_error` answer and the connection is closed; a bad message, unknown
method or bad params gets an error and the connection goes on. The core always survives a client.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import hmac
import logging
import os
import signal
import stat
import sys
import tempfile
from pathlib import Path

from ..errors import DllmError
from . import rpc

log = logging.getLogger(__name__)


def default_socket_path() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "dllm-ls" / "core.sock"
    return Path(tempfile.gettempdir()) / f"dllm-ls-{os.getuid()}" / "core.sock"


def private_dir(d: Path, *, fix_mode: bool) -> Path:
    """Create `d` 0700, or check that it is a directory of ours that no one else can enter.
    `fix_mode`: tighten the mode of our own directory (the default location) instead of refusing."""
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(d)
    if not stat.S_ISDIR(st.st_mode):
        raise DllmError(f"{d}: not a directory (a symlink?); remove it or pass --socket in a private directory")
    if st.st_uid != os.getuid():
        raise DllmError(f"{d}: owned by uid {st.st_uid}, not by you; remove it or pass --socket PATH elsewhere")
    if st.st_mode & 0o077:
        if not fix_mode:
            raise DllmError(f"{d}: other users can access it (mode {stat.S_IMODE(st.st_mode):o}); "
                            f"`chmod 700 {d}` or pass --socket in a private directory")
        os.chmod(d, 0o700)
    return d


def lock_path(sock: Path) -> Path:
    return sock.with_name(sock.name + ".lock")


def take_lock(sock: Path):
    """The exclusive lock of the core serving `sock`, held until the process exits."""
    f = open(lock_path(sock), "a+")
    os.chmod(f.name, 0o600)
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        pid = f.read().strip() or "?"
        f.close()
        raise DllmError(f"another core (pid {pid}) already serves {sock}; stop it with "
                        "`kill PID`, or pass --socket PATH for a second one") from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f


def read_token(path: str) -> str:
    p = Path(path)
    try:
        st = p.stat()
        token = p.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise DllmError(f"--token-file {path}: cannot read it ({e.strerror})") from None
    if st.st_mode & 0o077:
        raise DllmError(f"--token-file {path}: other users can read it; `chmod 600 {path}`")
    if len(token) < 16:
        raise DllmError(f"--token-file {path}: the token must have at least 16 characters "
                        "(e.g. `python -c 'import secrets; print(secrets.token_hex(32))' > FILE`)")
    return token


class Daemon:
    """The event loop's side: connections, framing, dispatch to the CoreService."""

    def __init__(self, service, socket_path: str | Path, *, tcp: tuple[str, int] | None = None,
                 token: str | None = None, fix_mode: bool = False):
        if tcp is not None and not token:
            raise DllmError("--tcp needs --token-file F: a TCP port is reachable by every user of the machine")
        self.service, self.socket_path, self.tcp, self.token = service, Path(socket_path), tcp, token
        self.fix_mode = fix_mode
        self.tcp_port: int | None = None
        self._lock_file = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.ready = None  # a threading.Event set once listening (for tests that run it in a thread)

    async def serve(self):
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        private_dir(self.socket_path.parent, fix_mode=self.fix_mode)
        self._lock_file = take_lock(self.socket_path)
        if self.socket_path.exists() or self.socket_path.is_symlink():
            self.socket_path.unlink()  # stale: its core is gone (we hold the lock)
        old = os.umask(0o177)
        try:
            servers = [await asyncio.start_unix_server(self._client, path=str(self.socket_path), limit=1 << 16)]
        finally:
            os.umask(old)
        os.chmod(self.socket_path, 0o600)
        if self.tcp is not None:
            srv = await asyncio.start_server(lambda r, w: self._client(r, w, tcp=True), *self.tcp)
            self.tcp_port = srv.sockets[0].getsockname()[1]
            servers.append(srv)
            log.info("listening on tcp %s:%d (token required)", self.tcp[0], self.tcp_port)
        log.info("listening on %s (pid %d)", self.socket_path, os.getpid())
        if self.ready is not None:
            self.ready.set()
        try:
            await self._stop.wait()
        finally:
            for s in servers:
                s.close()
            try:
                self.socket_path.unlink()
            except FileNotFoundError:
                pass
            self.service.stop()
            self._lock_file.close()

    def stop(self):
        """Thread-safe."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tcp: bool = False):
        conn = object()  # identifies the client's requests in the service
        authed = not tcp
        frames = rpc.Reader()
        tasks: set[asyncio.Task] = set()

        def send(data: bytes):
            if not writer.is_closing():
                writer.write(data)

        try:
            while data := await reader.read(1 << 16):
                try:
                    objs = frames.feed(data)
                except rpc.FrameError as e:
                    send(rpc.response(None, rpc.RpcError(rpc.PARSE_ERROR, f"{e}; closing the connection").to_wire()))
                    log.warning("client sent a bad frame (%s); connection closed", e)
                    break
                for obj in objs:
                    try:
                        msg = rpc.parse(obj)
                    except rpc.RpcError as e:
                        send(rpc.response(e.msgid, e.to_wire()))
                        continue
                    if not authed:
                        ok = (msg.kind == rpc.REQUEST and msg.method == "auth"
                              and isinstance(msg.params.get("token"), str)
                              and hmac.compare_digest(msg.params["token"].encode(), self.token.encode()))
                        if not ok:
                            send(rpc.response(msg.msgid, rpc.RpcError(
                                rpc.UNAUTHORIZED, "TCP connections must first send auth {token} with the core's token").to_wire()))
                            await writer.drain()
                            return
                        authed = True
                        send(rpc.response(msg.msgid, None, {"ok": True}))
                        continue
                    self._dispatch(msg, conn, send, tasks)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.service.cancel_owner(conn)
            writer.close()

    def _dispatch(self, msg: rpc.Message, conn, send, tasks: set):
        if msg.kind == rpc.RESPONSE:
            return  # the core sends no requests
        reply = msg.kind == rpc.REQUEST

        def answer(error=None, result=None):
            if reply:
                send(rpc.response(msg.msgid, error, result))

        p = msg.params or {}
        try:
            if msg.method in ("complete", "repair", "refactor"):
                if not reply:
                    raise rpc.RpcError(rpc.INVALID_REQUEST, f"{msg.method} must be a request")
                submit = {"complete": self.service.submit, "repair": self.service.submit_repair,
                          "refactor": self.service.submit_refactor}[msg.method]
                if msg.method == "refactor":
                    rid = p.get("id", msg.msgid)
                    loop = asyncio.get_running_loop()

                    def progress(done, total, label, rid=rid):  # worker thread -> this connection
                        try:
                            loop.call_soon_threadsafe(send, rpc.notification(
                                "progress", {"id": rid, "done": done, "total": total, "label": label}))
                        except RuntimeError:  # the loop is closed: the core is stopping
                            pass
                    fut = submit(p, conn, msg.msgid, progress=progress)
                else:
                    fut = submit(p, conn, msg.msgid)
                task = asyncio.ensure_future(self._finish(asyncio.wrap_future(fut), answer))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            elif msg.method == "cancel":
                if not isinstance(p.get("id"), int):
                    raise rpc.RpcError(rpc.INVALID_PARAMS, "cancel: expected {id: int}")
                answer(result={"found": self.service.cancel(conn, p["id"])})
            elif msg.method == "close":
                if not isinstance(p.get("uri"), str):
                    raise rpc.RpcError(rpc.INVALID_PARAMS, "close: expected {uri: str}")
                self.service.close_document(p["uri"])
                answer(result={"ok": True})
            elif msg.method == "health":
                answer(result=self.service.health())
            elif msg.method == "stats":
                answer(result=self.service.stats())
            elif msg.method == "shutdown":
                answer(result={"ok": True})
                log.info("shutdown requested")
                self._loop.call_soon(self._stop.set)
            else:
                raise rpc.RpcError(rpc.METHOD_NOT_FOUND, f"unknown method {msg.method!r:.60}; the core serves "
                                   "complete, repair, refactor, cancel, close, health, stats, shutdown")
        except rpc.RpcError as e:
            if reply:
                answer(error=e.to_wire())
            else:
                log.info("notification %r: %s", msg.method, e.message)

    @staticmethod
    async def _finish(fut, answer):
        try:
            result = await fut
        except rpc.RpcError as e:
            return answer(error=e.to_wire())
        except Exception as e:  # never lose the answer
            log.exception("complete failed")
            return answer(error=rpc.RpcError(rpc.INTERNAL, f"{type(e).__name__}: {e}").to_wire())
        answer(result=result)


# --- the watcher -----------------------------------------------------------------------------

def watch_checkpoint(service, directory: Path, stop, debounce_ms: int = 500):
    """Thread: reload the checkpoint whenever a file in `directory` changes (watchfiles)."""
    try:
        import watchfiles
    except ImportError:
        log.warning("watchfiles is not installed: hot reload is off (pip install watchfiles)")
        return
    for _changes in watchfiles.watch(directory, stop_event=stop, debounce=debounce_ms, step=50,
                                     raise_interrupt=False,
                                     watch_filter=lambda _c, p: not Path(p).name.startswith(".")):
        log.info("checkpoint %s changed: reloading", directory)
        service.request_reload(directory)


# --- the command line ------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser):
    p.add_argument("--checkpoint", metavar="DIR", help="model directory; default: the model shipped in the package")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (a GPU when there is one)")
    p.add_argument("--socket", metavar="PATH", help=f"unix socket (default {default_socket_path()})")
    p.add_argument("--tcp", metavar="HOST:PORT", help="also listen on TCP (needs --token-file)")
    p.add_argument("--token-file", metavar="F", help="file holding the token TCP clients must send (mode 600)")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads for the model")
    p.add_argument("--session-mb", type=int, default=512, metavar="MB",
                   help="memory for per-document KV caches (least recently used dropped first)")
    p.add_argument("--no-watch", action="store_true", help="do not reload the checkpoint when it changes")
    p.add_argument("--log-file", metavar="PATH", help="write the log to PATH (default: stderr)")
    p.add_argument("-v", "--verbose", action="store_true")


def run(args) -> int:
    import threading

    from .service import CoreService

    level = logging.INFO if args.verbose or args.log_file else logging.WARNING
    handler = logging.FileHandler(args.log_file) if args.log_file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s dllm-ls core %(levelname)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(level)
    tcp = None
    if args.tcp:
        host, sep, port = args.tcp.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
            raise DllmError(f"--tcp {args.tcp}: expected HOST:PORT, e.g. 127.0.0.1:7777")
        tcp = (host or "127.0.0.1", int(port))
    if tcp and not args.token_file:
        raise DllmError("--tcp needs --token-file F: a TCP port is reachable by every user of the machine")
    token = read_token(args.token_file) if args.token_file else None
    sock = Path(args.socket) if args.socket else default_socket_path()
    service = CoreService(checkpoint=args.checkpoint, device=args.device, threads=args.threads,
                          session_bytes=args.session_mb << 20)
    daemon = Daemon(service, sock, tcp=tcp, token=token, fix_mode=args.socket is None)
    stop_watch = threading.Event()

    async def main():
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, daemon.stop)
        daemon.ready = threading.Event()
        serving = asyncio.ensure_future(daemon.serve())
        while not daemon.ready.is_set() and not serving.done():
            await asyncio.sleep(0.01)
        if serving.done():
            return await serving
        service.start()  # the model loads after the socket listens: clients see "loading"
        ckpt = args.checkpoint
        if not args.no_watch and ckpt and Path(ckpt).is_dir():
            threading.Thread(target=watch_checkpoint, args=(service, Path(ckpt), stop_watch),
                             daemon=True, name="dllm-core-watch").start()
        await serving

    try:
        asyncio.run(main())
    finally:
        stop_watch.set()
    return 0
