"""Code actions for repair, without LSP types: which actions apply at a position, and the edits
the core's `repair` answers, mapped onto the document.

"Fix this function" is offered anywhere inside a function (tree-sitter finds it; Python without
a grammar: `ast`, or indentation when the file does not parse); "Fix syntax error" as well when
tree-sitter sees an error in that function (with no grammar: when `ast` cannot parse the file).
The action carries no edit: `codeAction/resolve` runs the repair. Nothing here writes a file.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from ..diffusion_core.code_spans import RepairError, python_function_span, python_parses
from .core_client import CoreClient, RepairQuery
from .syntax import error_in, function_span, grammar_for

FIX_FUNCTION, FIX_SYNTAX = "Fix this function", "Fix syntax error"
_ids = itertools.count(1 << 20)  # request ids apart from the completions'


@dataclass
class FixAction:
    title: str
    span: tuple[int, int]  # characters of the document (LF-normalised text)


@dataclass
class FixEdit:
    start: int  # characters of the document (LF-normalised text)
    end: int
    new_text: str
    confidence: float


def find_span(text: str, offset: int, language_id: str) -> tuple[int, int] | None:
    grammar = grammar_for(language_id)
    if grammar is not None:
        return function_span(grammar, text, offset)
    if language_id == "python":
        try:
            return python_function_span(text, offset)
        except RepairError:
            return None
    return None


def actions_at(text: str, offset: int, language_id: str) -> list[FixAction]:
    """The repair actions offered at `offset` (text LF-normalised)."""
    span = find_span(text, offset, language_id)
    if span is None:
        return []
    grammar = grammar_for(language_id)
    if grammar is not None:
        broken = error_in(grammar, text, *span)
    else:
        broken = language_id == "python" and not python_parses(text[span[0]:span[1]])
    out = [FixAction(FIX_SYNTAX, span)] if broken else []
    return out + [FixAction(FIX_FUNCTION, span)]


def line_col(text: str, offset: int) -> list[int]:
    line = text.count("\n", 0, offset)
    return [line, offset - (text.rfind("\n", 0, offset) + 1)]


async def repair(core: CoreClient, uri: str, text: str, span: tuple[int, int], language_id: str) -> tuple[list[FixEdit], dict]:
    """Ask the core to repair text[span]; edits as character ranges of `text` (LF)."""
    q = RepairQuery(id=next(_ids), uri=uri, code=text, span=line_col(text, span[0]) + line_col(text, span[1]),
                    language=language_id or "python")
    res = await core.repair(q)
    edits = [FixEdit(start=e["start"], end=e["end"], new_text=e["new_text"], confidence=e["confidence"])
             for e in res.get("edits", [])]
    return edits, res
