"""Refactor benchmark cases: one seeded change in a held-out file, and the other sites it makes wrong.

Held-out files (never trained on):
- HumanEval (`humaneval_files`): each problem's prompt + canonical solution + up to 6 short asserts
  of its tests in a `check()` that calls the entry point by name (the corpus is decontaminated
  against HumanEval), so a file has a definition, its uses and its call sites;
- the corpus validation split (`corpus_files(val.jsonl)`): files of the packages the split kept
  out of training, up to `max_lines` lines.

Kinds (the change is made at one place, the definition; `sites` are the places that must follow):
- `rename_param`: a parameter of a function is renamed in its signature. Sites: every use of it
  in the function's body (a closure's too), and `name=` keywords at the function's call sites.
  Lines where the old name appears only in a string or comment (a docstring) are neutral: the
  preview may change them or not.
- `add_param`: a parameter is appended to a top-level function whose parameters are plain
  positional ones (no defaults, `*args`, keyword-only or `**kwargs`) and which is only ever called
  (never passed around). Sites: every call, which must gain exactly one argument (positional at
  the end, or `name=`), the others unchanged; the value is the model's choice.
- `return_type`: a return annotation changes so that the old literals become wrong: `list` ->
  `tuple` (`List[X]` -> `tuple[X, ...]`; `[a, b]` -> `(a, b)`) or `str` -> `bytes` (`"a"` -> `b"a"`).
  Sites: the function's `return LITERAL` statements, comparisons `f(...) == LITERAL` anywhere in
  the file, and annotated assignments `x: T = f(...)`. A `return` of anything else, or a
  comparison with a non-literal, is neutral. A HumanEval function without a return annotation gets
  one first (`-> list` / `-> str`) when all the literals its asserts compare it with agree.

For every kind the changed function's docstring lines are neutral too (its examples may follow).

A site is updated correctly when its lines in the preview equal the expected lines
(whitespace inside lines ignored; `add_param`: the call check above). A changed line "should not
have changed" when it is neither a site line nor a neutral line (the changed definition line
counts too: the user's own edit is never to be touched). `score` measures both.

Each file gives at most one case per kind (the first eligible function in a seeded order), so
a case never depends on the others.
"""

from __future__ import annotations

import ast
import difflib
import io
import random
import re
import tokenize
from collections.abc import Iterable
from dataclasses import dataclass, field

from .bugs import _Pos, normalise

KINDS = ("rename_param", "add_param", "return_type")
RENAMES = {  # a natural longer name for common short ones; others get "_value"
    "x": "value", "n": "count", "s": "text", "i": "index", "l": "items", "lst": "items", "arr": "values",
    "d": "mapping", "k": "key", "v": "value", "a": "first", "b": "second", "c": "third", "m": "size",
    "f": "func", "fn": "func", "p": "point", "q": "query", "t": "total", "w": "width", "h": "height",
    "num": "number", "nums": "numbers", "string": "text", "numbers": "values", "text": "content",
    "lst1": "first_list", "lst2": "second_list", "word": "token", "words": "tokens", "name": "label",
    "path": "filename", "data": "payload", "value": "amount", "key": "field", "items": "elements",
}
NEW_PARAMS = ("scale", "offset", "limit", "strict", "verbose", "factor", "key_func", "extra")
MAX_ASSERTS, MAX_ASSERT_CHARS = 6, 160


@dataclass(frozen=True)
class Site:
    first: int  # 0-based lines of the edited file, inclusive
    last: int
    want: str | None = None  # the expected text of those lines ("\n"-joined); None: `call` decides
    call: tuple[str, int, int] | None = None  # add_param: (function, index of the call in source order, arguments)


@dataclass(frozen=True, kw_only=True)
class RefactorCase:
    id: str  # "HumanEval/12:rename_param"
    kind: str
    source: str  # "humaneval" or "corpus"
    original: str  # the file before the change (`since`)
    edited: str  # the file after the user's one change
    sites: tuple[Site, ...]
    neutral: frozenset[int] = frozenset()  # lines of `edited` that may change or not
    edit_line: int = 0  # 0-based line of the change
    edit: tuple[int, int, str] = (0, 0, "")  # the change: original[start:end] -> text
    detail: str = ""  # "w -> width", "+ scale", "List[int] -> tuple[int, ...]"
    new_name: str = ""  # add_param: the parameter added

    @property
    def site_lines(self) -> set[int]:
        return {ln for s in self.sites for ln in range(s.first, s.last + 1)}


