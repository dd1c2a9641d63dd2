"""The refactor benchmark's cases (trainer/refactor_cases.py): the seeded change, its sites, and
the scoring of a preview (sites updated, lines changed that should not be)."""

from __future__ import annotations

import json
import random

import pytest

from dllm_ls.trainer.refactor_cases import (
    corpus_files, humaneval_files, make_cases, oracle, score, add_param, rename_param, return_type)

FILE = '''from typing import List


def scale(values: List[int], k):
    """Multiply each of values by k."""
    out = []
    for v in values:
        out.append(v * k)  # k times
    return out


def evens(n) -> List[int]:
    if n <= 0:
        return []
    return [x for x in range(n) if x % 2 == 0]


def greet(name):
    return "hello " + name


print(scale([1, 2], 3), greet("bob"))
assert evens(0) == []
assert evens(5) == [0, 2, 4]
assert greet("x") == "hello x"
'''


def _case(maker, text=FILE, seed=0):
    return maker("f", "test", text, random.Random(seed))


def test_rename_param_sites_are_the_uses_and_docstring_lines_are_neutral():
    cases = {c.detail: c for c in (_case(rename_param, seed=s) for s in range(20)) if c and "scale" in c.id + c.edited.split("\n")[c.edit_line]}
    case = cases.get("k -> key") or next(c for c in cases.values() if c.detail.startswith("k "))
    lines = case.edited.split("\n")
    assert lines[case.edit_line] == "def scale(values: List[int], key):"
    assert [s.first for s in case.sites] == [7] and case.sites[0].want == "        out.append(v * key)  # k times"
    assert 4 in case.neutral  # the docstring
    assert case.original == FILE


def test_add_param_sites_are_the_calls_and_return_type_the_literals():
    case = next(c for c in (_case(add_param, seed=s) for s in range(20)) if c and c.detail == "+ offset"
                and "greet" in c.edited.split("\n")[c.edit_line])
    assert case.edited.split("\n")[case.edit_line] == "def greet(name, offset):"
    assert [(s.first, s.call[1]) for s in case.sites] == [(21, 0), (24, 1)]  # print(...greet("bob")), the assert
    rt = next(c for c in (_case(return_type, seed=s) for s in range(20)) if "evens" in c.edited.split("\n")[c.edit_line])
    assert rt.detail == "List[int] -> tuple[int, ...]" and rt.edited.split("\n")[rt.edit_line] == \
        "def evens(n) -> tuple[int, ...]:"
    assert [s.want.strip() for s in rt.sites] == ["return ()", "assert evens(0) == ()", "assert evens(5) == (0, 2, 4)"]
    assert 14 in rt.neutral  # `return [x for ...]`: not a literal, either way is fine
    greet = next(c for c in (_case(return_type, seed=s) for s in range(20)) if "greet" in c.edited.split("\n")[c.edit_line])
    assert greet.detail == "str -> bytes" and [s.want.strip() for s in greet.sites] == [
        'assert greet("x") == b"hello x"']  # `return "hello " + name` is no literal: neutral
    assert greet.original.split("\n")[greet.edit_line] == "def greet(name) -> str:"  # inferred, then changed
    # a function without an annotation gets one from the literals it is compared with
    plain = FILE.replace("def evens(n) -> List[int]:", "def evens(n):")
    rt2 = next(c for c in (_case(return_type, plain, s) for s in range(20)) if "evens" in c.edited.split("\n")[c.edit_line])
    assert rt2.original.split("\n")[rt2.edit_line] == "def evens(n) -> list:" and "-> tuple:" in rt2.edited


def test_scoring():
    for maker in (rename_param, add_param, return_type):
        case = _case(maker)
        right = score(case, oracle(case))
        assert right.sites_ok == right.sites > 0 and right.wrong_lines == 0 and right.changed_lines >= right.sites
        nothing = score(case, case.edited)
        assert nothing.sites_ok == 0 and nothing.changed_lines == 0 and nothing.bad_sites
        # a change somewhere else, an inserted line, or a touch of the user's own line: should not be
        lines = oracle(case).split("\n")
        lines[0] = "from typing import List, Tuple"
        lines.insert(2, "import os")
        lines[case.edit_line + 1] += "  # edited"
        worse = score(case, "\n".join(lines))
        assert worse.sites_ok == right.sites and worse.wrong_lines == 3, worse
    # add_param: an extra argument at a call, anything; two, or a changed argument, is wrong
    case = next(c for c in (_case(add_param, seed=s) for s in range(20)) if c and "greet" in c.edited.split("\n")[c.edit_line])
    fixed = case.edited.replace('greet("bob")', 'greet("bob", 2)').replace('greet("x")', 'greet("x", offset=1)')
    assert score(case, fixed).sites_ok == 2
    assert score(case, case.edited.replace('greet("bob")', 'greet("bob", 1, 2)')).sites_ok == 0
    assert score(case, case.edited.replace('greet("bob")', 'greet("al", 1)')).sites_ok == 0


def test_held_out_files_and_the_oracle_harness(tmp_path):
    files = humaneval_files()
    assert len(files) == 164 and all("def check():" in t for _, _, t in files[:20])
    cases = make_cases(files)
    kinds = {k: sum(c.kind == k for c in cases) for k in ("rename_param", "add_param", "return_type")}
    assert kinds["rename_param"] > 150 and kinds["add_param"] > 150 and kinds["return_type"] > 50, kinds
    assert all(score(c, oracle(c)).sites_ok == len(c.sites) and score(c, oracle(c)).wrong_lines == 0 for c in cases)
    sample = make_cases(files, limit=5, seed=1)
    assert len(sample) == 15 and [c.id for c in sample] == [c.id for c in make_cases(files, limit=5, seed=1)]
    # the corpus validation split: files that parse, within the line bounds
    val = tmp_path / "val.jsonl"
    with open(val, "w") as f:
        f.write(json.dumps({"path": "pkg/a.py", "package": "pkg", "text": FILE}) + "\n")
        f.write(json.dumps({"path": "pkg/b.py", "package": "pkg", "text": "x = (\n" * 20}) + "\n")
    got = corpus_files(val)
    assert [g[0] for g in got] == ["corpus:pkg/a.py"] and len(make_cases(got)) == 3
    with pytest.raises(ValueError):
        make_cases(files, kinds=["rename"])


def test_the_core_propagates_a_case_with_a_judge_that_knows_the_right_file(tokenizer):
    """The benchmark's loop on one case: refactor(since=original) then score; the scripted judge
    takes the right file's blocks for the right ones once the edit is in its context, the original's
    before, so every site follows."""
    from dllm_ls.diffusion_core.refactor import refactor
    from dllm_ls.diffusion_core.repair import Repairer
    from tests.diffusion_core.scripted import FileJudge

    text = "def area(w, h):\n    return w * h\n\n\nprint(area(2, 3))\nprint(area(4, 5))\n"
    case = next(c for c in (_case(rename_param, text, s) for s in range(20)) if c and c.detail == "w -> width")
    res = refactor(Repairer(FileJudge.for_file(tokenizer, oracle(case), case.original), tokenizer), case.edited, since=case.original)
    got = score(case, res.text)
    assert got.sites_ok == got.sites == 1 and got.wrong_lines == 0
    case = _case(add_param, text)
    res = refactor(Repairer(FileJudge.for_file(tokenizer, oracle(case), case.original), tokenizer), case.edited, since=case.original)
    got = score(case, res.text)
    assert got.sites_ok == got.sites == 2 and got.wrong_lines == 0, res.text  # ", None" added at both calls
