"""Q3 bug injector: seeded bugs planted in held-out functions, plus a false-alarm set of correct ones.

Held-out functions (never trained on):
- HumanEval (`humaneval_functions`): prompt + canonical solution of each of the 164 problems, the
  document being that program and the function its entry point; the corpus is decontaminated
  against HumanEval, and each case carries the problem's tests. Bugs go into the solution only
  (never the signature or the docstring).
- the corpus validation split (`corpus_functions(val.jsonl)`): functions (3-40 lines) of packages
  the split kept out of training; the document is the file around the function (trimmed to a
  window of context); no tests, so only restoring the original counts as a fix. Optional: the
  corpus exists only where it was built.

Categories (one text edit each, at a site found with `ast`/`tokenize`, chosen by a
`random.Random` seeded with (seed, function, category), so a case never depends on the others):

- `operator`: a binary or augmented `+ - * / // %` becomes another of `+ - * /`;
- `comparison`: `< <= > >= == !=` becomes another of them;
- `off_by_one`: an int constant becomes n - 1 or n + 1;
- `wrong_name`: a name read in the function becomes another name in its scope (a parameter or
  a local);
- `swapped_args`: two adjacent positional arguments of a call trade places;
- `missing_token`: a token is deleted;
- `extra_token`: a token of the function is inserted after another token;
- `indentation`: a simple statement's line moves one level (4 spaces) in or out.

Every buggy function differs from the original under `normalise` (whitespace-insensitive except
for the indentation of each line); the first five categories always parse, the last three may not
(`BugCase.parses` says). The false-alarm set (`category == "correct"`) is the functions unchanged.
"""

from __future__ import annotations

import ast
import io
import random
import tokenize
from collections.abc import Iterable
from dataclasses import dataclass

from ..diffusion_core.prompt import word_char
from ..diffusion_core.refactor import line_starts

CATEGORIES = ("operator", "comparison", "off_by_one", "wrong_name", "swapped_args",
              "missing_token", "extra_token", "indentation")
MAY_BREAK_SYNTAX = frozenset({"missing_token", "extra_token", "indentation"})
CORRECT = "correct"
ARITH = ("+", "-", "*", "/")
ARITH_FROM = ARITH + ("//", "%")
COMPARE = ("<", "<=", ">", ">=", "==", "!=")


@dataclass(frozen=True, kw_only=True)
class HeldOutFunction:
    fid: str  # "HumanEval/0", "corpus:pkg/mod.py:name@L12"
    source: str  # "humaneval" or "corpus"
    document: str  # the text the function lives in (context for the model)
    span: tuple[int, int]  # the function's [start, end) in document, decorators to last line + "\n"
    region: tuple[int, int]  # where bugs may go: the body after the docstring (HumanEval: the solution)
    tests: str | None = None  # HumanEval test code (defines `check`)
    entry_point: str | None = None


@dataclass(frozen=True, kw_only=True)
class BugCase:
    id: str  # "HumanEval/0:operator", "HumanEval/0:correct", ...
    category: str  # one of CATEGORIES, or "correct" (the false-alarm set)
    source: str
    original: str  # the document with the correct function
    buggy: str  # the document with the bug (== original for "correct")
    span: tuple[int, int]  # the function's [start, end) in `buggy`
    original_span: tuple[int, int]  # the function's [start, end) in `original`
    tests: str | None = None
    entry_point: str | None = None
    parses: bool = True  # whether `buggy` parses
    edit: tuple[int, int, str] = (0, 0, "")  # the planted edit: original[start:end] -> text

    @property
    def original_function(self) -> str:
        return self.original[self.original_span[0]:self.original_span[1]]

    @property
    def buggy_function(self) -> str:
        return self.buggy[self.span[0]:self.span[1]]

    def document_with(self, function: str) -> str:
        """The buggy document with its function replaced by `function`."""
        return self.buggy[:self.span[0]] + function + self.buggy[self.span[1]:]

    def program(self, document: str) -> str | None:
        """The program that passes iff `document`'s function is right (None without tests)."""
        if self.tests is None:
            return None
        return document.rstrip() + "\n\n\n" + self.tests + f"\n\ncheck({self.entry_point})\n"


def normalise(text: str) -> str:
    """Whitespace-insensitive form of code: blank lines dropped, each line's indentation (tabs as
    4) kept, all other whitespace removed. Two texts that differ only in spacing inside lines or
    in blank lines compare equal; a change of indentation does not."""
    out = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            continue
        line = line.expandtabs(4)
        out.append(" " * (len(line) - len(line.lstrip())) + "".join(line.split()))
    return "\n".join(out)


