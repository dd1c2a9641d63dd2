"""tree-sitter: the mode at the cursor, insertions that parse, languages without a grammar."""

import pytest

from dllm_ls.lsp_server import syntax

PY = syntax.grammar_for("python")


@pytest.mark.parametrize("prefix,suffix,mode", [
    ("def f(x):\n    ", "\n", "block"),  # blank line in a body
    ("def f(x):", "\n", "block"),  # after a header
    ("x = ", "\n", "line"),  # mid-statement
    ("print(", ")\n", "line"),  # the rest of the line is a closer only, but in brackets
    ("foo(", "x)\n", "line"),  # text after the cursor
    ('def f(x):\n    """Doc.\n    ', '\n    """\n    return x\n', "line"),  # blank line in a docstring
    ("y = f(\n    a,\n    ", "\n)\n", "line"),  # blank line in an argument list
    ("d = {\n    'a': 1,\n    ", "\n}\n", "line"),  # in a dict literal
    ("for i in range(3):\n    print(i)\n", "", "block"),  # a new line at module level
    ("x = 1  # note", "\n", "line"),
])
def test_mode_from_the_node_at_the_cursor(prefix, suffix, mode):
    assert syntax.choose_mode(prefix, suffix, PY) == mode


def test_mode_setting_and_allowed_modes():
    assert syntax.choose_mode("def f(x):\n    ", "\n", PY, ("line",)) == "line"
    assert syntax.choose_mode("x = ", "\n", PY, ("block",)) == "block"


def test_language_without_grammar_still_decides():
    assert syntax.grammar_for("cobol") is None
    assert syntax.grammar_for("haskell") is None
    assert syntax.choose_mode("main = do\n  ", "\n", None) == "block"
    assert syntax.choose_mode("x = ", "\n", None) == "line"
    assert syntax.trim_to_parse(None, "a", "b\nc(", "") == "b\nc("


def test_language_id_from_extension():
    assert syntax.language_id_for("file:///a/b.py") == "python"
    assert syntax.language_id_for("file:///a/b.PY") == "python"
    assert syntax.language_id_for("file:///a/b.txt") == ""
    assert syntax.language_id_for("file:///a/b.txt", "python") == "python"
    assert syntax.line_comment_for("python") == "#" and syntax.line_comment_for("rust") == "//"
    assert syntax.line_comment_for("") is None


def test_insertions_that_parse():
    prefix, suffix = "def f(x):\n    ", "\n\nprint(f(1))\n"
    assert syntax.new_errors(PY, prefix, "return x + 1", suffix) <= 0
    assert syntax.new_errors(PY, prefix, "return x +", suffix) > 0
    # a multi-line insertion is cut to the longest run of whole lines that parses
    assert syntax.trim_to_parse(PY, prefix, "y = x * 2\n    return y\n    z = (", suffix) == "y = x * 2\n    return y"
    # single lines and text that parses are left alone
    assert syntax.trim_to_parse(PY, prefix, "return x +", suffix) == "return x +"
    assert syntax.trim_to_parse(PY, prefix, "y = 1\n    return y", suffix) == "y = 1\n    return y"


def test_only_a_window_is_parsed():
    big = "x = 1\n" * 200_000
    p, s = syntax.window(big + "def f():\n    ", "\n" + big)
    assert len(p) <= syntax.WINDOW_BEFORE and len(s) <= syntax.WINDOW_AFTER
    assert p == "def f():\n    "  # a cut prefix starts at its first definition (syntax_guard.window)
    assert syntax.choose_mode(big + "def f():\n    ", "\n" + big, PY) == "block"
