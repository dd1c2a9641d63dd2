"""`dllm-ls complete FILE --line L --col C`: print the completion at a position (1-based)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from ..errors import DllmError
from .cli_common import add_model_arguments, load_sampler


def add_arguments(p: argparse.ArgumentParser):
    p.add_argument("file", metavar="FILE", help="source file (UTF-8)")
    p.add_argument("--line", type=int, required=True, help="line, 1-based")
    p.add_argument("--col", type=int, required=True, help="column in characters, 1-based (len(line)+1 = end of line)")
    p.add_argument("--mode", choices=["line", "block", "auto"], default="auto",
                   help="single line, multi-line block, or chosen from the cursor's line")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--trace", action="store_true", help="print steps, tokens and time to stderr")
    add_model_arguments(p)


def split_at(text: str, line: int, col: int, name: str) -> tuple[str, str]:
    """(prefix, suffix) of text at 1-based line and column (characters); clear errors when out of range."""
    lines = text.split("\n")
    if line < 1 or line > len(lines):
        raise DllmError(f"{name}: line {line} is out of range (the file has {len(lines)} lines)")
    body = lines[line - 1].removesuffix("\r")
    if col < 1 or col > len(body) + 1:
        raise DllmError(f"{name}:{line}: column {col} is out of range (the line has {len(body)} characters)")
    offset = sum(len(ln) + 1 for ln in lines[: line - 1]) + col - 1
    return text[:offset], text[offset:]


def run(args) -> int:
    from .stops import auto_mode

    path = Path(args.file)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DllmError(f"{path}: cannot read ({e.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DllmError(f"{path}: not UTF-8 (invalid byte at offset {e.start}); convert it to UTF-8") from None
    prefix, suffix = split_at(text, args.line, args.col, str(path))
    sampler, cfg = load_sampler(args)
    cfg = dataclasses.replace(cfg, max_tokens=args.max_tokens)
    mode = auto_mode(prefix, suffix) if args.mode == "auto" else args.mode
    out = sampler.complete(prefix, suffix, mode=mode, cfg=cfg)
    sys.stdout.write(out.text + "\n")
    if args.trace:
        t = out.trace
        print(json.dumps({"mode": mode, "stop": out.stop, "steps": t.steps, "tokens": t.tokens,
                          "ms": round(t.ms, 1), "per_step": t.per_step}), file=sys.stderr)
    return 0
