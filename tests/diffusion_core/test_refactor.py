"""Refactor: repair every block of a file (one result, edits labelled per function), propagate an
edit (the edited region is trusted and never changed; the rest follows), cancellation."""

from __future__ import annotations

import difflib

import pytest

from dllm_ls.diffusion_core.refactor import (
    RefactorRequest, changed_region, python_blocks, refactor, run_refactor)
from dllm_ls.diffusion_core.repair import RepairConfig, Repairer, apply_edits
from dllm_ls.diffusion_core.sampler import CompletionCancelled

from .scripted import JudgeModel


class FileJudge(JudgeModel):
    """A JudgeModel for a whole file: each block is judged against the nearest of `targets`
    (the right text of every block)."""

    def __init__(self, tokenizer, targets: list[str], **kw):
        self.targets = [tokenizer.encode(t.rstrip("\n")) + [tokenizer.eos_id] for t in targets]
        super().__init__(tokenizer, self.targets[0], **kw)

    def step(self, clean, block, cache):
        ids = [t for t in block[0].tolist() if t != self.mask_id]
        self.target = max(self.targets, key=lambda t: difflib.SequenceMatcher(None, ids, t, autojunk=False).ratio())
        return super().step(clean, block, cache)


def _repairer(tokenizer, targets):
    return Repairer(FileJudge(tokenizer, targets), tokenizer, RepairConfig())


ADD = "def add(a, b):\n    total = a + b\n    return total\n"
SUB = "def sub(a, b):\n    return a - b\n"
CLS = "class C:\n    x = 1\n\n    @staticmethod\n    def twice(v):\n        return v * 2\n"
FILE = "import os\n\n\n" + ADD + "\n\n" + SUB + "\n\n" + CLS + "\n\nprint(add(1, 2))\n"


def test_blocks_cover_functions_methods_and_statements():
    labels = [b.label for b in python_blocks(FILE)]
    assert labels == ["statements (lines 1-1)", "function add (line 4)", "function sub (line 9)",
                      "class C statements (lines 14-14)", "method C.twice (line 16)", "statements (lines 21-21)"]
    blocks = python_blocks(FILE)
    assert FILE[blocks[1].start:blocks[1].end] == ADD
    assert FILE[blocks[4].start:blocks[4].end] == "    @staticmethod\n    def twice(v):\n        return v * 2\n"
    broken = FILE.replace("a - b", "a b")  # does not parse: functions by indentation
    assert [b.label for b in python_blocks(broken)][:2] == ["function add (line 4)", "function sub (line 9)"]


def test_changed_region():
    assert changed_region("abc", "abc") is None
    assert changed_region("def f(w):", "def f(width):") == (7, 11)
    assert changed_region("x = 12\n", "x = 2\n") == (4, 4)


def test_repair_this_file_fixes_every_function_in_one_result(tokenizer):
    buggy = FILE.replace("a + b", "a * b").replace("a - b", "a + b").replace("v * 2", "v * 3")
    targets = ["import os", ADD, SUB, "    x = 1", "    @staticmethod\n    def twice(v):\n        return v * 2",
               "print(add(1, 2))"]
    res = refactor(_repairer(tokenizer, targets), buggy)
    assert apply_edits(buggy, res.edits) == FILE == res.text
    assert {e.label for e in res.edits} == {"function add (line 4)", "function sub (line 9)", "method C.twice (line 16)"}
    assert len(res.blocks) == 6 and all(not b["skipped"] for b in res.blocks)
    for e in res.edits:  # coordinates of the file sent
        assert buggy.split("\n")[e.start_line][e.start_character:] == buggy[e.start:].split("\n")[0]


def test_propagate_a_rename_to_uses_and_call_sites(tokenizer):
    old = "def area(w, h):\n    return w * h\n\n\nprint(area(2, 3))\n"
    new = old.replace("def area(w, h)", "def area(width, h)")
    want = "def area(width, h):\n    return width * h\n\n\nprint(area(2, 3))\n"
    res = refactor(_repairer(tokenizer, ["def area(width, h):\n    return width * h", "print(area(2, 3))"]),
                   new, since=old)
    assert res.trusted == changed_region(old, new)
    assert apply_edits(new, res.edits) == want, res
    # a function renamed: the call site in the module's statements follows
    old2 = "def add(a, b):\n    return a + b\n\n\nprint(add(1, 2))\n"
    new2 = old2.replace("def add", "def total")
    res = refactor(_repairer(tokenizer, ["def total(a, b):\n    return a + b", "print(total(1, 2))"]), new2, since=old2)
    assert apply_edits(new2, res.edits) == old2.replace("add", "total")
    assert {e.label for e in res.edits} == {"statements (lines 5-5)"}


def test_the_edited_region_is_never_changed(tokenizer):
    # the model prefers the old name (it "wants" to undo the edit): the edit stays, nothing is written into it
    old = "def area(w, h):\n    return w * h\n"
    new = old.replace("def area(w, h)", "def area(width, h)")
    res = refactor(_repairer(tokenizer, [old]), new, since=old)
    a, b = res.trusted
    assert res.text[a:b] == new[a:b] and "width" in res.text
    assert all(not (e.start < b and a < e.end) for e in res.edits)
    # without `since` the same model would undo it
    assert refactor(_repairer(tokenizer, [old]), new).text == old


def test_cancelled_between_functions(tokenizer):
    calls = []
    r = _repairer(tokenizer, [ADD])
    with pytest.raises(CompletionCancelled):
        refactor(r, FILE, should_stop=lambda: len(calls) > 0, progress=lambda n, total, label: calls.append(label))
    assert calls == ["statements (lines 1-1)"]


def test_run_refactor_params(tokenizer):
    req = RefactorRequest.parse({"uri": "file:///a.py", "code": ADD, "since": ADD}, 3)
    out = run_refactor(_repairer(tokenizer, [ADD]), req)
    assert out["id"] == 3 and out["edits"] == [] and out["text"] == ADD and out["trusted"] is None
    with pytest.raises(ValueError):
        RefactorRequest.parse({"uri": "u", "code": "x", "since": 3}, 1)


def test_cli_prints_a_unified_diff(tokenizer, tmp_path, capsys):
    import argparse
    import json

    from dllm_ls.diffusion_core import cli_refactor

    old = "def area(w, h):\n    return w * h\n"
    new = old.replace("def area(w, h)", "def area(width, h)")
    (tmp_path / "old.py").write_text(old)
    (tmp_path / "new.py").write_text(new)
    p = argparse.ArgumentParser()
    cli_refactor.add_arguments(p)
    args = p.parse_args([str(tmp_path / "new.py"), "--since", str(tmp_path / "old.py")])
    r = _repairer(tokenizer, ["def area(width, h):\n    return width * h"])
    assert cli_refactor.run(args, repairer=r) == 0
    out = capsys.readouterr().out
    assert "-    return w * h\n+    return width * h\n" in out and out.startswith("--- a/")
    assert (tmp_path / "new.py").read_text() == new  # never written
    args = p.parse_args([str(tmp_path / "new.py"), "--json"])
    cli_refactor.run(args, repairer=r)
    assert json.loads(capsys.readouterr().out)["text"] == "def area(width, h):\n    return width * h\n"