# --- held-out files -------------------------------------------------------------------------------

def humaneval_file(p: dict) -> str | None:
    """prompt + canonical solution + a `check()` of at most MAX_ASSERTS short asserts calling the
    entry point by name; None when nothing parses."""
    doc = p["prompt"] + p["canonical_solution"]
    if not doc.endswith("\n"):
        doc += "\n"
    entry = p["entry_point"]
    asserts = []
    try:
        test = ast.parse(p["test"])
    except SyntaxError:
        test = None
    check = next((n for n in (test.body if test else []) if isinstance(n, ast.FunctionDef) and n.name == "check"), None)
    for node in (check.body if check else []):
        seg = ast.get_source_segment(p["test"], node) or ""
        if isinstance(node, ast.Assert) and "candidate(" in seg and "\n" not in seg and len(seg) <= MAX_ASSERT_CHARS:
            asserts.append(re.sub(r"\bcandidate\b", entry, seg))
        if len(asserts) >= MAX_ASSERTS:
            break
    if asserts:
        doc += "\n\ndef check():\n" + "".join(f"    {a}\n" for a in asserts) + "\n\ncheck()\n"
    try:
        ast.parse(doc)
    except SyntaxError:
        return None
    return doc


def humaneval_files(problems: dict[str, dict] | None = None) -> list[tuple[str, str, str]]:
    """(id, source, text) of each HumanEval problem's file."""
    from .humaneval import load_problems

    problems = load_problems() if problems is None else problems
    out = []
    for pid, p in problems.items():
        doc = humaneval_file(p)
        if doc is not None:
            out.append((pid, "humaneval", doc))
    return out


def corpus_files(val_jsonl, *, max_files: int = 300, max_lines: int = 300, min_lines: int = 10,
                 seed: int = 0) -> list[tuple[str, str, str]]:
    """(id, source, text): a seeded sample of the corpus validation split's files that parse and
    have min_lines-max_lines lines."""
    from .corpus import iter_records

    pool = []
    for rec in iter_records(val_jsonl):
        text = rec["text"]
        n = text.count("\n")
        if not min_lines <= n <= max_lines:
            continue
        try:
            ast.parse(text)
        except (SyntaxError, ValueError):
            continue
        pool.append((f"corpus:{rec['path']}", "corpus", text if text.endswith("\n") else text + "\n"))
    random.Random(f"{seed}:refactor-files").shuffle(pool)
    return pool[:max_files]


# --- helpers -----------------------------------------------------------------------------------

def _names(tree: ast.AST, text: str) -> set[str]:
    """Every identifier of the file (names, attributes, arguments, functions), so a new name is new."""
    out = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))
    for n in ast.walk(tree):
        if isinstance(n, ast.Name):
            out.add(n.id)
    return out


def _fresh(candidates: Iterable[str], used: set[str]) -> str | None:
    return next((c for c in candidates if c not in used), None)


def _apply(text: str, reps: list[tuple[int, int, str]]) -> str:
    for s, e, new in sorted(reps, reverse=True):
        text = text[:s] + new + text[e:]
    return text


def _scope_nodes(fn: ast.AST):
    """The nodes of a function's body and its parameters' defaults (nested scopes included)."""
    for node in fn.body:
        yield from ast.walk(node)


def _binds(node: ast.AST, name: str) -> bool:
    """Whether a nested scope inside rebinds `name` (its own parameter, a comprehension target)."""
    for n in ast.walk(node):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            a = n.args
            if any(x.arg == name for x in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg] if x):
                return True
        if isinstance(n, ast.comprehension):
            if any(isinstance(t, ast.Name) and t.id == name for t in ast.walk(n.target)):
                return True
        if isinstance(n, (ast.Global, ast.Nonlocal)) and name in n.names:
            return True
    return False


