"""`dllm-ls bench refactor`: whole-file refactor previews on held-out files (issue 11).

    dllm-ls bench refactor [--checkpoint DIR] [--limit N] [--val runs/x/corpus/val.jsonl] [--json PATH]

Quality: one seeded change per case (trainer/refactor_cases.py: rename a parameter, add a
parameter, change a return type) in a held-out file (HumanEval problems with their asserts as
call sites, and the corpus validation split with --val); "Propagate this edit" is the core's
`refactor` with `since` = the file before the change (what the server runs, called in this
process). Figures: the share of the other sites the preview updates correctly, and the share of
the lines it changes that should not change (per kind and over all).

Speed: "Repair this file" and "Propagate this edit" on a 500-line held-out file through a real
`dllm-ls serve` (the code action resolved over stdio, as an editor does), the median of
--repeats after one warm-up run. The file is the first corpus file of 450+ lines cut at 500 lines
(with --val; one where a top-level statement ends between 450 and 500 lines), else HumanEval
programs concatenated to 500 lines.

`--json PATH` merges RF.* figures into PATH (the format of docs/results.json); `--out PATH` writes
every case's score as JSON lines.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from dataclasses import asdict

from .bench import BenchError, Editor, add_model_arguments, describe_machine, write_results


def add_arguments(sub):
    b = sub.add_parser("refactor", help="whole-file refactor previews: sites updated, lines wrongly changed, "
                       "500-line preview time", description=__doc__.split("\n\n")[2].replace("\n", " "))
    add_model_arguments(b)
    b.add_argument("--limit", type=int, default=50, help="cases per kind (a seeded sample; 0 = all)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--kinds", default="rename_param,add_param,return_type", help="comma-separated kinds")
    b.add_argument("--val", metavar="JSONL", help="also take held-out files from this corpus validation split")
    b.add_argument("--no-humaneval", action="store_true", help="only the --val files")
    b.add_argument("--timing-lines", type=int, default=500, metavar="N", help="lines of the timed file (0: no timing)")
    b.add_argument("--repeats", type=int, default=3, help="timed runs of each action (after one warm-up)")
    b.add_argument("--json", metavar="PATH", help="merge the figures into this JSON file (docs/results.json)")
    b.add_argument("--out", metavar="PATH", help="write each case's score here (JSON lines)")
    b.add_argument("--server-log", metavar="PATH", help="the timed server's --log-file")
    b.add_argument("--oracle", action="store_true",
                   help="score the right previews instead of the model's (harness check: 1.0 and 0.0; no timing)")


# --- quality -----------------------------------------------------------------------------------

def load_repairer(args):
    import torch

    from ..diffusion_core.checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint
    from ..diffusion_core.repair import Repairer
    from ..diffusion_core.service import default_threads

    torch.set_num_threads(args.threads or default_threads())
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        path = resolve_checkpoint(args.checkpoint)
    except CheckpointError as e:
        raise BenchError(f"no model: {e}; pass --checkpoint DIR") from None
    model, tok = load_checkpoint(path, device=device)
    return Repairer(model, tok), str(path), device


def held_out_files(args) -> list[tuple[str, str, str]]:
    from ..trainer import refactor_cases as rc

    files = [] if args.no_humaneval else rc.humaneval_files()
    if args.val:
        files += rc.corpus_files(args.val, seed=args.seed)
    if not files:
        raise BenchError("no held-out files: drop --no-humaneval or give --val JSONL")
    return files


def run_cases(repairer, cases, progress: bool = True) -> list:
    """Each case's score; `repairer` None: the oracle's previews."""
    from ..diffusion_core.refactor import refactor
    from ..errors import DllmError
    from ..trainer.refactor_cases import CaseScore, oracle, score

    out = []
    for i, case in enumerate(cases):
        t0 = time.perf_counter()
        try:
            if repairer is None:
                sc = score(case, oracle(case))
            else:
                res = refactor(repairer, case.edited, since=case.original)
                sc = score(case, res.text)
                sc.edits = len(res.edits)
        except DllmError as e:  # a file the core refuses: its sites count as not updated
            sc = CaseScore(id=case.id, kind=case.kind, sites=len(case.sites), sites_ok=0, changed_lines=0,
                           wrong_lines=0, error=str(e)[:200])
        sc.ms = round((time.perf_counter() - t0) * 1000, 1)
        out.append(sc)
        if progress and (i + 1) % 10 == 0:
            print(f"refactor: {i + 1}/{len(cases)} cases", file=sys.stderr)
    return out


def summarise(scores, kinds) -> dict:
    """name -> (value, unit): the share of sites updated and of changed lines that should not
    have changed, over all cases and per kind; the changed lines per case (a share of nothing
    changed reads 0.0); the share of cases done exactly (every site, no wrong line)."""
    def rates(xs):
        sites, ok = sum(s.sites for s in xs), sum(s.sites_ok for s in xs)
        changed, wrong = sum(s.changed_lines for s in xs), sum(s.wrong_lines for s in xs)
        return (ok / sites if sites else 0.0), (wrong / changed if changed else 0.0)

    figures = {}
    updated, wrong = rates(scores)
    figures["RF.sites_updated"] = (round(updated, 4), "fraction")
    figures["RF.wrong_line_share"] = (round(wrong, 4), "fraction")
    for kind in kinds:
        xs = [s for s in scores if s.kind == kind]
        if xs:
            u, w = rates(xs)
            figures[f"RF.sites_updated_{kind}"] = (round(u, 4), "fraction")
            figures[f"RF.wrong_line_share_{kind}"] = (round(w, 4), "fraction")
    n = max(1, len(scores))
    figures["RF.changed_lines_per_case"] = (round(sum(s.changed_lines for s in scores) / n, 3), "lines")
    exact = sum(s.sites_ok == s.sites and s.wrong_lines == 0 for s in scores)
    figures["RF.cases_exact"] = (round(exact / len(scores), 4) if scores else 0.0, "fraction")
    return figures


# --- speed: a 500-line file through the language server ------------------------------------------

def timing_file(args, lines: int) -> tuple[str, str]:
    """(name, text) of a held-out Python file of `lines` lines (see the module docstring)."""
    import ast

    if args.val:
        from ..trainer.corpus import iter_records

        for rec in iter_records(args.val):
            text = rec["text"]
            if text.count("\n") < lines * 9 // 10:
                continue
            try:
                cut = _cut(text, lines)
                ast.parse(cut)
            except (SyntaxError, ValueError):
                continue
            if cut.count("\n") >= lines * 9 // 10:  # a top-level statement ends near the mark
                return rec["path"], cut
    from ..trainer.refactor_cases import humaneval_files

    parts, n = [], 0
    for _fid, _src, text in humaneval_files():
        prog = text.split("\n\ndef check():")[0].rstrip("\n") + "\n\n\n"
        parts.append(prog)
        n += prog.count("\n")
        if n >= lines:
            break
    return "HumanEval programs", _cut("".join(parts), lines)


def _cut(text: str, lines: int) -> str:
    """The first `lines` lines, ended at the last top-level statement that fits."""
    import ast

    head = "".join(text.splitlines(keepends=True)[:lines])
    try:
        ast.parse(head)
        return head
    except SyntaxError:
        pass
    tree = ast.parse(text)
    end = max((n.end_lineno for n in tree.body if n.end_lineno <= lines), default=lines)
    return "".join(text.splitlines(keepends=True)[:end])


def _seeded_rename(text: str) -> tuple[int, int, int, str] | None:
    """(line, start, end, new name) of a parameter rename in the file (0-based, characters)."""
    import random

    from ..trainer.refactor_cases import rename_param

    case = rename_param("timing", "timing", text, random.Random(0))
    if case is None:
        return None
    start, end, new = case.edit
    line_start = text.rfind("\n", 0, start) + 1
    return case.edit_line, start - line_start, end - line_start, new


async def time_previews(args, name: str, text: str) -> dict:
    from lsprotocol import types as T

    ed = Editor(args, {})
    await ed.start()
    try:
        async def resolve(uri: str, kind: str) -> float:
            p = T.Position(line=0, character=0)
            actions = await ed.client.text_document_code_action_async(T.CodeActionParams(
                text_document=T.TextDocumentIdentifier(uri=uri), range=T.Range(start=p, end=p),
                context=T.CodeActionContext(diagnostics=[], only=[kind], trigger_kind=T.CodeActionTriggerKind.Invoked)))
            if not actions:
                raise BenchError(f"the server offers no {kind} action on the timed file")
            t0 = time.perf_counter()
            await ed.client.code_action_resolve_async(actions[0])
            return time.perf_counter() - t0

        out = {"file": name, "lines": text.count("\n")}
        uri = "file:///bench/refactor_500.py"
        ed.open(uri, text)
        times = [await resolve(uri, "source.repairFile") for _ in range(args.repeats + 1)][1:]
        out["repair_file_s"] = statistics.median(times)
        edit = _seeded_rename(text)
        if edit is not None:
            line, a, b, new = edit
            rng = T.Range(start=T.Position(line=line, character=a), end=T.Position(line=line, character=b))
            ed.client.text_document_did_change(T.DidChangeTextDocumentParams(
                text_document=T.VersionedTextDocumentIdentifier(uri=uri, version=2),
                content_changes=[T.TextDocumentContentChangePartial(range=rng, text=new)]))
            times = [await resolve(uri, "refactor.rewrite") for _ in range(args.repeats + 1)][1:]
            out["propagate_s"] = statistics.median(times)
        info = await ed.telemetry()
        out["device"] = info["core"]["device"]
        return out
    finally:
        await ed.stop()


# --- the command -----------------------------------------------------------------------------------

def run(args) -> int:
    from ..trainer.refactor_cases import make_cases

    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if args.limit < 0 or args.repeats < 1:
        raise BenchError("--limit must be >= 0 and --repeats >= 1")
    try:
        cases = make_cases(held_out_files(args), kinds=kinds, seed=args.seed, limit=args.limit or None)
    except ValueError as e:
        raise BenchError(str(e)) from None
    if args.oracle:
        repairer, model, device = None, "oracle", "cpu"
        args.timing_lines = 0
    else:
        repairer, model, device = load_repairer(args)
    t0 = time.perf_counter()
    scores = run_cases(repairer, cases)
    seconds = time.perf_counter() - t0
    figures = summarise(scores, kinds)
    dev = "gpu" if device.startswith("cuda") else "cpu"
    timing = None
    if args.timing_lines:
        del repairer  # the server loads its own copy
        name, text = timing_file(args, args.timing_lines)
        timing = asyncio.run(time_previews(args, name, text))
        figures[f"RF.{dev}_repair_file_{args.timing_lines}_lines_s"] = (round(timing["repair_file_s"], 2), "s")
        if "propagate_s" in timing:
            figures[f"RF.{dev}_propagate_{args.timing_lines}_lines_s"] = (round(timing["propagate_s"], 2), "s")
    print(f"refactor: {len(cases)} cases ({', '.join(f'{k} {sum(c.kind == k for c in cases)}' for k in kinds)}), "
          f"{sum(len(c.sites) for c in cases)} sites; model {model} on {device}; {seconds:.1f} s")
    if timing is not None:
        print(f"  timed file: {timing['file']} ({timing['lines']} lines) through dllm-ls serve on {timing['device']}")
    for fname, (value, unit) in figures.items():
        print(f"  {fname:40s} {value:>10} {unit}")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            for s in scores:
                f.write(json.dumps(asdict(s)) + "\n")
    if args.json:
        command = "dllm-ls bench " + " ".join(sys.argv[2:] if len(sys.argv) > 2 else ["refactor"])
        write_results(args.json, figures, describe_machine(device), command)
    return 0

