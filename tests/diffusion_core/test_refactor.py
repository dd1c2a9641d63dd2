"""Refactor: repair every block of a file (one result, edits labelled per function), propagate an
edit (the edited region is trusted and never changed; the rest follows), cancellation."""

from __future__ import annotations

import pytest

from dllm_ls.diffusion_core.refactor import (
    RefactorRequest, changed_region, python_blocks, refactor, run_refactor)
from dllm_ls.diffusion_core.code_spans import apply_edits
from dllm_ls.diffusion_core.repair import RepairConfig, Repairer
from dllm_ls.diffusion_core.sampler import CompletionCancelled

from .scripted import FileJudge


def _repairer(tokenizer, targets, **kw):
    return Repairer(FileJudge(tokenizer, targets, **kw), tokenizer, RepairConfig())


def _propagator(tokenizer, right: str, before: str):
    """A judge that finds `right` right once the edit is in its context, `before` before it."""
    return Repairer(FileJudge.for_file(tokenizer, right, before), tokenizer, RepairConfig())


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
    res = refactor(_propagator(tokenizer, want, old), new, since=old)
    assert res.trusted == changed_region(old, new)
    assert apply_edits(new, res.edits) == want, res
    # a function renamed: the call site in the module's statements follows
    old2 = "def add(a, b):\n    return a + b\n\n\nprint(add(1, 2))\n"
    new2 = old2.replace("def add", "def total")
    res = refactor(_propagator(tokenizer, old2.replace("add", "total"), old2), new2, since=old2)
    assert apply_edits(new2, res.edits) == old2.replace("add", "total")
    assert {e.label for e in res.edits} == {"statements (lines 5-5)"}


def test_a_sure_judge_does_not_grow_the_text_by_repeating_a_token(tokenizer):
    """"area" -> "size" is two tokens of this tokenizer each ("a|rea", "s|ize"); the judge is sure of
    "ize" wherever it sits, so inserting it again also passes the margin (the length credit). The
    shorter candidate must win: "print(size(2, 3))", not "print(sizeize(2, 3))"."""
    old = "def area(w, h):\n    return w * h\n\n\ndef room():\n    return area(3, 4)\n\n\nprint(area(2, 3))\n"
    right = old.replace("area", "size")
    new = old.replace("def area", "def size")
    res = refactor(_propagator(tokenizer, right, old), new, since=old)
    assert apply_edits(new, res.edits) == right, res


def test_propagate_changes_only_what_the_edit_made_wrong(tokenizer):
    """A token the model doubted before the edit as well (here a bug in another function) is not
    the edit's follow-on: Propagate leaves it (a model call per block and world, no search);
    "Repair this file" fixes it."""
    old = "def area(w, h):\n    return w * h\n\n\ndef double(x):\n    return 3 * x\n\n\nprint(area(2, 3))\n"
    new = old.replace("def area(w, h)", "def area(width, h)")
    right = new.replace("return w * h", "return width * h").replace("3 * x", "2 * x")
    model = FileJudge.for_file(tokenizer, right, old.replace("3 * x", "2 * x"))
    res = refactor(Repairer(model, tokenizer), new, since=old)
    assert res.text == new.replace("return w * h", "return width * h")  # the bug in double() stays
    assert [b["edits"] for b in res.blocks] == [1, 0, 0]
    assert refactor(Repairer(model, tokenizer), res.text).text == right  # repairing the file fixes it


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
    r = _propagator(tokenizer, "def area(width, h):\n    return width * h\n", old)
    assert cli_refactor.run(args, repairer=r) == 0
    out = capsys.readouterr().out
    assert "-    return w * h\n+    return width * h\n" in out and out.startswith("--- a/")
    assert (tmp_path / "new.py").read_text() == new  # never written
    args = p.parse_args([str(tmp_path / "new.py"), "--json"])
    cli_refactor.run(args, repairer=r)
    assert json.loads(capsys.readouterr().out)["text"] == "def area(width, h):\n    return width * h\n"


def test_changed_region_is_linear_and_matches_the_first_and_last_changed_character():
    import random

    r = random.Random(0)
    for _ in range(2000):
        old = "".join(r.choice("ab\n") for _ in range(r.randint(0, 10)))
        new = "".join(r.choice("ab\n") for _ in range(r.randint(0, 10)))
        got = changed_region(old, new)
        if old == new:
            assert got is None
            continue
        a, b = got
        # the rest is shared: new[:a] and new[b:] are a prefix and a suffix of old, not overlapping
        assert old.startswith(new[:a]) and old.endswith(new[b:]) and a + len(new) - b <= len(old)
        assert (a == len(old) or a == len(new) or old[a] != new[a])  # the prefix is the longest one