def _functions(tree: ast.Module, top_only: bool = False) -> list[ast.FunctionDef]:
    if top_only:
        return [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _calls_to(tree: ast.AST, name: str) -> list[ast.Call]:
    """Calls `name(...)` in source order."""
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == name]
    return sorted(calls, key=lambda c: (c.lineno, c.col_offset))


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset)


def _sites_from(target: str, lines: Iterable[tuple[int, int]]) -> tuple[Site, ...]:
    t = target.split("\n")
    out = {}
    for a, b in lines:
        out[(a, b)] = Site(first=a, last=b, want="\n".join(t[a:b + 1]))
    return tuple(sorted(out.values(), key=lambda s: (s.first, s.last)))


def _word_lines(text: str, fn: ast.AST, name: str) -> set[int]:
    """0-based lines of the function where `name` appears as a word (strings and comments too)."""
    lines = text.split("\n")
    pat = re.compile(rf"\b{re.escape(name)}\b")
    return {i for i in range(fn.lineno - 1, fn.end_lineno) if pat.search(lines[i])}


def _docstring_lines(fn: ast.AST) -> set[int]:
    body = fn.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        return set(range(body[0].lineno - 1, body[0].end_lineno))
    return set()


# --- the kinds -----------------------------------------------------------------------------------

def rename_param(fid: str, source: str, text: str, rng: random.Random) -> RefactorCase | None:
    tree = ast.parse(text)
    pos = _Pos(text)
    used = _names(tree, text)
    fns = _functions(tree)
    rng.shuffle(fns)
    for fn in fns:
        a = fn.args
        params = [p for p in a.posonlyargs + a.args + a.kwonlyargs if p.arg not in ("self", "cls")]
        rng.shuffle(params)
        for p in params:
            uses = [n for n in _scope_nodes(fn) if isinstance(n, ast.Name) and n.id == p.arg]
            if not uses or any(_binds(stmt, p.arg) for stmt in fn.body):
                continue
            new = RENAMES.get(p.arg) if RENAMES.get(p.arg) not in used else None
            new = new or _fresh([f"{p.arg}_value", f"{p.arg}_arg"], used)
            if new is None:
                continue
            ps = pos.ast(p.lineno, p.col_offset)
            if text[ps:ps + len(p.arg)] != p.arg:
                continue
            reps, ok = [], True
            for u in uses:
                s = pos.ast(u.lineno, u.col_offset)
                ok &= text[s:s + len(p.arg)] == p.arg
                reps.append((s, s + len(p.arg), new))
            for call in _calls_to(tree, fn.name) if fn in tree.body else []:
                for kw in call.keywords:
                    if kw.arg == p.arg:
                        s = pos.ast(kw.lineno, kw.col_offset)
                        ok &= text[s:s + len(p.arg)] == p.arg
                        reps.append((s, s + len(p.arg), new))
            if not ok:  # a position ast got wrong (an f-string in old Pythons): skip
                continue
            edit = (ps, ps + len(p.arg), new)
            edited = _apply(text, [edit])
            target = _apply(text, reps + [edit])
            edit_line = _line_of(text, ps)
            lines = {_line_of(text, s) for s, _, _ in reps} - {edit_line}
            if not lines:
                continue
            neutral = (_word_lines(text, fn, p.arg) | _docstring_lines(fn)) - lines - {edit_line}
            return RefactorCase(id=f"{fid}:rename_param", kind="rename_param", source=source, original=text,
                                edited=edited, sites=_sites_from(target, ((ln, ln) for ln in lines)),
                                neutral=frozenset(neutral), edit_line=edit_line, edit=edit,
                                detail=f"{p.arg} -> {new}")
    return None


