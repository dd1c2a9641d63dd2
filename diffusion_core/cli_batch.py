"""`dllm-ls batch`: JSON lines in, JSON lines out, one answer per input line, in order.

Input:  {"prefix": str, "suffix": str = "", "mode": "line"|"block"|"auto" = "auto", "max_tokens": int = 64}
Output: {"completion": str, "steps": int, "tokens": int, "ms": float, "stop": str}
        or {"error": str} for a line that cannot be answered; the run goes on.
Benchmarks and outside evaluations drive the model through this: keep it stable.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from .cli_common import add_model_arguments, load_sampler

MAX_TOKENS_LIMIT = 1024


def add_arguments(p: argparse.ArgumentParser):
    add_model_arguments(p)


class BadRequest(ValueError):
    pass


def parse_request(raw: bytes) -> dict:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(f"not UTF-8 (invalid byte at offset {e.start})") from None
    if not line.strip():
        raise BadRequest("empty line; expected a JSON object")
    try:
        req = json.loads(line)
    except json.JSONDecodeError as e:
        raise BadRequest(f"invalid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(req, dict):
        raise BadRequest("expected a JSON object")
    prefix, suffix = req.get("prefix"), req.get("suffix", "")
    if not isinstance(prefix, str):
        raise BadRequest('"prefix" must be a string')
    if not isinstance(suffix, str):
        raise BadRequest('"suffix" must be a string')
    mode = req.get("mode", "auto")
    if mode not in ("line", "block", "auto"):
        raise BadRequest('"mode" must be "line", "block" or "auto"')
    max_tokens = req.get("max_tokens", 64)
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 1 <= max_tokens <= MAX_TOKENS_LIMIT:
        raise BadRequest(f'"max_tokens" must be an integer from 1 to {MAX_TOKENS_LIMIT}')
    for name, s in (("prefix", prefix), ("suffix", suffix)):
        try:
            s.encode("utf-8")
        except UnicodeEncodeError as e:
            raise BadRequest(f'"{name}" holds a lone surrogate at offset {e.start}, not valid Unicode') from None
    return {"prefix": prefix, "suffix": suffix, "mode": mode, "max_tokens": max_tokens}


def run(args) -> int:
    from .stops import auto_mode

    sampler, cfg = load_sampler(args)
    out = sys.stdout
    for n, raw in enumerate(sys.stdin.buffer, start=1):
        try:
            req = parse_request(raw.rstrip(b"\r\n"))
            mode = req["mode"]
            if mode == "auto":
                mode = auto_mode(req["prefix"], req["suffix"])
            c = sampler.complete(req["prefix"], req["suffix"], mode=mode,
                                 cfg=dataclasses.replace(cfg, max_tokens=req["max_tokens"]))
            answer = {"completion": c.text, "steps": c.trace.steps, "tokens": c.trace.tokens,
                      "ms": round(c.trace.ms, 2), "stop": c.stop}
        except BadRequest as e:
            answer = {"error": f"line {n}: {e}"}
        except Exception as e:  # one bad request must not end the run
            answer = {"error": f"line {n}: {type(e).__name__}: {e}"}
        out.write(json.dumps(answer, ensure_ascii=False) + "\n")
        out.flush()
    return 0