def same_function(a: str, b: str) -> bool:
    return normalise(a) == normalise(b)


def parses(text: str) -> bool:
    try:
        ast.parse(text)
        return True
    except (SyntaxError, ValueError):
        return False


# --- held-out functions ---------------------------------------------------------------------------

class _Pos:
    """(1-based line, column) of ast (UTF-8 byte columns) or tokenize (character columns) -> offset."""

    def __init__(self, text: str):
        self.text, self.lines, self.starts = text, text.splitlines(keepends=True), line_starts(text)

    def ast(self, lineno: int, col_bytes: int) -> int:
        line = self.lines[lineno - 1] if lineno - 1 < len(self.lines) else ""
        return self.starts[lineno - 1] + len(line.encode("utf-8")[:col_bytes].decode("utf-8", "ignore"))

    def tok(self, row: int, col: int) -> int:
        return self.starts[row - 1] + col if row - 1 < len(self.starts) else len(self.text)

    def node(self, n: ast.AST) -> tuple[int, int]:
        return self.ast(n.lineno, n.col_offset), self.ast(n.end_lineno, n.end_col_offset)


def _function_span(pos: _Pos, fn: ast.AST) -> tuple[int, int]:
    first = min([fn.lineno] + [d.lineno for d in fn.decorator_list])
    return pos.starts[first - 1], pos.starts[fn.end_lineno]


def _body_start(pos: _Pos, fn: ast.AST) -> int | None:
    body = fn.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    if not body:
        return None
    return pos.starts[body[0].lineno - 1]


def humaneval_functions(problems: dict[str, dict] | None = None) -> list[HeldOutFunction]:
    """Each problem's prompt + canonical solution; the entry point is the function."""
    from .humaneval import load_problems

    problems = load_problems() if problems is None else problems
    out = []
    for pid, p in problems.items():
        doc = p["prompt"] + p["canonical_solution"]
        if not doc.endswith("\n"):
            doc += "\n"
        tree = ast.parse(doc)
        pos = _Pos(doc)
        fn = next(n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                  and n.name == p["entry_point"])
        span = _function_span(pos, fn)
        start = max(len(p["prompt"]), _body_start(pos, fn) or span[1])
        out.append(HeldOutFunction(fid=pid, source="humaneval", document=doc, span=span,
                                   region=(start, span[1]), tests=p["test"], entry_point=p["entry_point"]))
    return out


def corpus_functions(val_jsonl, *, max_functions: int = 200, max_files: int = 2000, min_lines: int = 3,
                     max_lines: int = 40, max_chars: int = 2000, context_before: int = 6000,
                     context_after: int = 2000, seed: int = 0) -> list[HeldOutFunction]:
    """A seeded sample of functions from the first `max_files` files of a corpus validation split.

    The document is the function with up to `context_before`/`context_after` characters of its
    file around it (whole lines), so the cases stay small."""
    from .corpus import iter_records

    cands = []
    for n, rec in enumerate(iter_records(val_jsonl)):
        if n >= max_files:
            break
        text = rec["text"].replace("\r\n", "\n")
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError):
            continue
        pos = _Pos(text)
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            span = _function_span(pos, node)
            lines = text[span[0]:span[1]].count("\n")
            body = _body_start(pos, node)
            if body is None or not min_lines <= lines <= max_lines or span[1] - span[0] > max_chars:
                continue
            if not text[span[0]:span[1]].endswith("\n"):
                continue
            cands.append((rec.get("path", f"file{n}"), node.name, node.lineno, text, span, body))
    rng = random.Random(f"{seed}:corpus")
    chosen = sorted(rng.sample(range(len(cands)), min(max_functions, len(cands))))
    out = []
    for i in chosen:
        path, name, lineno, text, (s, e), body = cands[i]
        a = text.rfind("\n", 0, max(0, s - context_before)) + 1 if s > context_before else 0
        b = text.find("\n", e + context_after)
        b = len(text) if b < 0 else b + 1
        doc = text[a:b]
        if not parses(doc):  # a window cut inside a bracket or string: use the function alone
            a, doc = s, text[s:e]
            if not parses(doc):
                continue
        out.append(HeldOutFunction(fid=f"corpus:{path}:{name}@L{lineno}", source="corpus", document=doc,
                                   span=(s - a, e - a), region=(body - a, e - a)))
    return out


# --- sites ------------------------------------------------------------------------------------------