def add_param(fid: str, source: str, text: str, rng: random.Random) -> RefactorCase | None:
    tree = ast.parse(text)
    pos = _Pos(text)
    used = _names(tree, text)
    fns = _functions(tree, top_only=True)
    rng.shuffle(fns)
    for fn in fns:
        a = fn.args
        if fn.decorator_list or a.posonlyargs or a.vararg or a.kwonlyargs or a.kwarg or a.defaults or not a.args:
            continue
        calls = _calls_to(tree, fn.name)
        refs = [n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == fn.name]
        if not calls or len(refs) != len(calls):  # passed around, or shadowed: not only called
            continue
        if any(any(isinstance(x, ast.Starred) for x in c.args) or any(k.arg is None for k in c.keywords)
               or len(c.args) + len(c.keywords) != len(a.args) for c in calls):
            continue
        new = _fresh(NEW_PARAMS, used)
        if new is None:
            continue
        last = a.args[-1]
        at = pos.ast(last.end_lineno, last.end_col_offset)
        edited = _apply(text, [(at, at, f", {new}")])
        edit_line = _line_of(text, at)
        sites = tuple(Site(first=c.lineno - 1, last=c.end_lineno - 1, call=(fn.name, k, len(a.args)))
                      for k, c in enumerate(calls))
        if all(s.first == edit_line for s in sites):
            continue
        neutral = _docstring_lines(fn) - {ln for st in sites for ln in range(st.first, st.last + 1)}
        return RefactorCase(id=f"{fid}:add_param", kind="add_param", source=source, original=text, edited=edited,
                            sites=sites, neutral=frozenset(neutral), edit_line=edit_line, edit=(at, at, f", {new}"),
                            detail=f"+ {new}", new_name=new)
    return None


_LIST_ANN = re.compile(r"^(List|list)\[(.+)\]$")


def _convert_annotation(ann: str) -> tuple[str, str] | None:
    """(new annotation, literal kind) for the return types whose literals become wrong."""
    ann = ann.strip()
    if ann in ("list", "List"):
        return "tuple", "list"
    m = _LIST_ANN.match(ann)
    if m:
        return f"tuple[{m.group(2)}, ...]", "list"  # builtin generic: no import to add
    if ann == "str":
        return "bytes", "str"
    return None


def _literal_kind(node: ast.AST) -> str | None:
    if isinstance(node, ast.List):
        return "list"
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return "str"
    return None


def _convert_literal(text: str, pos: _Pos, node: ast.AST, kind: str) -> tuple[int, int, str] | None:
    s, e = pos.node(node)
    seg = text[s:e]
    if kind == "list" and isinstance(node, ast.List) and seg.startswith("[") and seg.endswith("]"):
        inner = seg[1:-1]
        if len(node.elts) == 1 and not inner.rstrip().endswith(","):
            inner = inner.rstrip() + ","
        return s, e, f"({inner})"
    if kind == "str" and isinstance(node, ast.Constant) and isinstance(node.value, str) \
            and node.value.isascii() and seg[:1] in ("'", '"'):
        return s, e, "b" + seg
    return None


def _signature_end(text: str, pos: _Pos, fn: ast.AST) -> int | None:
    """Offset just after the `)` that closes the def's parameter list."""
    start = pos.ast(fn.lineno, fn.col_offset)
    header = text[start:pos.ast(fn.body[0].lineno, fn.body[0].col_offset)]
    depth = 0
    try:
        for tok in tokenize.generate_tokens(io.StringIO(header).readline):
            if tok.type == tokenize.OP and tok.string in "([{":
                depth += 1
            elif tok.type == tokenize.OP and tok.string in ")]}":
                depth -= 1
                if depth == 0:
                    return start + _Pos(header).tok(*tok.end)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return None
    return None


def _compare_sides(tree: ast.AST, name: str):
    """(call, other side) of each comparison `name(...) == X` / `X == name(...)` (also !=)."""
    for n in ast.walk(tree):
        if isinstance(n, ast.Compare) and len(n.ops) == 1 and isinstance(n.ops[0], (ast.Eq, ast.NotEq)):
            left, right = n.left, n.comparators[0]
            for call, other in ((left, right), (right, left)):
                if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == name:
                    yield call, other


