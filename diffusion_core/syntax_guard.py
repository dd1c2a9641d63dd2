"""The tree-sitter syntax guard of the sampler (`SamplerConfig.syntax_guard`, issue 10).

After a denoising step's commits, `DecodeState.advance` shows the guard the contiguous committed
text; when the step's commits open a new syntax error the sampler remasks them and redoes the step
(same logits, no extra forward) committing only the single most confident position; if that one
commit also opens an error it is kept (the error may be the model's answer, and decoding must
progress: every step still commits at least one token, so `steps <= tokens` holds).

When does a commit "open a new syntax error"? A completion is written left to right in the file,
and a half-written line or statement is naturally not valid code yet, so the guard does not judge
every step. It judges the *judged text*, which is

- the whole completion once it is final (a stop fired, `<|eos|>`, or `max_tokens`), cut exactly as
  `Sampler._finish` cuts it, i.e. what the editor would insert;
- otherwise the committed text up to its last *statement boundary*: a line break at which no
  bracket or string opened in the completion is still open, and the line before it does not ask
  for more (it does not end with `:`, `,`, `\\` or an opening bracket, nor start with `@`).
  In line mode the text ends at its first line break, so a line completion is judged once, when
  it is final.

A final completion that starts on a line blank before the cursor, with a suffix that does not
start with a line break, is judged followed by one: it is a line (or lines) of its own (how the Q1
and Q2 harnesses insert it, and what an editor on an empty line gets).

The judged text J is inserted into a window of the document (prefix + J + suffix; at most
`WINDOW_BEFORE`/`WINDOW_AFTER` characters around the cursor, cut at line boundaries, a cut
prefix starting at its first `def`/`class`/decorator line, so a big file costs what a small one
does and a cut inside a docstring does not turn the window into one big error) and tree-sitter
lists its ERROR and MISSING nodes. A step opens a new syntax error when one of them is not an
error of the last accepted judged text (at the start: the document with the hole empty) moved by
the edit (the byte spans before the edit stay, those after it shift by the change of length).
So errors that were there before (a hole often leaves the file
broken: `y = ` with nothing after it) are not new, but a completion that replaces such an error by
another one (`y = x + )`) is caught, which counting errors would miss. A step that does not
change J is not judged (no parse). The accepted tree is kept and re-parsed incrementally
(`Tree.edit`), so a judgement costs well under a millisecond on the windowed text. The window
itself is parsed incrementally from the last request's (`parse_window`): an editor's requests
come a keystroke apart.

Only Python is guarded (`GUARDED_LANGUAGES`): the core gets the request's language id (the
server's `languageId`, guessed from the extension when the client sends none); any other
language gets no guard. The graphed CUDA decoder (graphed.py) and the AR baseline have no guard.
"""

from __future__ import annotations

import re
import threading
import time
from functools import lru_cache

from .stops import statement_boundary

GUARDED_LANGUAGES = frozenset({"python"})
WINDOW_BEFORE = 4_000
WINDOW_AFTER = 2_000


@lru_cache(maxsize=1)
def python_parser():
    """One tree-sitter Python parser per process (also the post-training syntax check's)."""
    import tree_sitter
    import tree_sitter_python

    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_python.language()))


_DEFINITION = re.compile(r"^[ \t]*(?:async[ \t]+def|def|class)[ \t]|^[ \t]*@", re.M)


def window(prefix: str, suffix: str, before: int = WINDOW_BEFORE, after: int = WINDOW_AFTER) -> tuple[str, str]:
    """At most `before` characters of the prefix (from a line start) and `after` of the suffix
    (to a line end). A cut prefix starts at its first definition line (`def`, `class`, a
    decorator) when it has one before the cursor's line: a cut inside a docstring or an
    expression turns the whole window into errors, whose parses cost 10x a clean one's and hide
    new errors. lsp_server/syntax.py uses it with its own sizes."""
    if len(prefix) > before:
        cut = prefix.find("\n", len(prefix) - before)
        prefix = prefix[cut + 1:] if cut != -1 else prefix[-before:]
        d = _DEFINITION.search(prefix, 0, prefix.rfind("\n") + 1)
        if d is not None:
            prefix = prefix[d.start():]
    if len(suffix) > after:
        cut = suffix.rfind("\n", 0, after)
        suffix = suffix[:cut + 1] if cut > 0 else suffix[:after]
    return prefix, suffix


def _point(data: bytes) -> tuple[int, int]:
    """(row, byte column) of the end of `data`."""
    nl = data.rfind(b"\n")
    return data.count(b"\n"), len(data) - (nl + 1)


def _common_prefix(a: bytes, b: bytes) -> int:
    """The length of the longest common prefix of a and b, by halving (each probe one memcmp)."""
    lo, hi = 0, min(len(a), len(b))
    if a[:hi] == b[:hi]:
        return hi
    while lo < hi - 1:  # a[:lo] == b[:lo], a[:hi] != b[:hi]
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if a[:mid] == b[:mid] else (lo, mid)
    return lo


_last_parse: tuple[bytes, object] | None = None  # (source, tree) of the last window parsed
_last_lock = threading.Lock()


