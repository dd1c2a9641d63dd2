"""Whole-file code actions without LSP types: "Propagate this edit" and "Repair this file".

"Propagate this edit" (kind `refactor.rewrite`) is offered in a Python file that has a recent
edit (history.py): on a request the user made (Invoked), for the edit nearest the range; on the
editor's own request (Automatic: the light bulb), only for an edit within `NEAR` lines of it.
"Repair this file" (kind `source.repairFile`: the Source Action menu, not the light bulb) is
offered anywhere in a Python file. Neither carries an edit: `codeAction/resolve` asks the core's
`refactor` (diffusion_core/refactor.py) and the server answers a WorkspaceEdit whose edits are
annotated per function, each annotation with needsConfirmation, so the editor shows a preview.
Nothing here writes a file.
"""

from __future__ import annotations

import ast
import itertools
from dataclasses import dataclass

from ..errors import DllmError
from .core_client import CoreClient, Progress, RefactorQuery
from .history import Edit, EditHistory

PROPAGATE, REPAIR_FILE = "Propagate this edit", "Repair this file"
KIND_PROPAGATE, KIND_REPAIR_FILE = "refactor.rewrite", "source.repairFile"
NEAR = 3  # lines between the range and an edit for the light bulb to offer "Propagate this edit"
_ids = itertools.count(1 << 21)  # request ids apart from the completions' and the repairs'


class RefactorInputError(DllmError):
    """The document does not fit the action (does not parse, no recent edit, ...): one line."""


@dataclass
class RefactorAction:
    title: str
    kind: str
    action: str  # "propagate" or "repairFile"
    edit: Edit | None = None  # the edit to propagate


@dataclass
class LabelledEdit:
    start: int  # characters of the document (LF-normalised text)
    end: int
    new_text: str
    confidence: float
    label: str  # the function it belongs to, e.g. "function add (line 4)"


def edit_line(text: str, edit: Edit) -> int:
    """0-based line where the edit starts."""
    return text.count("\n", 0, edit.start)


def actions_at(text: str, history: EditHistory, line: int, end_line: int, language_id: str,
               invoked: bool) -> list[RefactorAction]:
    """The whole-file actions offered for lines [line, end_line] (0-based) of `text` (the document
    as the store holds it: history offsets are in its coordinates)."""
    if language_id != "python":
        return []
    out = []
    edit = history.nearest(text, line, end_line, near=None if invoked else NEAR)
    if edit is not None:
        at = edit_line(text, edit)
        near = line - NEAR <= at <= end_line + NEAR
        title = PROPAGATE if near else f"Propagate the edit at line {at + 1}"
        out.append(RefactorAction(title, KIND_PROPAGATE, "propagate", edit))
    out.append(RefactorAction(REPAIR_FILE, KIND_REPAIR_FILE, "repairFile"))
    return out


def syntax_error(text: str) -> str | None:
    """'line N: message' when the Python text does not parse, else None."""
    try:
        ast.parse(text)
    except SyntaxError as e:
        return f"line {e.lineno}: {e.msg}"
    except ValueError as e:  # null bytes
        return str(e)
    return None


def check_input(action: str, text: str, since: str | None) -> None:
    """Raise RefactorInputError with what to do when the action cannot run on this text (LF)."""
    from ..diffusion_core.refactor import python_blocks

    if action == "propagate":
        if since is None or since.replace("\r\n", "\n") == text:
            raise RefactorInputError("no recent edit to propagate (it was undone or already propagated); "
                                     "edit the code, then ask again")
        err = syntax_error(text)
        if err is not None:
            raise RefactorInputError(f"the file does not parse ({err}); finish the edit first, "
                                     "or use \"Repair this file\"")
    elif not python_blocks(text):
        err = syntax_error(text)
        raise RefactorInputError("the file has nothing to repair" + (
            f": it does not parse ({err}) and holds no `def` block" if err else " (it is empty)"))


async def refactor(core: CoreClient, uri: str, text: str, since: str | None, language_id: str,
                   progress: Progress | None = None) -> tuple[list[LabelledEdit], dict]:
    """Ask the core to repair every function of `text` (LF), or to propagate `since` -> `text`;
    the edits as character ranges of `text`, labelled with their function."""
    q = RefactorQuery(id=next(_ids), uri=uri, code=text, since=since, language=language_id or "python")
    res = await core.refactor(q, progress)
    edits = [LabelledEdit(start=e["start"], end=e["end"], new_text=e["new_text"], confidence=e["confidence"],
                          label=e.get("label") or "the file")
             for e in res.get("edits", [])]
    return edits, res


def summary(edits: list[LabelledEdit]) -> str:
    """"3 changes: function add (line 4), statements (lines 9-9)" (what the preview holds)."""
    labels = list(dict.fromkeys(e.label for e in edits))
    shown = ", ".join(labels[:3]) + (f" and {len(labels) - 3} more" if len(labels) > 3 else "")
    return f"{len(edits)} change{'s' * (len(edits) != 1)}: {shown}"
