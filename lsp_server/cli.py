"""`dllm-ls serve`: the language server over stdio (or TCP for debugging)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ..errors import DllmError


def add_arguments(p: argparse.ArgumentParser):
    p.add_argument("--tcp", metavar="HOST:PORT", help="listen on TCP instead of stdio (for debugging)")
    p.add_argument("--checkpoint", metavar="DIR",
                   help="model directory (config.json, model.safetensors, tokenizer.json); the `dllm.checkpoint` "
                        "setting overrides it; default: the model shipped in the package")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (a GPU when there is one)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads for the model (default: $OMP_NUM_THREADS, else half the cores, at most 8)")
    p.add_argument("--log-file", metavar="PATH", help="write a detailed log (with tracebacks) to PATH")
    p.add_argument("-v", "--verbose", action="store_true", help="log requests to stderr")


class _OneLine(logging.Formatter):
    """stderr shows one line per record: an editor's log panel never gets a traceback."""

    def format(self, record):
        record = logging.makeLogRecord(record.__dict__)
        record.exc_info = record.exc_text = record.stack_info = None
        msg = super().format(record)
        return msg.splitlines()[0] if msg else msg


def setup_logging(verbose: bool, log_file: str | None):
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if log_file else (logging.INFO if verbose else logging.WARNING))
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.INFO if verbose else logging.WARNING)
    err.setFormatter(_OneLine("dllm-ls %(levelname)s %(name)s: %(message)s"))
    root.addHandler(err)
    # pygls logs every message body at INFO and a traceback for every error response
    logging.getLogger("pygls").setLevel(logging.DEBUG if log_file else logging.ERROR)
    if log_file:
        try:
            fh = logging.FileHandler(log_file, encoding="utf-8")
        except OSError as e:
            raise DllmError(f"--log-file {log_file}: cannot open ({e.strerror})") from None
        fh.setLevel(logging.DEBUG)
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(fh)


def parse_hostport(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise DllmError(f"--tcp {value}: expected HOST:PORT, e.g. 127.0.0.1:2087")
    return host or "127.0.0.1", int(port)


def run(args) -> int:
    from .server import create_server, default_core_factory

    setup_logging(args.verbose, args.log_file)
    if args.threads is not None and args.threads < 1:
        raise DllmError(f"--threads {args.threads}: must be at least 1")
    server = create_server(default_core_factory(args.checkpoint, args.device, args.threads))
    if args.tcp:
        host, port = parse_hostport(args.tcp)
        server.start_tcp(host, port)
        return 0
    stdout = sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the protocol stream
    try:
        server.start_io(sys.stdin.buffer, stdout)
    except SystemExit:  # pygls ends `exit` with sys.exit (from a callback: it may not reach here)
        pass
    code = 0 if getattr(server.protocol, "_shutdown", False) else 1  # the spec: 1 without `shutdown`
    # Leave at once: the interpreter's teardown (torch, the core's threads) took 1-2.5 s, longer
    # than clients wait after `exit` (vscode-languageclient kills the server after 2 s). Nothing
    # is left to save: the logs are flushed here, the shared core daemon lives on by design.
    logging.shutdown()
    for f in (stdout, sys.stderr):
        try:
            f.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
