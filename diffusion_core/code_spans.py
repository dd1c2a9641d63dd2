"""Code text: character offsets and (line, character) positions, text edits, and the Python
helpers repair and the language server share (a function's span, its docstring, whether a piece
of Python parses). `ast` only: diffusion_core needs no tree-sitter here (the server finds
functions with tree-sitter, `lsp_server/syntax.py`; `python_function_span` is the fallback of the
command line and the benchmarks)."""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass

from ..errors import DllmError


class RepairError(DllmError):
    """A repair request that cannot be served (no function there, too long, ...): one line."""


@dataclass
class TextEdit:
    """Replace document characters [start, end) with `new_text`; lines/characters 0-based (code points)."""
    start: int
    end: int
    start_line: int
    start_character: int
    end_line: int
    end_character: int
    new_text: str
    confidence: float


def apply_edits(code: str, edits: list[TextEdit]) -> str:
    for e in sorted(edits, key=lambda e: e.start, reverse=True):
        code = code[: e.start] + e.new_text + code[e.end:]
    return code


def line_col(text: str, offset: int) -> tuple[int, int]:
    """0-based (line, character) of a character offset."""
    line = text.count("\n", 0, offset)
    return line, offset - (text.rfind("\n", 0, offset) + 1)


def offset_of(text: str, line: int, character: int) -> int:
    """Character offset of a 0-based (line, character); past the end of a line is its end."""
    lines = text.split("\n")
    if not 0 <= line < len(lines):
        raise RepairError(f"line {line + 1} is outside the file ({len(lines)} lines)")
    return sum(len(s) + 1 for s in lines[:line]) + min(max(character, 0), len(lines[line]))


def python_function_span(code: str, offset: int) -> tuple[int, int]:
    """[start, end) of the innermost Python function around `offset` (from its first decorator
    line to its last line, newline included). When the file does not parse, the function is
    found by indentation (the nearest `def` line above whose block holds the offset), so a
    syntax error can be repaired. Raises RepairError when no function encloses the offset."""
    line = code.count("\n", 0, offset) + 1
    lines = code.splitlines(keepends=True)
    try:
        tree = ast.parse(code)
    except SyntaxError as e:
        best = def_block_by_indent(lines, line)
        if best is None:
            raise RepairError(f"the file does not parse (line {e.lineno}: {e.msg}) and line {line} is not "
                              "inside a `def` block") from None
    else:
        best = None
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                if first <= line <= node.end_lineno and (best is None or first >= best[0]):
                    best = (first, node.end_lineno)
    if best is None:
        raise RepairError(f"line {line} is not inside a function")
    start = sum(len(s) for s in lines[: best[0] - 1])
    return start, start + sum(len(s) for s in lines[best[0] - 1: best[1]])


def def_block_by_indent(lines: list[str], line: int) -> tuple[int, int] | None:
    """1-based (first, last) line of the `def` block holding `line`, by indentation alone."""
    def indent(s: str) -> int:
        return len(s) - len(s.lstrip())

    for d in range(min(line, len(lines)), 0, -1):
        s = lines[d - 1]
        if s.lstrip().startswith(("def ", "async def ")):
            last = d
            for k in range(d + 1, len(lines) + 1):
                t = lines[k - 1]
                if t.strip() and indent(t) <= indent(s):
                    break
                if t.strip():
                    last = k
            if last >= line:
                return d, last
    return None


def python_parses(text: str) -> bool:
    """Whether a piece of Python (a function, possibly indented as a method) parses."""
    try:
        ast.parse(textwrap.dedent(text))
        return True
    except (SyntaxError, ValueError):
        return False


def docstring_range(body: str) -> tuple[int, int] | None:
    """[start, end) of the docstring in a function's text (whole lines), or None. By `ast` when
    the dedented function parses, otherwise the first triple-quoted string right after the `def`
    line (so a syntax error elsewhere does not make the prose a suspect)."""
    lines = body.splitlines(keepends=True)
    starts = [0]
    for ln in lines:
        starts.append(starts[-1] + len(ln))
    try:
        tree = ast.parse(textwrap.dedent(body))
        fn = next((n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))), None)
        if fn is not None and fn.body and isinstance(fn.body[0], ast.Expr) \
                and isinstance(fn.body[0].value, ast.Constant) and isinstance(fn.body[0].value.value, str):
            d = fn.body[0]
            return starts[d.lineno - 1], starts[min(d.end_lineno, len(lines))]
        return None
    except (SyntaxError, ValueError):
        pass
    m = re.search(r"^[^\n]*\bdef\b[^\n]*\n(?:[ \t]*\n)*[ \t]*[rRbBuU]?(\"\"\"|\'\'\')", body)
    if m is None:
        return None
    close = body.find(m.group(1), m.end())
    if close < 0:
        return None
    a = body.rfind("\n", 0, m.start(1)) + 1
    b = body.find("\n", close + 3)
    return a, (len(body) if b < 0 else b + 1)
