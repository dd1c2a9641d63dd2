"""syntax_guard.parse_window: a window parsed incrementally from the last one gives the tree a fresh
parse gives, whatever changed between the two."""

import argparse
import ast
import json.decoder
import random
import textwrap

from dllm_ls.diffusion_core import syntax_guard as sg


def _nodes(tree) -> list[tuple]:
    out, stack = [], [tree.root_node]
    while stack:
        n = stack.pop()
        out.append((n.type, n.start_byte, n.end_byte, tuple(n.start_point), tuple(n.end_point), n.is_missing))
        stack.extend(n.children)
    return out


class _Recording:
    """python_parser() stand-in that records whether each parse had an old tree."""

    def __init__(self):
        self.parser, self.incremental = sg.python_parser(), []

    def parse(self, src, old=None):
        self.incremental.append(old is not None)
        return self.parser.parse(src) if old is None else self.parser.parse(src, old)


def test_incremental_window_parses_equal_fresh_ones(monkeypatch):
    rng = random.Random(0)
    files = [open(m.__file__, encoding="utf-8").read() for m in (argparse, ast, json.decoder, textwrap)]
    rec = _Recording()
    monkeypatch.setattr(sg, "python_parser", lambda: rec)
    monkeypatch.setattr(sg, "_last_parse", None)
    chars = ["x", " ", "(", ")", ":", "\n", '"', "é", "\t", "def ", "'''", "\u2603"]
    src = None
    for step in range(200):
        r = rng.random()
        if src is None or r < 0.1:  # another document's window
            f = rng.choice(files)
            at = rng.randrange(len(f))
            src = "".join(sg.window(f[:at], f[at:]))
        elif r < 0.5:  # typing at a point
            at = rng.randrange(len(src) + 1)
            src = src[:at] + "".join(rng.choice(chars) for _ in range(rng.randint(1, 3))) + src[at:]
        elif r < 0.7:  # deleting a stretch
            at = rng.randrange(len(src) + 1)
            src = src[:at] + src[at + rng.randint(1, 40):]
        elif r < 0.85:  # the same request again
            pass
        else:  # a stretch replaced by text from elsewhere (a paste, an undo)
            at, n = rng.randrange(len(src) + 1), rng.randint(1, 200)
            f = rng.choice(files)
            k = rng.randrange(len(f))
            src = src[:at] + f[k:k + n] + src[at + rng.randint(0, n):]
        data = src.encode("utf-8")
        got = sg.parse_window(data)
        want = rec.parser.parse(data)
        assert _nodes(got) == _nodes(want), step
        assert sg.error_spans(got.root_node) == sg.error_spans(want.root_node)
    assert sum(rec.incremental) > 100  # most parses reused the last tree
    assert not all(rec.incremental)  # and a new document's parsed fresh


def test_the_guard_reuses_the_last_window_and_judges_as_before():
    """A guard built right after another on the same text minus a keystroke sees the same errors
    as one built on a fresh parse."""
    prefix, suffix = "def f(x):\n    y = (x +\n    return ", "\n\nprint(f(1))\n"
    sg._last_parse = None
    fresh = sg.SyntaxGuard(prefix, suffix)
    sg.SyntaxGuard(prefix[:-1], suffix)  # the request before the keystroke
    again = sg.SyntaxGuard(prefix, suffix)
    assert again.errors == fresh.errors and again.baseline_errors == fresh.baseline_errors > 0
    assert again.check("x)", final=True) == fresh.check("x)", final=True)
