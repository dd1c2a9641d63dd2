"""Refactor previews in real headless Neovim (0.11 and 0.12) against a real `dllm-ls serve` whose
model is a scripted judge of whole files (FileJudge: RIGHT's blocks are the right ones once the
rename is in its context, OLD's before).

The user renames `area` to `size` at its definition; :DllmPropagate asks for "Propagate this edit",
whose WorkspaceEdit (annotated, needsConfirmation) opens the preview instead of being applied: one
hunk per call site, labelled with its function. Accepting the first hunk and rejecting the second
changes the buffer at the first call site only; the file on disk is never written.
"""

from __future__ import annotations

import itertools

import pytest

from .conftest import ROOT, Editor, nvim_binary, scripted_serve_cmd

pytestmark = pytest.mark.slow
OLD = "def area(w, h):\n    return w * h\n\n\ndef room():\n    return area(3, 4)\n\n\nprint(area(2, 3))\n"
RIGHT = OLD.replace("area", "size")
EDITED = OLD.replace("def area", "def size")
_names = itertools.count()


@pytest.fixture(scope="module", params=["0.11", "0.12"])
def editor(request, tmp_path_factory, editor_checkpoint, document_file):
    binary = nvim_binary(request.param)
    cwd = tmp_path_factory.mktemp(f"refactor{request.param}")
    (cwd / "right.txt").write_text(RIGHT)
    (cwd / "old.txt").write_text(OLD)
    ed = Editor(binary, cwd)
    ed.version = request.param
    ed.lua("require('dllm').setup(...)", {
        "cmd": scripted_serve_cmd(editor_checkpoint, document_file, cwd / "right.txt", cwd / "old.txt"),
        "cmd_env": {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
    })
    yield ed
    ed.close()


def open_and_rename(ed: Editor) -> str:
    """A Python file holding OLD (on disk), the server attached; then `area` renamed to `size` at
    its definition, like a user would (cw in normal mode)."""
    ed.nvim.input("<Esc>")
    path = ed.cwd / f"shapes{next(_names)}.py"
    path.write_text(OLD)
    ed.nvim.command(f"edit {path}")
    ed.wait("return #vim.lsp.get_clients({bufnr = 0, name = 'dllm'}) > 0", what="the server to attach")
    ed.wait("for _, s in pairs(require('dllm').status) do if s.state == 'ready' then return true end end",
            timeout=60, what="dllm/status ready")
    ed.nvim.command("normal! gg0w")
    ed.nvim.input("cwsize<Esc>")
    ed.wait("return vim.api.nvim_get_mode().mode == 'n' and vim.api.nvim_buf_get_lines(0, 0, 1, false)[1] "
            "== 'def size(w, h):'", what="the rename")
    return str(path)


def preview(ed: Editor) -> dict:
    return ed.wait("return require('dllm.preview').current()", timeout=60, what="the preview")


def source_lines(ed: Editor, p: dict) -> list[str]:
    return ed.lua("return vim.api.nvim_buf_get_lines(..., 0, -1, false)", p["source"])


def test_propagate_opens_a_preview_and_applies_only_the_accepted_hunk(editor):
    path = open_and_rename(editor)
    assert editor.lua("return require('dllm').propagate()") is True
    p = preview(editor)
    assert [h["labels"] for h in p["hunks"]] == [["function room (line 5)"], ["statements (lines 9-9)"]]
    assert all(h["status"] == "pending" for h in p["hunks"])
    first, second = (h["lines"] for h in p["hunks"])
    assert first[0].startswith("@@ -6,1 +6,1 @@ function room (line 5)") and " def room():" in first
    assert [x for x in first if x[:1] in "+-"] == ["-    return area(3, 4)", "+    return size(3, 4)"]
    assert [x for x in second if x[:1] in "+-"] == ["-print(area(2, 3))", "+print(size(2, 3))"]
    assert p["title"].startswith("Propagate this edit")
    # nothing applied while the preview is open
    assert source_lines(editor, p) == EDITED.rstrip("\n").split("\n")
    assert editor.lua("return vim.api.nvim_get_current_buf()") == p["buf"]
    editor.nvim.input("a")  # accept the hunk under the cursor (the first): the cursor moves to the next
    editor.wait("local c = require('dllm.preview').current(); return c and c.hunks[1].status == 'accepted'",
                what="the first hunk accepted")
    assert editor.lua("return vim.api.nvim_win_get_cursor(0)[1]") == 3 + len(first) + 1  # the second header
    assert source_lines(editor, p) == EDITED.rstrip("\n").split("\n")
    editor.nvim.input("r")  # reject the second: none is pending, the accepted one is applied
    editor.wait("return require('dllm.preview').current() == nil", what="the preview to close")
    want = EDITED.replace("return area(3, 4)", "return size(3, 4)")
    assert source_lines(editor, p) == want.rstrip("\n").split("\n")
    assert editor.lua("return vim.bo[...].modified", p["source"]) is True
    with open(path, encoding="utf-8") as f:
        assert f.read() == OLD  # never written: the user saves
    editor.nvim.command(f"buffer {p['source']}")
    editor.nvim.input("u")  # one undo step takes the whole preview back
    editor.wait("return vim.api.nvim_buf_get_lines(0, 5, 6, false)[1] == '    return area(3, 4)'", what="undo")
    assert editor.lines() == EDITED.rstrip("\n").split("\n")


def test_cancel_applies_nothing_and_accept_all_applies_everything(editor):
    open_and_rename(editor)
    editor.lua("require('dllm').propagate()")
    p = preview(editor)
    editor.nvim.input("q")
    editor.wait("return require('dllm.preview').current() == nil", what="the preview to close")
    assert source_lines(editor, p) == EDITED.rstrip("\n").split("\n")
    editor.nvim.command(f"buffer {p['source']}")
    editor.nvim.command("DllmPropagate")
    p = preview(editor)
    editor.nvim.input("A")
    editor.wait("return require('dllm.preview').current() == nil", what="the preview to close")
    assert source_lines(editor, p) == RIGHT.rstrip("\n").split("\n")