def test_progress_reaches_the_core_method_and_the_daemon(tokenizer):
    from dllm_ls.diffusion_core import rpc
    from dllm_ls.diffusion_core.sampler import Sampler

    from .test_daemon import Client, start_daemon, stop_daemon

    targets = ["import os", ADD, SUB, "    x = 1", "    @staticmethod\n    def twice(v):\n        return v * 2",
               "print(add(1, 2))"]
    seen = []
    out = run_refactor(_repairer(tokenizer, targets), RefactorRequest.parse({"uri": "u", "code": FILE}, 1),
                       progress=lambda done, total, label: seen.append((done, total, label)))
    assert out["edits"] == [] and [s[:2] for s in seen] == [(k, 6) for k in range(6)]
    assert seen[1][2] == "function add (line 4)"
    # over the socket: a `progress` notification before each block, then the answer
    d = start_daemon(Sampler(FileJudge(tokenizer, targets), tokenizer))
    try:
        c = Client(d.socket_path)
        buggy = FILE.replace("a - b", "a + b")
        c.send(rpc.request(5, "refactor", {"id": 5, "uri": "file:///a.py", "code": buggy}))
        notes, answer = [], None
        while answer is None:
            msg = c.recv()
            if msg[0] == 2:
                notes.append(msg[2][0])
            else:
                answer = msg
        assert [n["done"] for n in notes] == list(range(6)) and all(n["id"] == 5 and n["total"] == 6 for n in notes)
        assert answer[2] is None and apply_edits(buggy, [_edit(e) for e in answer[3]["edits"]]) == FILE
        c.close()
    finally:
        stop_daemon(d)


def _edit(e: dict):
    from dllm_ls.diffusion_core.refactor import RefactorEdit

    return RefactorEdit(**e)


def test_the_servers_core_clients_refactor_with_progress_and_cancel(tokenizer):
    """lsp_server's two CoreClients: InProcessCore and SocketCore (over a running core daemon)
    answer `refactor` with the same edits, report progress per block on the event loop, and a
    cancelled awaiting task stops the refactor in the core."""
    import asyncio

    from dllm_ls.diffusion_core.sampler import Sampler
    from dllm_ls.lsp_server.core_client import CompletionCancelled, RefactorQuery, SocketCore
    from dllm_ls.lsp_server.inprocess import InProcessCore

    from .test_daemon import SlowModel, start_daemon, stop_daemon

    targets = ["import os", ADD, SUB, "    x = 1", "    @staticmethod\n    def twice(v):\n        return v * 2",
               "print(add(1, 2))"]
    buggy = FILE.replace("a - b", "a + b").replace("v * 2", "v * 3")
    d = start_daemon(Sampler(SlowModel(FileJudge(tokenizer, targets), 5), tokenizer))

    async def main(core):
        seen = []
        res = await core.refactor(RefactorQuery(id=1, uri="u", code=buggy),
                                  lambda done, total, label: seen.append((done, total, label)))
        assert apply_edits(buggy, [_edit(e) for e in res["edits"]]) == FILE
        assert [s[:2] for s in seen] == [(k, 6) for k in range(6)]
        task = asyncio.ensure_future(core.refactor(RefactorQuery(id=2, uri="u", code=buggy)))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises((asyncio.CancelledError, CompletionCancelled)):
            await task
        await core.close()

    try:
        asyncio.run(main(SocketCore(d.socket_path, spawn=False)))
        assert d.service.health()["cancelled_running"] == 1
        asyncio.run(main(InProcessCore(sampler=Sampler(SlowModel(FileJudge(tokenizer, targets), 5), tokenizer))))
    finally:
        stop_daemon(d)


def test_repair_this_file_leaves_docstrings(tokenizer):
    """The judge dislikes a word of the docstring and the code: only the code is repaired."""
    text = 'def f(x):\n    """Twice the valu."""\n    return 3 * x\n'
    right = 'def f(x):\n    """Twice the value."""\n    return 2 * x\n'
    blocks = python_blocks(text)
    assert text[blocks[0].doc[0]:blocks[0].doc[1]] == '    """Twice the valu."""\n'
    res = refactor(_repairer(tokenizer, [right]), text)
    assert res.text == text.replace("3 * x", "2 * x")