Edit = tuple[int, int, str]  # replace document[start:end] with text


def _tokens(doc: str) -> list[tuple[int, str, int, int]]:
    pos = _Pos(doc)
    out = []
    for t in tokenize.generate_tokens(io.StringIO(doc).readline):
        if t.type in (tokenize.NAME, tokenize.OP, tokenize.NUMBER, tokenize.STRING):
            out.append((t.type, t.string, pos.tok(*t.start), pos.tok(*t.end)))
    return out


class _Sites:
    def __init__(self, f: HeldOutFunction):
        self.f, self.doc = f, f.document
        self.pos = _Pos(self.doc)
        self.a, self.b = f.region
        tree = ast.parse(self.doc)
        self.fn = next(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                       and _function_span(self.pos, n) == f.span)
        self.nodes = [n for n in ast.walk(self.fn) if hasattr(n, "lineno") and self.inside(*self.pos.node(n))]
        self.toks = [t for t in _tokens(self.doc) if self.inside(t[2], t[3])]

    def inside(self, s: int, e: int) -> bool:
        return self.a <= s and e <= self.b

    def _op_between(self, s: int, e: int, ops) -> list[Edit]:
        for _ty, string, ts, te in self.toks:
            if s <= ts and te <= e and string in ops:
                return [(ts, te, string)]
        return []

    def operator(self) -> list[tuple[Edit, list[str]]]:
        out = []
        for n in self.nodes:
            if isinstance(n, ast.BinOp):
                found = self._op_between(self.pos.node(n.left)[1], self.pos.node(n.right)[0], ARITH_FROM)
            elif isinstance(n, ast.AugAssign):
                found = self._op_between(self.pos.node(n.target)[1], self.pos.node(n.value)[0],
                                         {o + "=" for o in ARITH_FROM})
            else:
                continue
            for s, e, op in found:
                bare = op[:-1] if isinstance(n, ast.AugAssign) else op
                eq = "=" if isinstance(n, ast.AugAssign) else ""
                out.append(((s, e, op), [o + eq for o in ARITH if o != bare]))
        return out

    def comparison(self):
        out = []
        for n in self.nodes:
            if isinstance(n, ast.Compare):
                prev = self.pos.node(n.left)[1]
                for comp in n.comparators:
                    cs, ce = self.pos.node(comp)
                    for s, e, op in self._op_between(prev, cs, COMPARE):
                        out.append(((s, e, op), [o for o in COMPARE if o != op]))
                    prev = ce
        return out

    def off_by_one(self):
        out = []
        for n in self.nodes:
            if isinstance(n, ast.Constant) and type(n.value) is int:
                s, e = self.pos.node(n)
                out.append(((s, e, self.doc[s:e]), [str(n.value - 1), str(n.value + 1)]))
        return out

    def wrong_name(self):
        a = self.fn.args
        scope = {x.arg for x in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg] if x is not None}
        scope |= {n.id for n in ast.walk(self.fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        out = []
        for n in self.nodes:
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load):
                others = sorted(scope - {n.id})
                if others:
                    s, e = self.pos.node(n)
                    out.append(((s, e, n.id), others))
        return out

    def swapped_args(self):
        out = []
        for n in self.nodes:
            if isinstance(n, ast.Call) and len(n.args) >= 2 and not any(isinstance(x, ast.Starred) for x in n.args):
                for x, y in zip(n.args, n.args[1:]):
                    (xs, xe), (ys, ye) = self.pos.node(x), self.pos.node(y)
                    sx, sy = self.doc[xs:xe], self.doc[ys:ye]
                    if normalise(sx) != normalise(sy):
                        out.append(((xs, ye, self.doc[xs:ye]), [sy + self.doc[xe:ys] + sx]))
        return out

    def missing_token(self):
        out = []
        for _ty, string, s, e in self.toks:
            if "\n" in string:
                continue
            before, after = self.doc[s - 1:s], self.doc[e:e + 1]
            if before == " " and after == " ":
                e += 1  # `a + b` -> `a b`, not `a  b`
            join = word_char(before) and word_char(after)
            out.append(((s, e, self.doc[s:e]), [" " if join else ""]))
        return out

    def extra_token(self):
        vocab = sorted({t[1] for t in self.toks if t[0] != tokenize.STRING and "\n" not in t[1]})
        out = []
        for _ty, string, s, e in self.toks:
            after = self.doc[e:e + 1]
            reps = []
            for v in vocab:
                sep = " " if word_char(v[0]) and word_char(string[-1]) else ""
                tail = " " if word_char(v[-1]) and word_char(after) else ""
                reps.append(string + sep + v + tail)
            out.append(((s, e, string), reps))
        return out

    def indentation(self):
        out = []
        for n in self.nodes:
            if isinstance(n, ast.stmt) and not hasattr(n, "body") and n.lineno == n.end_lineno:
                ls = self.pos.starts[n.lineno - 1]
                line = self.pos.lines[n.lineno - 1]
                ind = line[: len(line) - len(line.lstrip(" "))]
                if "\t" in line[: len(line) - len(line.lstrip())] or self.pos.ast(n.lineno, n.col_offset) != ls + len(ind):
                    continue  # tabs, or not the line's first statement
                reps = [ind + "    "] + ([ind[:-4]] if len(ind) >= 4 else [])
                out.append(((ls, ls + len(ind), ind), reps))
        return out


def _apply(doc: str, edit: Edit) -> str:
    s, e, text = edit
    return doc[:s] + text + doc[e:]


def inject(f: HeldOutFunction, category: str, *, seed: int = 0, index: int = 0) -> BugCase | None:
    """One bug of `category` in `f` (the index-th draw), or None when the function has no valid site."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown bug category {category!r}; expected one of {', '.join(CATEGORIES)}")
    sites = getattr(_Sites(f), category)()
    rng = random.Random(f"{seed}:{f.fid}:{category}:{index}")
    rng.shuffle(sites)
    orig_func = f.document[f.span[0]:f.span[1]]
    for (s, e, _old), reps in sites:
        reps = list(reps)
        rng.shuffle(reps)
        for rep in reps[:3]:
            buggy = _apply(f.document, (s, e, rep))
            delta = len(buggy) - len(f.document)
            span = (f.span[0], f.span[1] + delta)
            if same_function(buggy[span[0]:span[1]], orig_func):
                continue
            ok = parses(buggy)
            if not ok and category not in MAY_BREAK_SYNTAX:
                continue
            suffix = f"#{index}" if index else ""
            return BugCase(id=f"{f.fid}:{category}{suffix}", category=category, source=f.source,
                           original=f.document, buggy=buggy, span=span, original_span=f.span, tests=f.tests,
                           entry_point=f.entry_point, parses=ok, edit=(s, e, rep))
    return None


def correct_case(f: HeldOutFunction) -> BugCase:
    return BugCase(id=f"{f.fid}:{CORRECT}", category=CORRECT, source=f.source, original=f.document,
                   buggy=f.document, span=f.span, original_span=f.span, tests=f.tests, entry_point=f.entry_point)


def bug_cases(functions: Iterable[HeldOutFunction], *, seed: int = 0, per_category: int = 1,
              categories: Iterable[str] = CATEGORIES) -> list[BugCase]:
    """Up to `per_category` bugs of each category in each function (distinct edits), in order."""
    out = []
    for f in functions:
        for cat in categories:
            seen = set()
            for i in range(per_category * 3):
                if len(seen) >= per_category:
                    break
                case = inject(f, cat, seed=seed, index=i)
                if case is None:
                    break
                if case.edit not in seen:
                    seen.add(case.edit)
                    out.append(case)
    return out


SPLITS = ("all", "test", "tune")


def in_split(f: HeldOutFunction, split: str, index: int) -> bool:
    """Q3's two disjoint halves of the held-out functions: "test" the even-numbered HumanEval
    problems (HumanEval/0, /2, ...; corpus functions: even positions), "tune" the odd ones, on which
    the repair's thresholds are calibrated; "all" both."""
    if split == "all":
        return True
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    n = int(f.fid.rsplit("/", 1)[1]) if f.source == "humaneval" else index
    return (n % 2 == 0) == (split == "test")


def q3_cases(*, seed: int = 0, val_jsonl=None, corpus_functions_max: int = 200, per_category: int = 1,
             humaneval: bool = True, split: str = "all") -> tuple[list[BugCase], list[BugCase]]:
    """(bug cases, false-alarm cases): HumanEval functions and, given `val_jsonl`, corpus functions;
    `split` keeps one half (`in_split`)."""
    fns = humaneval_functions() if humaneval else []
    fns = [f for i, f in enumerate(fns) if in_split(f, split, i)]
    if val_jsonl is not None:
        cf = corpus_functions(val_jsonl, max_functions=corpus_functions_max, seed=seed)
        fns += [f for i, f in enumerate(cf) if in_split(f, split, i)]
    return bug_cases(fns, seed=seed, per_category=per_category), [correct_case(f) for f in fns]
