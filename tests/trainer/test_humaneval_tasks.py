"""The Q1/Q2 task builders and the sandbox that runs their programs."""

from __future__ import annotations

import random
import time

import pytest

from dllm_ls.trainer.humaneval import (Q1_TASK_COUNT, after_indent, indent_width, load_problems, mid_word, q1_tasks,
                                      q2_tasks, subsample)
from dllm_ls.trainer.sandbox import SandboxConfig, SandboxPool, run_program


@pytest.fixture(scope="module")
def q1():
    return q1_tasks()


def test_q1_has_1033_tasks(q1):
    assert len(q1) == Q1_TASK_COUNT == 1033
    assert len({t.task_id for t in q1}) == 1033
    assert len({t.problem_id for t in q1}) == 164


def test_q1_tasks_rebuild_the_solution(q1):
    problems = load_problems()
    for t in q1:
        p = problems[t.problem_id]
        assert t.prefix.endswith("\n") and t.target.strip() and "\n" not in t.target
        assert t.prefix + t.target + "\n" + t.suffix == p["prompt"] + p["canonical_solution"]
        assert t.program(t.target).endswith(f"check({p['entry_point']})\n")


def test_mid_word_moves_the_cursor_inside_the_first_word(q1):
    mid = mid_word(q1)
    assert 950 <= len(mid) < len(q1) and mid == mid_word(q1)  # seeded
    by_id = {t.task_id: t for t in q1}
    for t in mid:
        line = by_id[t.task_id.rsplit(":", 1)[0]]
        typed = t.prefix[len(line.prefix):]
        assert t.prefix + t.target == line.prefix + line.target  # the same program, the cursor moved
        assert "\n" not in typed and typed.strip()  # part of the line, past its indentation
        assert (typed[-1].isalnum() or typed[-1] == "_") and (t.target[0].isalnum() or t.target[0] == "_")


def test_after_indent_puts_the_cursor_after_the_indentation(q1):
    for t, a in zip(q1, after_indent(q1)):
        assert a.prefix + a.target == t.prefix + t.target and a.target == t.target.lstrip()
        assert a.prefix[len(t.prefix):] == " " * indent_width(t.target) and not a.target[0].isspace()


def test_ground_truth_passes_and_wrong_lines_fail(q1):
    sample = [q1[i] for i in random.Random(0).sample(range(len(q1)), 24)]
    by_id = {t.task_id: t for t in q1}
    last = by_id["HumanEval/0:L8"]  # "    return False"
    assert last.target == "    return False"
    with SandboxPool(SandboxConfig(workers=4)) as pool:
        good = pool.map([t.program(t.target) for t in sample])
        bad = pool.map([last.program("    return True"), last.program("pass"), last.program("")])
    assert [r.status for r in good] == ["passed"] * len(sample)
    assert [r.passed for r in bad] == [False, False, False]
    assert "AssertionError" in bad[0].output


def test_sandbox_kills_an_infinite_loop():
    t0 = time.perf_counter()
    r = run_program("import time\nwhile True:\n    pass\n", SandboxConfig(timeout_s=1.0))
    assert r.status == "timeout" and not r.passed
    assert time.perf_counter() - t0 < 4


def test_sandbox_limits_and_guards(tmp_path):
    victim = tmp_path / "keep.txt"
    victim.write_text("x")
    r = run_program(f"import os\nos.remove({str(victim)!r})\n")
    assert not r.passed and victim.exists()
    r = run_program("x = bytearray(4 * 1024 ** 3)\n", SandboxConfig(memory_mb=512))
    assert not r.passed and "MemoryError" in r.output
    r = run_program("import os, sys\nprint(os.getcwd(), sys.flags.isolated)\n")
    assert r.passed and "dllm-sandbox-" in r.output and r.output.strip().endswith("1")


def test_q2_subset_is_fixed_and_valid():
    a, b = q2_tasks(), q2_tasks()
    assert len(a) == 200 and [t.task_id for t in a] == [t.task_id for t in b]
    assert [t.task_id for t in q2_tasks(seed=1)] != [t.task_id for t in a]
    for t in a:
        lines = t.target.split("\n")
        assert 2 <= len(lines) <= 6 and lines[0].strip()
        assert all(indent_width(s) >= indent_width(lines[0]) for s in lines if s.strip())
    with SandboxPool(SandboxConfig(workers=4)) as pool:
        assert all(r.passed for r in pool.map([t.program(t.target) for t in a[::25]]))


def test_subsample_is_seeded_and_ordered(q1):
    s = subsample(q1, 50)
    assert len(s) == 50 and s == subsample(q1, 50)
    idx = [q1.index(t) for t in s]
    assert idx == sorted(idx) and idx[-1] > 500  # spread over the problems, not the first 50
    assert subsample(q1, None) == q1
