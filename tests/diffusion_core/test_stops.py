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


def test_a_statement_twice_in_a_row_is_a_loop():
    ctx = dict(prefix="def f(d):\n    ", mode="block")
    loop = "d -= 1\n\n    d -= 1\n    d -= 1\n"
    assert stop(loop, **ctx) == (6, "repeat")  # cut after the first; a blank line does not break the run
    assert stop("d -= 1\n    d -= 1", **ctx) is None  # the second line might go on
    assert stop("d -= 1\n    d -= 1", final=True, **ctx) == (6, "repeat")
    assert stop("d -= 1\n    d -= 2\n    return d\n", **ctx) is None  # alike is code
    assert stop("d -= 1\n    return d\n    d -= 1\n", **ctx) is None  # not in a row
    # lines that are not statements take three copies: list items, comments, lines without a letter
    assert stop("x = [\n        0,\n        0,\n    ]\n", **ctx) is None
    assert stop("x = [\n        f(a),\n        f(a),\n    ]\n", **ctx) is None
    assert stop("# --\n    # --\n    y = 1\n", **ctx) is None
    assert stop("1\n    1\n    y = 1\n", **ctx) is None
    assert stop("1\n    1\n    1\n", **ctx) == (1, "repeat")
    # the indentation counts: closing brackets at three depths are not a loop
    assert stop("x = f(g(h(\n                1\n            )\n        )\n    )\n", **ctx) is None
    assert stop("a\na\na\n", "x = ", mode="line") == (1, "eol")  # single lines end at their newline
    # a later, earlier-cutting stop still wins: the dedent before the loop
    assert stop("d = 1\nd = 1\nd = 1\n", **ctx) == (5, "dedent")


def test_a_block_twice_in_a_row_is_a_loop():
    ctx = dict(prefix="def f(xs):\n    ", mode="block")
    block = "if x:\n        return False\n    "
    first = (len("if x:\n        return False"), "repeat")  # cut after the first copy
    assert stop(block * 3, **ctx) == first
    assert stop(block * 2 + "return True\n", **ctx) == first  # the second copy is dead code
    assert stop((block * 2).rstrip(), **ctx) is None  # the second copy's last line might go on
    assert stop(block + "if x:\n        return True\n    ", **ctx) is None  # once is code
    # three lines, blank lines between copies not counting
    three = "a = f(a)\n    b = g(b)\n    c = h(c)\n\n    "
    assert stop("x = 0\n    " + three * 2, **ctx) == (len("x = 0\n    a = f(a)\n    b = g(b)\n    c = h(c)"), "repeat")
    # alike but not the same: code, not a loop
    assert stop("".join(f"if x == {i}:\n        return {i}\n    " for i in range(4)), **ctx) is None
    # blocks of more than REPEAT_BLOCK lines are left alone
    five = "".join(f"v{i} = {i}\n    " for i in range(5))
    assert stop(five * 3, **ctx) is None
    # a copy that starts mid-statement is taken on to the statement's end
    near = "if y:\n        return True\n    " + "if x:\n        return False\n    " * 3
    want = "if y:\n        return True\n    if x:\n        return False"
    assert stop(near, **ctx) == (len(want), "repeat")
    # the earliest loop decides: once a cut is found, later text does not move it
    text = block * 3 + "y = 1\n    " * 3
    assert stop(text, **ctx) == stop(block * 3, **ctx)


def test_a_loop_inside_one_line_cuts_before_the_line():
    ctx = dict(prefix="def f(n):\n    ", mode="block")
    head = "x = 1\n    return fib(n - 1)"
    assert stop(head + " + fib(n - 1)" * 11, **ctx) is None  # 11 copies: a long sum, maybe
    assert stop(head + " + fib(n - 1)" * 12, **ctx) == (len("x = 1\n"), "repeat")  # the last whole statement
    # the same cut once the line goes on or ends: later text never moves it
    assert stop(head + " + fib(n - 1)" * 30 + "\n    y = 2\n", **ctx) == (len("x = 1\n"), "repeat")
    # with no whole statement before it: nothing
    assert stop("return fib(n - 1)" + " + fib(n - 1)" * 12, **ctx) == (0, "repeat")
    # a statement that continues onto the looping line is cut before its first line
    assert stop("x = 1\n    y = f(a,\n          " + "b, c, " * 12, **ctx) == (len("x = 1\n"), "repeat")
    # one character over and over (a comment rule, indentation) is no loop
    assert stop("# " + "-" * 70 + "\n    x = 1\n", **ctx) is None
    # single lines keep their own stops
    assert stop("0, " * 20, "x = [", mode="line") is None


def test_auto_mode():
    assert auto_mode("def f():\n    ", "\n") == "block"
    assert auto_mode("def f():", "\n") == "block"
    assert auto_mode("x = foo(", ")\n") == "line"
    assert auto_mode("x = 1 + ", "\n") == "line"


def test_bad_mode_is_refused():
    with pytest.raises(ValueError, match="mode"):
        StopContext(mode="paragraph", prefix_line="")


def _closers_char_by_char(text, quotes="'\"", line_comment="#"):
    """unmatched_closers as it was written first: one step per character (the reference)."""
    stack, quote, i = [], None, 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote or c == "\n":
                quote = None
        elif c in quotes:
            quote = c
        elif line_comment and text.startswith(line_comment, i):
            nl = text.find("\n", i)
            if nl == -1:
                return
            i = nl
        elif c in "([{":
            stack.append(c)
        elif c in ")]}":
            if stack and stack[-1] == {")": "(", "]": "[", "}": "{"}[c]:
                stack.pop()
            elif not stack:
                yield i
        i += 1


def test_unmatched_closers_equals_the_char_by_char_scan():
    """The regex-skipping scan finds the same closers as one step per character, on random text
    made of the characters that matter (quotes, escapes, comments, brackets, newlines)."""
    import random

    from dllm_ls.diffusion_core.stops import unmatched_closers

    rng = random.Random(0)
    alphabet = "()[]{}'\"`\\#/\n ax"
    for quotes, comment in (("'\"", "#"), ("'\"`", "//"), ("'\"`", None), ("'", "#")):
        for _ in range(3000):
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
            assert list(unmatched_closers(text, quotes, comment)) == list(_closers_char_by_char(text, quotes, comment)), \
                (text, quotes, comment)
