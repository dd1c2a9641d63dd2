"""Decontamination against HumanEval: find files that hold a HumanEval prompt or canonical solution.

The rule. Text is compared as *normalised lines*: every line
stripped, runs of whitespace collapsed to one space, a leading `r`/`b` string prefix with triple
quotes and trailing triple quotes removed, and empty or comment-only (`#`) lines dropped. So
re-indentation (a solution pasted into a class or a string), blank lines, comments and the
docstring quote style do not hide a copy. A file is contaminated when its normalised lines contain,
as consecutive lines, any of these fingerprints of a problem:

1. **prompt**: the target function's signature and docstring (the prompt from the `def
   entry_point(` line on);
2. **docstring**: the docstring alone (a copy under another name), when it has >= 60 characters;
3. **solution**: the whole canonical solution, when it has >= 60 characters (shorter ones, like
   `return len(string)`, are everyday code);
4. **signature + solution**: the `def` line followed by the canonical solution (catches the short
   solutions written without their docstring);
5. **solution window**: any 6 consecutive solution lines holding >= 120 characters (a partial copy).

Files that store problems as escaped strings (JSON-ish data: `"...\\n    return x\\n"`) are also
checked with `\\n`, `\\t`, `\\"` and `\\'` unescaped. Generic code does not match: the rule drops no file of
the standard library + site-packages of the dev machine (230 MB, 17k files) or of the GPU machine
(400 MB, 26k files), while every disguise in tests/trainer/test_decontam.py is caught. The files
a build drops are listed in corpus_stats.json ("contaminated").

Matching is one dict lookup per line: each fingerprint is indexed by its longest line (its anchor),
and only where an anchor occurs is the whole fingerprint compared.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MIN_SOLUTION_CHARS = 60
MIN_DOCSTRING_CHARS = 60
WINDOW_LINES = 6
MIN_WINDOW_CHARS = 120

_WS = re.compile(r"\s+")
_QUOTES_HEAD = re.compile(r'^[rRbBuU]{0,2}("""|\'\'\')')


def normalise_line(line: str) -> str:
    """A line as compared: stripped, whitespace collapsed, triple quotes and comments removed."""
    s = line.strip()
    if not s or s[0] == "#":
        return ""
    if "  " in s or "\t" in s or "\r" in s or "\f" in s or "\v" in s:  # (fast path: most lines need nothing)
        s = _WS.sub(" ", s)
    if s[0] in "\"'rRbBuU":
        s = _QUOTES_HEAD.sub("", s)
    if s.endswith(('"""', "'''")):
        s = s[:-3]
    return s.strip()


def normalise_lines(text: str) -> list[str]:
    out = []
    for line in text.split("\n"):
        s = normalise_line(line)
        if s:
            out.append(s)
    return out


@dataclass(frozen=True)
class Fingerprint:
    problem_id: str
    kind: str  # "prompt", "docstring", "solution", "signature+solution", "solution window"
    lines: tuple[str, ...]


def problem_fingerprints(task_id: str, problem: dict) -> list[Fingerprint]:
    """The fingerprints of one HumanEval problem (see the module docstring)."""
    prompt_lines = problem["prompt"].split("\n")
    def_re = re.compile(rf"\s*def\s+{re.escape(problem['entry_point'])}\s*\(")
    starts = [i for i, line in enumerate(prompt_lines) if def_re.match(line)]
    start = starts[-1] if starts else 0
    target = normalise_lines("\n".join(prompt_lines[start:]))
    sol = normalise_lines(problem["canonical_solution"])
    fps = []
    if len(target) >= 2:
        fps.append(Fingerprint(task_id, "prompt", tuple(target)))
        doc = target[1:]
        if sum(map(len, doc)) >= MIN_DOCSTRING_CHARS:
            fps.append(Fingerprint(task_id, "docstring", tuple(doc)))
    if sol and sum(map(len, sol)) >= MIN_SOLUTION_CHARS:
        fps.append(Fingerprint(task_id, "solution", tuple(sol)))
    if sol and starts:
        fps.append(Fingerprint(task_id, "signature+solution", (target[0], *sol)))
    for i in range(len(sol) - WINDOW_LINES + 1):
        win = sol[i:i + WINDOW_LINES]
        if sum(map(len, win)) >= MIN_WINDOW_CHARS:
            fps.append(Fingerprint(task_id, "solution window", tuple(win)))
    return fps


def _unescape(text: str) -> str:
    return text.replace("\\n", "\n").replace("\\t", "\t").replace('\\"', '"').replace("\\'", "'")


class Decontaminator:
    """Finds HumanEval prompts and solutions in a text. Build once, call `match` per file."""

    def __init__(self, problems: dict[str, dict] | None = None):
        if problems is None:
            from .humaneval import load_problems

            problems = load_problems()
        self.fingerprints: list[Fingerprint] = []
        for tid, p in problems.items():
            self.fingerprints += problem_fingerprints(tid, p)
        # anchor line -> [(fingerprint index, offset of the anchor within it)]
        self.index: dict[str, list[tuple[int, int]]] = {}
        for n, fp in enumerate(self.fingerprints):
            k = max(range(len(fp.lines)), key=lambda i: len(fp.lines[i]))
            self.index.setdefault(fp.lines[k], []).append((n, k))

    def _match_lines(self, lines: list[str]) -> Fingerprint | None:
        index = self.index
        for i, line in enumerate(lines):
            hits = index.get(line)
            if hits is None:
                continue
            for n, k in hits:
                fp = self.fingerprints[n]
                a = i - k
                if a >= 0 and tuple(lines[a:a + len(fp.lines)]) == fp.lines:
                    return fp
        return None

    def match(self, text: str) -> Fingerprint | None:
        """The first fingerprint found in `text`, or None when the text is clean."""
        fp = self._match_lines(normalise_lines(text))
        if fp is None and "\\n" in text:
            fp = self._match_lines(normalise_lines(_unescape(text)))
        return fp