def parse_window(src: bytes):
    """`python_parser().parse(src)`, incrementally from the last window parsed here when the two
    differ in one stretch that leaves at least half of it alike (an editor's requests come a
    keystroke apart: ~0.2 ms where a fresh parse of a 5 KB window takes ~0.5 ms on a CPU core).
    The tree is the one a fresh parse gives (tree-sitter's incremental parsing;
    tests/diffusion_core/test_parse_window.py compares them node by node)."""
    global _last_parse
    with _last_lock:
        last = _last_parse
    tree = None
    if last is not None:
        old, old_tree = last
        cp = _common_prefix(old, src)
        cs = _common_prefix(old[cp:][::-1], src[cp:][::-1])  # the common suffix after it
        if cp + cs >= len(src) // 2:
            edited = old_tree.copy()
            edited.edit(start_byte=cp, old_end_byte=len(old) - cs, new_end_byte=len(src) - cs,
                        start_point=_point(src[:cp]), old_end_point=_point(old[:len(old) - cs]),
                        new_end_point=_point(src[:len(src) - cs]))
            tree = python_parser().parse(src, edited)
    if tree is None:
        tree = python_parser().parse(src)
    with _last_lock:
        _last_parse = (src, tree)
    return tree


def error_spans(node) -> set[tuple[bool, int, int]]:
    """(missing?, start byte, end byte) of the ERROR and MISSING nodes under `node` (visiting only
    subtrees that hold errors)."""
    out: set[tuple[bool, int, int]] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if not n.has_error and not n.is_missing:
            continue
        if n.is_error or n.is_missing:
            out.add((n.is_missing, n.start_byte, n.end_byte))
        stack.extend(n.children)
    return out


class SyntaxGuard:
    """One request's guard: the judged text accepted so far, its tree and its syntax errors."""

    def __init__(self, prefix: str, suffix: str):
        self.prefix, self.suffix = window(prefix.replace("\r\n", "\n"), suffix.replace("\r\n", "\n"))
        self._pre = self.prefix.encode("utf-8", "surrogatepass")
        self._suf = self.suffix.encode("utf-8", "surrogatepass")
        self.judged = b""  # the accepted judged text (bytes)
        # the cursor's line is blank before the cursor and the suffix does not start with a line
        # break: a final completion is judged followed by one (Q1/Q2's harness and an editor on an
        # empty line alike insert the completion as whole lines before the next)
        self.own_line = not self.prefix[self.prefix.rfind("\n") + 1:].strip() and not self.suffix.startswith("\n")
        self.parses = 0  # tree-sitter parses run
        self.fired = 0  # judgements that found a new error
        self.ms = 0.0  # time spent in the guard
        self._pending = None
        self.judged_now = False
        t0 = time.perf_counter()
        self.tree = self._parse(b"")
        self.errors = error_spans(self.tree.root_node)
        self.baseline_errors = len(self.errors)
        self.ms += (time.perf_counter() - t0) * 1000

    @classmethod
    def for_request(cls, prefix: str, suffix: str, language: str) -> "SyntaxGuard | None":
        """The guard for a request, or None when its language is not guarded."""
        return cls(prefix, suffix) if language in GUARDED_LANGUAGES else None

    def _parse(self, middle: bytes, old=None):
        self.parses += 1
        src = self._pre + middle + self._suf
        return python_parser().parse(src, old) if old is not None else parse_window(src)

    def judged_text(self, text: str, final: bool) -> str:
        """What is judged of the committed `text` (see the module docstring)."""
        if not final:
            return text[:statement_boundary(text)]
        if text and self.own_line and not text.endswith("\n"):
            return text + "\n"  # a completion that starts a line is a line (or lines) of its own
        return text

    def check(self, text: str, final: bool) -> bool:
        """Whether the committed text `text` (final: the completion as it will be inserted) opens a
        new syntax error: an ERROR/MISSING node of prefix + J + suffix (J its judged text) that is
        not one of the accepted text's errors moved by the edit. When it opens none, J becomes the
        accepted judged text."""
        new = self.judged_text(text, final).encode("utf-8", "surrogatepass")
        old = self.judged
        self.judged_now = new != old  # whether this check judged anything
        if new == old:
            return False
        t0 = time.perf_counter()
        cp = _common_prefix(old, new)  # the edit: old[cp:] replaced by new[cp:]
        at = len(self._pre) + cp
        old_end, new_end = len(self._pre) + len(old), len(self._pre) + len(new)
        tree = self.tree.copy()
        tree.edit(start_byte=at, old_end_byte=old_end, new_end_byte=new_end,
                  start_point=_point(self._pre + new[:cp]), old_end_point=_point(self._pre + old),
                  new_end_point=_point(self._pre + new))
        tree = self._parse(new, tree)
        errors = error_spans(tree.root_node)
        delta = new_end - old_end

        def moved(x: int) -> tuple[int, ...]:  # where a byte offset of the old text is now
            if x < at:
                return (x,)
            if x > old_end:
                return (x + delta,)
            if x == at or x == old_end:  # at an end of the edit: either side
                return (x, x + delta) if x == at and x == old_end else ((x,) if x == at else (x + delta,))
            return ()  # inside the replaced text

        before = {(m, s2, e2) for m, s, e in self.errors for s2 in moved(s) for e2 in moved(e)}
        self.ms += (time.perf_counter() - t0) * 1000
        if errors - before:
            self.fired += 1
            self._pending = (new, tree, errors)
            return True
        self.judged, self.tree, self.errors = new, tree, errors
        return False

    def accept(self):
        """Keep the text of the last `check` that fired (nothing fewer was left to try)."""
        self.judged, self.tree, self.errors = self._pending
