"""Code-aware stops on plain text."""

import pytest

from dllm_ls.diffusion_core.stops import StopContext, auto_mode, find_stop


def stop(text, prefix="", suffix="", mode="line", final=False):
    return find_stop(text, StopContext.from_text(mode, prefix, suffix), final=final)


def test_eol_cuts_at_first_newline_after_content():
    assert stop("x + 1\ny", "a = ") == (5, "eol")
    assert stop("x + 1", "a = ") is None  # the line is not over yet
    assert stop("\n    return 1\n", "def f():") == (13, "eol")  # leading newline: the next line is the one


def test_dedent_needs_the_first_character_of_the_line():
    ctx = dict(prefix="def f(x):\n    ", mode="block")
    assert stop("y = 1\n", **ctx) is None
    assert stop("y = 1\n  ", **ctx) is None  # indentation still growing
    assert stop("y = 1\nz", **ctx) == (5, "dedent")
    assert stop("y = 1\n\n    z = 2\n", **ctx) is None  # blank lines do not end the block


def test_dedent_after_a_header_on_the_cursor_line():
    assert stop("\n    return x\n\ndef g", "def f(x):", mode="block") == (14, "dedent")
    assert stop("x):\n    return x\ny", "def f(", mode="block") == (16, "dedent")


def test_brackets_ignore_strings_and_comments():
    assert stop("')'", "print(", ")") is None
    assert stop("a)  # )", "print(", ")") == (1, "brackets")
    assert stop("a) + 1", "print(", "") is None  # the suffix does not close it: the completion must


def test_suffix_repeat():
    assert stop("a = 1\n    b = 2\n", "    ", "\n    b = 2\n", mode="block") == (5, "suffix")
    assert stop("ab = 1", "x", " = 1", final=True) == (3, "suffix")
    assert stop("ab = 1", "x", " = 1", final=False) is None  # the line might go on


def test_auto_mode():
    assert auto_mode("def f():\n    ", "\n") == "block"
    assert auto_mode("def f():", "\n") == "block"
    assert auto_mode("x = foo(", ")\n") == "line"
    assert auto_mode("x = 1 + ", "\n") == "line"


def test_bad_mode_is_refused():
    with pytest.raises(ValueError, match="mode"):
        StopContext(mode="paragraph", prefix_line="")
