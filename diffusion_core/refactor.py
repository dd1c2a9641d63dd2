"""Refactor: repair over a whole file, one combined result ("Repair this file"), or the follow-on
changes of an edit ("Propagate this edit").

The file is cut into blocks: every function and method (decorators included), and each run of
other top-level statements (or of statements in a class body) between them; a file that does not
parse is cut by indentation (`def` blocks only). Each block goes through `Repairer.repair` in file
order, against the text as repaired so far, so a call site below a renamed definition is judged
with the new definition in its prompt.

Propagate: given the text before the edit (`since`), the changed region of the new text (the
span from the first to the last changed character) is trusted: no token that overlaps it is ever
a suspect or remasked, and an edit that reaches into it is dropped. Each block is judged twice,
in the text before the edit and in the edited text, and a token is a suspect only if it scores
low given the edit AND its log-prob fell by `RepairConfig.min_drop` since (the old name at a call
site, a missing argument): what the edit made inconsistent, not what the model doubted anyway,
so a block the edit does not touch costs two model calls, and one whose prompt window does not
reach the edit (nor a change made before it) none. A suspect span may also grow by
PROPAGATE_INSERT tokens (an argument to add is several tokens).

"Repair this file" leaves docstrings alone (a function's docstring is its trusted region there):
a model doubts prose far more than code, and rewriting it is not a repair.

The result holds the edits of the whole file in the coordinates of `code`, each labelled with its
block ("function add (line 4)"), the new text, and one entry per block. Cancellation is checked
between blocks and inside each repair (at every model call).
"""

from __future__ import annotations

import ast
import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

from .code_spans import RepairError, TextEdit, apply_edits, def_block_by_indent, line_col
from .repair import Repairer
from .sampler import CompletionCancelled


# Propagating an edit often inserts at a follow-on site (a new argument: ", x" is two tokens or
# more), so a suspect span may also grow by this many tokens (repair's own search: -1, 0, +1).
PROPAGATE_INSERT = 2


@dataclass
class Block:
    start: int  # characters of the document [start, end), whole lines
    end: int
    label: str
    doc: tuple[int, int] | None = None  # a function's docstring [start, end) (characters), if any


def line_starts(code: str) -> list[int]:
    """Character offset of each line's start, and the text's length last."""
    starts, acc = [], 0
    for s in code.splitlines(keepends=True):
        starts.append(acc)
        acc += len(s)
    starts.append(acc)
    return starts


def python_blocks(code: str) -> list[Block]:
    """The blocks of a Python file, in order (see the module docstring)."""
    starts = line_starts(code)
    nlines = len(starts) - 1

    def span(first: int, last: int) -> tuple[int, int]:  # 1-based inclusive lines
        return starts[first - 1], starts[min(last, nlines)]

    out: list[Block] = []
    try:
        tree = ast.parse(code)
    except SyntaxError:
        lines = code.splitlines(keepends=True)
        line = 1
        while line <= nlines:
            s = lines[line - 1].lstrip()
            got = def_block_by_indent(lines, line) if s.startswith(("def ", "async def ")) else None
            if got is not None and got[0] == line:
                name = s.split("(")[0].split()[-1]
                out.append(Block(*span(*got), f"function {name} (line {line})"))
                line = got[1] + 1
            else:
                line += 1
        return out

    def walk(body: list[ast.stmt], owner: str):
        run: list[ast.stmt] = []

        def flush():
            if run:
                a, b = run[0].lineno, run[-1].end_lineno
                where = f"{owner} " if owner else ""
                out.append(Block(*span(a, b), f"{where}statements (lines {a}-{b})".strip()))
                run.clear()

        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                flush()
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                kind = "method" if owner else "function"
                name = f"{owner.split()[-1]}.{node.name}" if owner else node.name
                doc = None
                b0 = node.body[0]
                if isinstance(b0, ast.Expr) and isinstance(b0.value, ast.Constant) and isinstance(b0.value.value, str):
                    doc = span(b0.lineno, b0.end_lineno)  # its whole lines
                out.append(Block(*span(first, node.end_lineno), f"{kind} {name} (line {first})", doc))
            elif isinstance(node, ast.ClassDef):
                flush()
                walk(node.body, f"class {node.name}")
            else:
                run.append(node)
        flush()

    walk(tree.body, "")
    return out


def changed_region(old: str, new: str) -> tuple[int, int] | None:
    """[start, end) of `new` that differs from `old`: from the first to the last changed
    character (the common prefix and suffix trimmed, so O(len)); None when they are equal. A pure
    deletion gives an empty range at the place of the deletion."""
    old, new = old.replace("\r\n", "\n"), new.replace("\r\n", "\n")
    if old == new:
        return None
    n = min(len(old), len(new))
    p = 0
    while p < n and old[p] == new[p]:
        p += 1
    s = 0
    while s < n - p and old[-1 - s] == new[-1 - s]:
        s += 1
    return p, len(new) - s


def old_span(blk: Block, region: tuple[int, int], delta: int) -> tuple[int, int]:
    """The block's [start, end) in the text before the edit, given the changed region [a, b) of
    the new text and delta = len(new) - len(old): text before the region is where it was, text
    after it moved by delta, a bound inside it goes to the region's old bounds."""
    a, b = region

    def to_old(x: int, end: bool) -> int:
        if x <= a:
            return x
        if x >= b:
            return x - delta
        return b - delta if end else a
    return to_old(blk.start, False), to_old(blk.end, True)


