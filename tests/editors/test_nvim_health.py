"""`:checkhealth dllm`, setup() and the user commands, in real headless Neovim 0.11.4."""

from __future__ import annotations

import pytest

from .conftest import ROOT, Editor, nvim_binary, scripted_serve_cmd

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ed(tmp_path_factory):
    e = Editor(nvim_binary("0.11"), tmp_path_factory.mktemp("health"))
    yield e
    e.close()


def health_report(ed: Editor, opts: dict) -> str:
    ed.lua("require('dllm').setup(...)", opts)
    ed.nvim.command("checkhealth dllm")
    text = "\n".join(ed.nvim.current.buffer[:])
    ed.nvim.command("bwipeout!")
    return text


def test_checkhealth_has_no_error_with_the_server_installed(ed, editor_checkpoint, document_file):
    report = health_report(ed, {"cmd": scripted_serve_cmd(editor_checkpoint, document_file),
                                "cmd_env": {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}})
    assert "ERROR" not in report, report
    for line in ("Neovim 0.11.4", "server starts and answers initialize", "core reachable: ready on cpu",
                 "model loaded: model "):
        assert line in report, report


def test_checkhealth_names_a_wrong_command_and_the_fix(ed):
    report = health_report(ed, {"cmd": ["dllm-ls-no-such-command", "serve"]})
    assert "ERROR server command not found: dllm-ls-no-such-command" in report, report
    assert "pip install dllm-ls" in report and "cmd = {" in report  # the fix follows the error


def test_checkhealth_reports_a_model_that_does_not_load(ed, tmp_path):
    import sys

    report = health_report(ed, {"cmd": [sys.executable, "-m", "dllm_ls.cli", "serve", "--checkpoint",
                                        str(tmp_path / "missing")],
                                "cmd_env": {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}})
    assert "ERROR model not loaded" in report, report
    assert "--checkpoint DIR" in report  # the server's fix hint


def test_setup_is_idempotent_and_validates_its_options(ed):
    ed.lua("require('dllm').setup({ keys = { accept = '<C-l>' } }); require('dllm').setup({ keys = { accept = '<C-j>' } })")
    maps = ed.lua("local r = {} for _, m in ipairs(vim.api.nvim_get_keymap('i')) do "
                  "if (m.desc or ''):match('^dllm') then r[#r+1] = m.lhs end end return r")
    assert "<C-J>" in maps and "<C-L>" not in maps and len(maps) == len(set(maps)) == 6
    assert ed.lua("return #vim.api.nvim_get_autocmds({ group = 'dllm' })") == 1
    err = ed.lua("local ok, e = pcall(require('dllm').setup, { debounce_ms = 'soon' }); return e")
    assert "debounce_ms" in err and "milliseconds" in err
    err = ed.lua("local ok, e = pcall(require('dllm').setup, { keys = { acept = '<Tab>' } }); return e")
    assert "keys.acept" in err


def test_commands_status_toggle_restart(ed, editor_checkpoint, document_file):
    ed.lua("require('dllm').setup(...)", {"cmd": scripted_serve_cmd(editor_checkpoint, document_file),
                                          "cmd_env": {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}})
    ed.nvim.command(f"edit {ed.cwd}/cmd.py")
    ed.wait("for _, s in pairs(require('dllm').status) do if s.state == 'ready' then return true end end",
            timeout=60, what="ready")
    status = ed.lua("return table.concat(require('dllm').status_lines(true), '\\n')")
    assert "dllm: ready - model " in status and "telemetry: {" in status
    assert ed.lua("vim.cmd('DllmToggle'); return require('dllm').config.enabled") is False
    ed.wait("for _, s in pairs(require('dllm').status) do if s.state == 'disabled' then return true end end",
            what="the server reports disabled")
    assert ed.lua("vim.cmd('DllmToggle'); return require('dllm').config.enabled") is True
    old = ed.lua("return vim.lsp.get_clients({ name = 'dllm' })[1].id")
    ed.nvim.command("DllmRestart")
    new = ed.wait("local c = vim.lsp.get_clients({ bufnr = 0, name = 'dllm' })[1]; "
                  "return c and c.id ~= ... and c.id", old, timeout=30, what="a new client")
    assert new != old
    # the server offers code actions ("Fix this function"), so fix() hands over to vim.lsp.buf.code_action
    assert ed.lua("return require('dllm').fix()") is True
