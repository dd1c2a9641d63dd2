"""`dllm-ls refactor FILE [--since OLD_FILE] [--json]`: repair every function of FILE, or (with
--since) propagate the edit OLD_FILE -> FILE to the rest of the file (the changed region is kept as
it is); prints a unified diff (nothing when the model finds nothing to change), or the core's
result map as JSON. No file is written."""

from __future__ import annotations

import argparse
import difflib
import json
from pathlib import Path

from ..errors import DllmError


def add_arguments(p: argparse.ArgumentParser):
    p.add_argument("file", metavar="FILE")
    p.add_argument("--since", metavar="OLD_FILE", help="the file before the edit to propagate")
    p.add_argument("--json", action="store_true", help="print the edits as JSON (for tools)")
    p.add_argument("--checkpoint", metavar="DIR", help="checkpoint directory; default: the shipped model")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").replace("\r\n", "\n")
    except (OSError, UnicodeDecodeError) as e:
        raise DllmError(f"cannot read {path}: {e}") from None


def diff(path: str, code: str, new: str) -> str:
    return "".join(difflib.unified_diff(code.splitlines(True), new.splitlines(True), f"a/{path}", f"b/{path}"))


def run(args, repairer=None) -> int:
    from .refactor import RefactorRequest, run_refactor

    code = _read(args.file)
    since = _read(args.since) if args.since else None
    if repairer is None:
        import torch

        from .checkpoint import load_checkpoint, resolve_checkpoint
        from .repair import Repairer

        device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        model, tok = load_checkpoint(resolve_checkpoint(args.checkpoint), device=device)
        repairer = Repairer(model, tok)
    req = RefactorRequest(id=0, uri=Path(args.file).resolve().as_uri(), code=code, since=since)
    res = run_refactor(repairer, req)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(diff(args.file, code, res["text"]), end="")
    return 0