@dataclass
class RefactorEdit(TextEdit):
    label: str  # the block it belongs to, e.g. "function add (line 4)"


@dataclass
class RefactorResult:
    edits: list[RefactorEdit]
    text: str  # the whole file after the edits
    blocks: list[dict]  # {label, span, edits, score_before, score_after, ms, skipped, judged}
    trusted: tuple[int, int] | None
    ms: float

    def to_params(self) -> dict:
        return dict(edits=[asdict(e) for e in self.edits], text=self.text, blocks=self.blocks,
                    trusted=list(self.trusted) if self.trusted is not None else None, ms=self.ms)


def refactor(repairer: Repairer, code: str, *, since: str | None = None, language: str = "python",
             blocks: list[Block] | None = None, should_stop: Callable[[], bool] | None = None,
             progress: Callable[[int, int, str], None] | None = None) -> RefactorResult:
    """Repair every block of `code` (or propagate the edit `since` -> `code`); see the module doc."""
    t0 = time.perf_counter()
    code = code.replace("\r\n", "\n")
    if blocks is None:
        if language != "python":
            raise RepairError(f"no block finder for {language}; send the blocks")
        blocks = python_blocks(code)
    since = since.replace("\r\n", "\n") if since is not None else None
    trusted = changed_region(since, code) if since is not None else None
    if trusted is not None and (PROPAGATE_INSERT not in repairer.cfg.length_deltas or not repairer.cfg.remask):
        repairer = copy.copy(repairer)  # the same model, a wider search: remasked spans that may grow
        repairer.cfg = replace(repairer.cfg, remask=True, length_deltas=tuple(
            sorted(set(repairer.cfg.length_deltas) | {PROPAGATE_INSERT})))
    current, shift = code, 0  # shift: len(current) - len(code) from the blocks done so far
    edits: list[RefactorEdit] = []
    report: list[dict] = []
    for n, blk in enumerate(blocks):
        if should_stop is not None and should_stop():
            raise CompletionCancelled
        if progress is not None:
            progress(n, len(blocks), blk.label)
        entry = dict(label=blk.label, span=[blk.start, blk.end], edits=0, skipped="")
        tr = (trusted[0] + shift, trusted[1] + shift) if trusted is not None else None
        if tr is None and blk.doc is not None:  # repairing: code, not the docstring's prose
            tr = (blk.doc[0] + shift, blk.doc[1] + shift)
        base = (since, old_span(blk, trusted, len(code) - len(since))) if trusted is not None else None
        try:
            res = repairer.repair(current, (blk.start + shift, blk.end + shift), language=language,
                                  should_stop=should_stop, trusted=tr, baseline=base)
        except RepairError as e:  # too long, ...: the other blocks go on
            entry["skipped"] = str(e)
            report.append(entry)
            continue
        kept = [e for e in res.edits
                if tr is None or not (e.start < tr[1] and tr[0] < e.end)]  # never into the user's edit
        entry.update(score_before=res.score_before, score_after=res.score_after, ms=res.ms, edits=len(kept),
                     judged=res.judged)
        report.append(entry)
        if not kept:
            continue
        for e in kept:
            a, b = e.start - shift, e.end - shift
            (l1, c1), (l2, c2) = line_col(code, a), line_col(code, b)
            edits.append(RefactorEdit(start=a, end=b, start_line=l1, start_character=c1, end_line=l2,
                                      end_character=c2, new_text=e.new_text, confidence=e.confidence,
                                      label=blk.label))
        before = len(current)
        current = apply_edits(current, kept)
        shift += len(current) - before
    return RefactorResult(edits=edits, text=current, blocks=report, trusted=trusted,
                          ms=(time.perf_counter() - t0) * 1000)


# --- the core method `refactor` -------------------------------------------------------------------

@dataclass(kw_only=True)
class RefactorRequest:
    """The params map of the core's `refactor`: the document (`code`), and `since`, its text before
    the edit to propagate (absent: repair every function)."""
    id: int
    uri: str
    code: str
    since: str | None = None
    language: str = "python"

    @classmethod
    def parse(cls, p: dict, default_id: int) -> "RefactorRequest":
        for name in ("uri", "code"):
            if not isinstance(p.get(name), str):
                raise ValueError(f"refactor: {name!r} must be a string")
        if p.get("since") is not None and not isinstance(p["since"], str):
            raise ValueError("refactor: 'since' must be a string (the text before the edit)")
        lid = p.get("id", default_id)
        if not isinstance(lid, int) or isinstance(lid, bool):
            raise ValueError("refactor: id must be an int")
        lang = p.get("language", "python")
        return cls(id=lid, uri=p["uri"], code=p["code"], since=p.get("since"),
                   language=lang if isinstance(lang, str) else "python")

    def to_params(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def run_refactor(repairer: Repairer, req: RefactorRequest, should_stop=None, progress=None) -> dict:
    """The result map of `refactor`: {id, edits: [{start_line, ..., new_text, confidence, label}],
    text, blocks, trusted, ms}. `progress(done, total, label)` is called before each block."""
    res = refactor(repairer, req.code, since=req.since, language=req.language, should_stop=should_stop,
                   progress=progress)
    return {"id": req.id, **res.to_params()}
