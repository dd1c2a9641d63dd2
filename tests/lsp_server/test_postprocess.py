"""Post-processing as plain functions on scripted completions."""

import pytest

from dllm_ls.lsp_server.postprocess import (
    IndentStyle, balance_brackets, cut_repeated_lines, detect_indent, drop_suffix_duplicate,
    match_indentation, postprocess, strip_trailing_whitespace, to_eol)


def test_strip_trailing_whitespace_keeps_a_leading_newline():
    assert strip_trailing_whitespace("x = 1   \n  y = 2\t\n\n  \n") == "x = 1\n  y = 2"
    assert strip_trailing_whitespace("\n    return 1  ") == "\n    return 1"
    assert strip_trailing_whitespace("  \n \t") == ""


@pytest.mark.parametrize("text,expected", [
    ("x = 1\nx = 1\nx = 1", "x = 1"),
    ("a = f(1)\nb = g(2)\na = f(1)\nb = g(2)\n", "a = f(1)\nb = g(2)"),
    ("total += x\n    total += x", "total += x\n    total += x"),  # different lines (indentation)
    ("}\n}\n", "}\n}\n"),  # brackets only: not a loop
    ("x = 1\n\nx = 1", "x = 1\n\nx = 1"),  # not in a row
    ("return total", "return total"),
])
def test_cut_repeated_lines(text, expected):
    assert cut_repeated_lines(text) == expected


def test_never_duplicates_the_next_line_of_the_suffix():
    prefix = "def s(xs):\n    total = 0\n    "
    suffix = "\n    return total\n"
    assert drop_suffix_duplicate("for x in xs:\n        total += x\n    return total", prefix, suffix) == \
        "for x in xs:\n        total += x"
    # the completion is the line that follows anyway: nothing to insert
    assert drop_suffix_duplicate("return total", "def s(xs):\n    ", "\n    return total\n") == ""
    # the same text at another indentation is not a duplicate
    assert drop_suffix_duplicate("if x:\n        return total", prefix, suffix) == "if x:\n        return total"


def test_never_duplicates_the_rest_of_the_cursor_line():
    assert drop_suffix_duplicate("x in xs:", "for ", ":\n    pass\n") == "x in xs"
    assert drop_suffix_duplicate("a, b):", "def f(", "):\n") == "a, b"
    assert drop_suffix_duplicate("a, b", "def f(", "):\n") == "a, b"
    assert drop_suffix_duplicate(")", "f(", ")\n") == ")"  # a lone bracket is balance_brackets' business


@pytest.mark.parametrize("prefix_text,text,suffix,expected", [
    ("print(", "a, b)", ")", "a, b"),  # the editor's auto-closed bracket is already there
    ("print(", "f(a), [b]", ")", "f(a), [b]"),  # brackets opened in the completion are kept
    ("print(", "f(a))", ")\n", "f(a)"),
    ("x = [", "1, 2]", "]", "1, 2"),
    ("print(", "a, b)", "", "a, b)"),  # no closer after the cursor: keep it
    ("print(", "a, b]", ")", "a, b]"),  # a different bracket: not ours to fix
    ("print(", "')' + x)", ")", "')' + x"),  # brackets in strings do not count
    ("print(", "x  # )\n)", ")", "x  # )"),
])
def test_balance_brackets_against_the_suffix(prefix_text, text, suffix, expected):
    assert balance_brackets(text, suffix).rstrip() == expected.rstrip()


def test_detect_indent():
    assert detect_indent("def f():\n  x = 1\n  if x:\n    y = 2\n  return y\n") == IndentStyle(width=2)
    assert detect_indent("def f():\n\tx = 1\n\tif x:\n\t\ty = 2\n") == IndentStyle(tabs=True)
    assert detect_indent("x = 1\n") == IndentStyle()  # too few indented lines to tell


def test_match_indentation_tabs_and_width():
    tabs = IndentStyle(tabs=True)
    assert match_indentation("if x:\n        y = 1", "def f():\n\t", tabs) == "if x:\n\t\ty = 1"
    assert match_indentation("if x:\n\t\ty = 1", "def f():\n    ", IndentStyle(width=4)) == "if x:\n        y = 1"
    # the model wrote 4-space levels in a 2-space file
    assert match_indentation("if x:\n      y = 1\n  z = 2", "def f():\n  ", IndentStyle(width=2)) == \
        "if x:\n    y = 1\n  z = 2"
    # the first line continues the cursor's line: its leading spaces are text, not indentation
    assert match_indentation("  # note", "x = 1", IndentStyle(width=2)) == "  # note"


def test_crlf_documents_get_crlf():
    assert to_eol("a\nb\r\nc", "\r\n") == "a\r\nb\r\nc"
    assert to_eol("a\r\nb", "\n") == "a\nb"
    out = postprocess("\n    return 1\n", prefix="def f():", suffix="\n\nx = 1\n", eol="\r\n")
    assert out == "\r\n    return 1"


def test_postprocess_pipeline():
    # the closer the suffix supplies ends the completion; then trailing blanks go
    out = postprocess("total / len(xs))  \nfoo\n", prefix="print(", suffix=")\n", eol="\n")
    assert out == "total / len(xs)"
    out = postprocess("x = 1  \nx = 1\n\n", prefix="", suffix="\ny = 2\n", eol="\r\n")
    assert out == "x = 1"
    assert postprocess("   \n", prefix="x = ", suffix="", eol="\n") == ""