def return_type(fid: str, source: str, text: str, rng: random.Random) -> RefactorCase | None:
    tree = ast.parse(text)
    fns = _functions(tree, top_only=True)
    rng.shuffle(fns)
    for fn in fns:
        pos = _Pos(text)
        base = text
        if fn.returns is None:  # infer it from the literals the file compares the result with
            kinds = {_literal_kind(o) for _, o in _compare_sides(tree, fn.name)}
            kinds.discard(None)
            rets = [r.value for r in _scope_nodes(fn) if isinstance(r, ast.Return) and r.value is not None]
            kinds |= {_literal_kind(v) for v in rets if _literal_kind(v)}
            if len(kinds) != 1:
                continue
            at = _signature_end(text, pos, fn)
            if at is None:
                continue
            base = text[:at] + f" -> {kinds.pop()}" + text[at:]
            tree2 = ast.parse(base)
            fn = next(n for n in tree2.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                      and n.name == fn.name and n.lineno == fn.lineno)
            pos = _Pos(base)
            tree_b = tree2
        else:
            tree_b = tree
        ann = ast.get_source_segment(base, fn.returns)
        conv = _convert_annotation(ann or "")
        if conv is None:
            continue
        new_ann, kind = conv
        s, e = pos.node(fn.returns)
        edit = (s, e, new_ann)
        edit_line = _line_of(base, s)
        reps, neutral_nodes = [], []
        nested = {id(x) for f in ast.walk(fn) if f is not fn and isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                                     ast.Lambda))
                  for x in ast.walk(f)}
        for r in _scope_nodes(fn):
            if isinstance(r, ast.Return) and id(r) not in nested and r.value is not None:
                rep = _convert_literal(base, pos, r.value, kind) if _literal_kind(r.value) == kind else None
                (reps.append(rep) if rep else neutral_nodes.append(r))
        for call, other in _compare_sides(tree_b, fn.name):
            rep = _convert_literal(base, pos, other, kind) if _literal_kind(other) == kind else None
            (reps.append(rep) if rep else neutral_nodes.append(other))
        for n in ast.walk(tree_b):
            if isinstance(n, ast.AnnAssign) and isinstance(n.value, ast.Call) and isinstance(n.value.func, ast.Name) \
                    and n.value.func.id == fn.name and ast.get_source_segment(base, n.annotation) == ann:
                a0, a1 = pos.node(n.annotation)
                reps.append((a0, a1, new_ann))
        if not reps:
            continue
        edited = _apply(base, [edit])
        target = _apply(base, reps + [edit])
        if edited.count("\n") != target.count("\n"):
            continue
        lines = set()
        for s0, e0, _ in reps:
            lines.add((_line_of(base, s0), _line_of(base, e0)))
        neutral = _docstring_lines(fn)
        for n in neutral_nodes:
            neutral.update(range(n.lineno - 1, n.end_lineno))
        site_lines = {ln for a, b in lines for ln in range(a, b + 1)}
        return RefactorCase(id=f"{fid}:return_type", kind="return_type", source=source, original=base,
                            edited=edited, sites=_sites_from(target, lines),
                            neutral=frozenset(neutral - site_lines - {edit_line}), edit_line=edit_line,
                            edit=edit, detail=f"{ann} -> {new_ann}")
    return None


MAKERS = {"rename_param": rename_param, "add_param": add_param, "return_type": return_type}


def make_cases(files: list[tuple[str, str, str]], *, kinds: Iterable[str] = KINDS, seed: int = 0,
               limit: int | None = None) -> list[RefactorCase]:
    """At most one case per kind per file; `limit`: a seeded sample of that many cases per kind."""
    out = []
    for kind in kinds:
        if kind not in MAKERS:
            raise ValueError(f"unknown refactor kind {kind!r}; expected one of {', '.join(KINDS)}")
        cases = []
        for fid, source, text in files:
            case = MAKERS[kind](fid, source, text, random.Random(f"{seed}:{fid}:{kind}"))
            if case is not None:
                cases.append(case)
        if limit is not None and len(cases) > limit:
            cases = random.Random(f"{seed}:{kind}:sample").sample(cases, limit)
            cases.sort(key=lambda c: c.id)
        out += cases
    return out


# --- scoring -------------------------------------------------------------------------------------

@dataclass
class CaseScore:
    id: str
    kind: str
    sites: int
    sites_ok: int
    changed_lines: int  # lines of the edited file the preview changed, plus lines it inserted
    wrong_lines: int  # of those, the ones that should not have changed
    edits: int = 0
    ms: float = 0.0
    error: str = ""
    bad_sites: list = field(default_factory=list)  # first line (1-based) of each site not updated


