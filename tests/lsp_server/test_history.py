"""A document's recent edits (lsp_server/history.py) as didChange builds them, and the whole-file
actions offered from them (lsp_server/refactor.py)."""

from __future__ import annotations

import random

from dllm_ls.lsp_server.documents import DocumentStore, TextChange
from dllm_ls.lsp_server.history import EditHistory, common_affixes
from dllm_ls.lsp_server.refactor import (
    KIND_PROPAGATE, KIND_REPAIR_FILE, RefactorInputError, actions_at, check_input)

OLD = "def area(w, h):\n    return w * h\n\n\nx = 1\nprint(area(2, 3))\n"


def _type(store: DocumentStore, uri: str, line: int, col: int, text: str, end=None):
    doc = store.get(uri)
    store.change(uri, doc.version + 1, [TextChange(range=((line, col), end or (line, col)), text=text)])


def test_keystrokes_of_one_rename_are_one_edit_and_before_gives_the_old_text():
    store = DocumentStore()
    doc = store.open("u", OLD, 1, "python")
    _type(store, "u", 0, 9, "", end=(0, 10))  # delete "w"
    for k, ch in enumerate("width"):
        _type(store, "u", 0, 9 + k, ch)
    assert doc.text.startswith("def area(width, h):")
    [edit] = doc.history.edits()
    assert doc.text[edit.start:edit.end] == "width" and edit.old == "w"
    assert EditHistory.before(edit, doc.text) == OLD
    # a change far away is a second edit; the first one's region moves with the text
    _type(store, "u", 4, 4, "2", end=(4, 5))
    newest, first = doc.history.edits()
    assert newest.old == "1" and doc.text[newest.start:newest.end] == "2"
    assert doc.text[first.start:first.end] == "width"
    assert EditHistory.before(first, doc.text) == OLD.replace("x = 1", "x = 2")  # the other edit stays
    _type(store, "u", 2, 0, "# c\n")  # between them: the one below moves
    assert [doc.text[e.start:e.end] for e in doc.history.edits()] == ["# c\n", "2", "width"]
    _type(store, "u", 0, 0, "# area ")  # on the line of the rename: one edit with it
    assert [doc.text[e.start:e.end] for e in doc.history.edits()] == ["# area def area(width", "# c\n", "2"]


def test_an_undone_edit_is_not_offered_and_touching_edits_merge():
    store = DocumentStore()
    doc = store.open("u", OLD, 1, "python")
    _type(store, "u", 0, 9, "x", end=(0, 10))
    _type(store, "u", 0, 9, "w", end=(0, 10))  # back to the old text: kept, not offered
    assert len(doc.history) == 1 and doc.history.nearest(doc.text, 0, 0) is None
    assert [a.action for a in actions_at(doc.text, doc.history, 0, 0, "python", True)] == ["repairFile"]
    _type(store, "u", 0, 12, "height", end=(0, 13))  # "h" -> "height"
    _type(store, "u", 0, 4, "surface", end=(0, 8))  # same line: one edit with the rename
    [edit] = doc.history.edits()
    assert doc.text.splitlines()[0] == "def surface(w, height):" and EditHistory.before(edit, doc.text) == OLD


def test_bounded_whole_text_changes_and_the_client_applying_our_preview():
    store = DocumentStore()
    doc = store.open("u", "\n".join(f"x{i} = {i}" for i in range(30)) + "\n", 1, "python")
    for i in range(0, 30, 2):
        _type(store, "u", i, 0, "y")
    assert len(doc.history) == 8  # the oldest dropped
    # a full-text change (no range) is recorded as the span that differs
    new = doc.text.replace("x29 = 29", "x29 = 30")
    store.change("u", 99, [TextChange(range=None, text=new)])
    assert doc.history.edits()[0].old == "29" and doc.text[doc.history.edits()[0].start:][:2] == "30"
    # the text a preview of ours produces: applying it clears the history
    doc.history.expect(doc.text.replace("y", "z"))
    store.change("u", 100, [TextChange(range=None, text=doc.text.replace("y", "z"))])
    assert len(doc.history) == 0


def test_common_affixes_matches_a_plain_scan():
    r = random.Random(0)
    for _ in range(3000):
        a = "".join(r.choice("ab") for _ in range(r.randint(0, 9)))
        b = "".join(r.choice("ab") for _ in range(r.randint(0, 9)))
        p = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        s = 0
        while s < min(len(a), len(b)) - p and a[-1 - s] == b[-1 - s]:
            s += 1
        assert common_affixes(a, b) == (p, s)


def test_actions_offered():
    store = DocumentStore()
    doc = store.open("u", OLD, 1, "python")
    # no edit yet: only "Repair this file" (a source action)
    assert [(a.title, a.kind) for a in actions_at(doc.text, doc.history, 0, 0, "python", True)] == [
        ("Repair this file", KIND_REPAIR_FILE)]
    _type(store, "u", 0, 9, "width", end=(0, 10))
    near = actions_at(doc.text, doc.history, 1, 1, "python", invoked=False)
    assert [(a.title, a.kind) for a in near][0] == ("Propagate this edit", KIND_PROPAGATE)
    # far from the edit: the light bulb does not offer it, the user's own request does (naming the line)
    assert [a.action for a in actions_at(doc.text, doc.history, 5, 5, "python", invoked=False)] == ["repairFile"]
    far = actions_at(doc.text, doc.history, 5, 5, "python", invoked=True)
    assert far[0].title == "Propagate the edit at line 1" and far[0].edit is near[0].edit
    assert actions_at(doc.text, doc.history, 0, 0, "lua", True) == []


def test_bad_input_is_one_clear_line():
    for action, text, since, words in [
            ("propagate", OLD, OLD, "no recent edit"),
            ("propagate", OLD.replace("w * h", "w *"), OLD, "does not parse (line 2"),
            ("repairFile", "x = (\n", None, "holds no `def` block"),
            ("repairFile", "", None, "empty")]:
        try:
            check_input(action, text, since)
        except RefactorInputError as e:
            assert words in str(e) and "\n" not in str(e), (words, e)
        else:
            raise AssertionError(f"{action} on {text!r}: no error")
    check_input("repairFile", "def f(:\n    return 1\n", None)  # a syntax error in a def: repairable
    check_input("propagate", OLD.replace("(w, h)", "(width, h)"), OLD)
