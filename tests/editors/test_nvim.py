"""The Neovim plugin in a real headless Neovim against a real `dllm-ls serve` (see conftest.py).

The server's model writes DOCUMENT, so with the buffer holding its first line and the cursor on
an indented empty line, the suggestion is known: "total = a + b\n    return total".
"""

from __future__ import annotations

import itertools

import pytest

from .conftest import DOCUMENT, ROOT, Editor, nvim_binary, scripted_serve_cmd

pytestmark = pytest.mark.slow
SUGGESTION = "total = a + b\n    return total"
_names = itertools.count()


@pytest.fixture(scope="module", params=["0.11", "0.12"])
def editor(request, tmp_path_factory, editor_checkpoint, document_file):
    binary = nvim_binary(request.param)
    cwd = tmp_path_factory.mktemp(f"nvim{request.param}")
    ed = Editor(binary, cwd)
    ed.version = request.param
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    ed.lua("require('dllm').setup(...)", {
        "cmd": scripted_serve_cmd(editor_checkpoint, document_file), "cmd_env": env,
        "settings": {"mode": "auto"}, "debounce_ms": 10,
    })
    yield ed
    ed.close()


def start_typing(ed: Editor, lines: list[str], keys: str = "A"):
    """A fresh Python buffer holding `lines`, the server attached and ready, then `keys` typed
    (on the last line) like a user would."""
    ed.nvim.input("<Esc>")
    ed.nvim.command(f"edit {ed.cwd}/t{next(_names)}.py")
    ed.nvim.current.buffer[:] = lines
    ed.wait("return #vim.lsp.get_clients({bufnr = 0, name = 'dllm'}) > 0", what="the server to attach")
    ed.wait("for _, s in pairs(require('dllm').status) do if s.state == 'ready' then return true end end",
            timeout=60, what="dllm/status ready")
    ed.nvim.command(f"normal! {len(lines)}G")
    ed.nvim.input(keys)


def wait_shown(ed: Editor, expected: str | None = None) -> str:
    if expected is None:
        return ed.wait("return require('dllm').shown()", what="ghost text")
    ed.wait("return require('dllm').shown() == ...", expected, what=f"ghost text {expected!r}")
    return expected


def test_ghost_text_appears_and_accept_inserts_it(editor):
    start_typing(editor, ["def add(a, b):", "    "])
    wait_shown(editor, SUGGESTION)
    assert editor.mode() == "i"
    editor.nvim.input("<Tab>")
    editor.wait("return vim.api.nvim_buf_get_lines(0, 0, -1, false)[3] == '    return total'", what="accepted text")
    assert editor.lines() == DOCUMENT.rstrip("\n").split("\n")
    assert editor.lua("return vim.api.nvim_win_get_cursor(0)") == [3, len("    return total")]
    assert editor.shown() is None or not editor.shown().startswith("total")


def test_accept_word_then_line_take_only_that_part(editor):
    start_typing(editor, ["def add(a, b):", "    "])
    wait_shown(editor, SUGGESTION)
    editor.nvim.input("<M-Right>")
    wait_shown(editor, " = a + b\n    return total")
    assert editor.lines() == ["def add(a, b):", "    total"]
    editor.nvim.input("<M-C-Right>")
    wait_shown(editor, "\n    return total")
    assert editor.lines() == ["def add(a, b):", "    total = a + b"]
    editor.nvim.input("<M-C-Right>")
    editor.wait("return #vim.api.nvim_buf_get_lines(0, 0, -1, false) == 3", what="the second line")
    assert editor.lines() == ["def add(a, b):", "    total = a + b", "    return total"]


def test_dismiss_clears_the_ghost_text_and_tab_then_inserts_a_tab(editor):
    start_typing(editor, ["def add(a, b):", "    "])
    wait_shown(editor, SUGGESTION)
    editor.nvim.input("<C-]>")
    editor.wait("return require('dllm').shown() == nil", what="no ghost text")
    assert editor.lines() == ["def add(a, b):", "    "]
    editor.lua("vim.bo.expandtab = false; vim.bo.softtabstop = 0")
    editor.nvim.input("<Tab>")  # nothing shown: the key falls through
    editor.wait("return vim.api.nvim_get_current_line() ~= '    '", what="the Tab")
    assert editor.lines()[1] == "    \t"


def test_typing_the_shown_text_keeps_the_rest_shown(editor):
    start_typing(editor, ["def add(a, b):", "    "])
    wait_shown(editor, SUGGESTION)
    editor.nvim.input("tot")
    wait_shown(editor, SUGGESTION[3:])
    editor.nvim.input("al = ")
    wait_shown(editor, SUGGESTION[len("total = "):])
    assert editor.lines() == ["def add(a, b):", "    total = "]


def test_leaving_insert_mode_hides_it_and_accept_has_an_undo_break(editor):
    start_typing(editor, ["def add(a, b):", "    "])
    wait_shown(editor, SUGGESTION)
    editor.nvim.input("<Tab>")
    editor.wait("return #vim.api.nvim_buf_get_lines(0, 0, -1, false) == 3", what="accepted text")
    editor.nvim.input("<Esc>")
    editor.wait("return vim.api.nvim_get_mode().mode == 'n'")
    assert editor.shown() is None
    editor.nvim.input("u")  # undoes the accepted text only
    editor.wait("return #vim.api.nvim_buf_get_lines(0, 0, -1, false) == 2", what="undo")
    assert editor.lines() == ["def add(a, b):", "    "]


def test_the_version_under_test_and_its_ghost_text_path(editor):
    v = editor.lua("local v = vim.version(); return {v.major, v.minor}")
    assert f"{v[0]}.{v[1]}" == editor.version
    native = editor.lua("return require('dllm').native()")
    assert native == (editor.version == "0.12")  # 0.12: vim.lsp.inline_completion; 0.11: the plugin's
    start_typing(editor, ["def add(a, b):", "    "])
    wait_shown(editor, SUGGESTION)
    ns = "nvim.lsp.inline_completion" if native else "dllm.ghost"
    assert editor.lua("local ns = vim.api.nvim_get_namespaces()[...]; "
                      "return #vim.api.nvim_buf_get_extmarks(0, ns, 0, -1, {})", ns) == 1
    editor.nvim.input("<C-]>")
    editor.wait("return require('dllm').shown() == nil", what="no ghost text")


def test_the_popup_menu_hides_the_ghost_text_until_it_closes(editor):
    if editor.version != "0.11":
        pytest.skip("0.12: the ghost text is Neovim's own vim.lsp.inline_completion")
    start_typing(editor, ["def add(a, b):", "    "])
    wait_shown(editor, SUGGESTION)
    editor.nvim.input("<C-n>")  # keyword completion: the popup menu opens
    editor.wait("return vim.fn.pumvisible() == 1", what="the popup menu")
    editor.wait("return require('dllm').shown() == nil", what="the ghost text hidden")
    editor.nvim.input("<C-e>")  # closed, the text as before: the suggestion comes back
    wait_shown(editor, SUGGESTION)
    assert editor.lines() == ["def add(a, b):", "    "]
