"""`dllm-ls fix FILE --line L [--json]`: repair the function around line L (1-based); prints a
unified diff (nothing when the model finds nothing to fix), or the core's result map as JSON.
The file is never written."""

from __future__ import annotations

import argparse
import difflib
import json
from pathlib import Path

from ..errors import DllmError


def add_arguments(p: argparse.ArgumentParser):
    p.add_argument("file", metavar="FILE")
    p.add_argument("--line", type=int, required=True, help="a line inside the function (1-based)")
    p.add_argument("--json", action="store_true", help="print the edits as JSON (for tools)")
    p.add_argument("--checkpoint", metavar="DIR", help="checkpoint directory; default: the shipped model")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")


def run(args) -> int:
    import torch

    from .checkpoint import load_checkpoint, resolve_checkpoint
    from .code_spans import TextEdit, apply_edits
    from .repair import RepairRequest, Repairer, run_repair

    try:
        code = Path(args.file).read_text(encoding="utf-8").replace("\r\n", "\n")
    except (OSError, UnicodeDecodeError) as e:
        raise DllmError(f"cannot read {args.file}: {e}") from None
    if args.line < 1:
        raise DllmError("--line is 1-based")
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    model, tok = load_checkpoint(resolve_checkpoint(args.checkpoint), device=device)
    req = RepairRequest(id=0, uri=Path(args.file).resolve().as_uri(), code=code, position=(args.line - 1, 0))
    res = run_repair(Repairer(model, tok), req)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    fixed = apply_edits(code, [TextEdit(**e) for e in res["edits"]])
    print("".join(difflib.unified_diff(code.splitlines(True), fixed.splitlines(True),
                                       f"a/{args.file}", f"b/{args.file}")), end="")
    return 0