def _norm(lines: list[str]) -> str:
    return normalise("\n".join(lines))


def _without_added(node: ast.AST, name: str, n: int, new_name: str) -> str:
    """ast.dump of `node` with the added argument of every call to `name` inside it taken out, so
    a call nested in another call's arguments (f(f(x))) does not count as changing them."""
    import copy

    node = copy.deepcopy(node)
    for c in ast.walk(node):
        if isinstance(c, ast.Call) and isinstance(c.func, ast.Name) and c.func.id == name:
            c.args = c.args[:n]
            c.keywords = [k for k in c.keywords if k.arg != new_name]
    return ast.dump(node)


def _check_calls(case: RefactorCase, preview: str) -> list[bool]:
    """add_param: each call site gained exactly one argument, the others unchanged."""
    try:
        new_tree = ast.parse(preview)
    except (SyntaxError, ValueError):
        return [False] * len(case.sites)
    name = case.sites[0].call[0]
    old_calls, new_calls = _calls_to(ast.parse(case.edited), name), _calls_to(new_tree, name)
    if len(old_calls) != len(new_calls):
        return [False] * len(case.sites)
    out = []
    for s in case.sites:
        old, new = old_calls[s.call[1]], new_calls[s.call[1]]
        n, total = len(old.args), s.call[2]

        def dump(x):
            return _without_added(x, name, total, case.new_name)
        same = [ast.dump(x) for x in old.args] == [dump(x) for x in new.args[:n]]
        kw_old = sorted(ast.dump(k) for k in old.keywords)
        kw_new = sorted(dump(k) for k in new.keywords)
        extra_pos = len(new.args) == n + 1 and kw_new == kw_old and not old.keywords
        extra_kw = (len(new.args) == n and len(new.keywords) == len(old.keywords) + 1
                    and all(k in kw_new for k in kw_old)
                    and any(k.arg == case.new_name for k in new.keywords))
        out.append(same and (extra_pos or extra_kw))
    return out


def oracle(case: RefactorCase) -> str:
    """A right preview: every site as expected (add_param: `, None` appended to each call). The
    harness check: it scores every site updated and no line wrongly changed."""
    if case.kind != "add_param":
        lines = case.edited.split("\n")
        for s in sorted(case.sites, key=lambda s: -s.first):
            lines[s.first:s.last + 1] = s.want.split("\n")
        return "\n".join(lines)
    pos = _Pos(case.edited)
    calls = _calls_to(ast.parse(case.edited), case.sites[0].call[0])
    reps = []
    for c in calls:
        end = pos.ast(c.end_lineno, c.end_col_offset) - 1  # the closing parenthesis
        reps.append((end, end, ", None" if c.args or c.keywords else "None"))
    return _apply(case.edited, reps)


def score(case: RefactorCase, preview: str) -> CaseScore:
    """How the preview (the whole file after the proposed edits) does on this case."""
    a, b = case.edited.split("\n"), preview.split("\n")
    mapped: dict[int, int] = {}
    changed, inserted = set(), 0
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal" or (op == "replace" and i2 - i1 == j2 - j1):
            mapped.update({i1 + k: j1 + k for k in range(i2 - i1)})
            if op == "replace":
                changed.update(range(i1, i2))
        else:
            changed.update(range(i1, i2))
            inserted += max(0, (j2 - j1) - (i2 - i1))
    allowed = case.site_lines | case.neutral
    wrong = len(changed - allowed) + inserted
    if case.kind == "add_param":
        oks = _check_calls(case, preview)
    else:
        oks = []
        for s in case.sites:
            rows = [mapped.get(i) for i in range(s.first, s.last + 1)]
            oks.append(None not in rows and _norm([b[j] for j in rows]) == _norm(s.want.split("\n")))
    return CaseScore(id=case.id, kind=case.kind, sites=len(case.sites), sites_ok=sum(oks),
                     changed_lines=len(changed) + inserted, wrong_lines=wrong,
                     bad_sites=[s.first + 1 for s, ok in zip(case.sites, oks) if not ok])
