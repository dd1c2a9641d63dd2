"""Repair: suspects found from the judge pass, rewritten with insertions/deletions, minimal edits."""

from __future__ import annotations

import pytest

from dllm_ls.diffusion_core.code_spans import RepairError, apply_edits, python_function_span
from dllm_ls.diffusion_core.repair import RepairConfig, Repairer

from .scripted import JudgeModel

GOOD = "def add(a, b):\n    total = a + b\n    return total\n"
FILE = "import os\n\n\n" + GOOD + "\n\nprint(add(1, 2))\n"


def _repairer(tokenizer, good_func: str, **kw):
    target = tokenizer.encode(good_func.rstrip("\n")) + [tokenizer.eos_id]
    return Repairer(JudgeModel(tokenizer, target, **kw), tokenizer, RepairConfig())


def _fix(tokenizer, buggy_file: str, good_func: str = GOOD, **kw):
    span = python_function_span(buggy_file, buggy_file.index("def "))
    r = _repairer(tokenizer, good_func, **kw)
    return r.repair(buggy_file, span), span


def test_correct_function_comes_back_unchanged(tokenizer):
    res, _ = _fix(tokenizer, FILE)
    assert res.edits == [] and res.rounds == 0 and res.text == GOOD


def test_false_alarm_below_margin_is_not_edited(tokenizer):
    # the judge doubts one correct token, but no rewrite scores better: nothing changes
    n = len(tokenizer.encode(GOOD.rstrip("\n")))
    res, _ = _fix(tokenizer, FILE, doubt={n // 2: 0.01})
    assert res.edits == [] and res.rounds == 1 and res.candidates >= 1


@pytest.mark.parametrize("bug", [
    "    total = a - b\n",      # substitution (operator)
    "    total = a + b + 1\n",  # extra tokens
    "    total = a +  b\n",      # an extra space
    "    total = a b\n",        # a missing token (does not parse)
])
def test_a_doubted_token_is_found_and_rewritten(tokenizer, bug):
    buggy = FILE.replace("    total = a + b\n", bug)
    res, span = _fix(tokenizer, buggy)
    fixed = apply_edits(buggy, res.edits)
    assert fixed == FILE, (bug, res)
    assert res.score_after > res.score_before
    assert all(0 <= e.confidence <= 1 for e in res.edits)
    # edits are minimal and inside the function's line
    line = FILE.count("\n", 0, FILE.index("    total"))
    assert all(e.start_line == e.end_line == line for e in res.edits)
    assert sum(len(e.new_text) + e.end - e.start for e in res.edits) <= 8


def test_span_from_a_method_and_bad_inputs(tokenizer):
    code = "class A:\n    def f(self):\n        return 1\n\nx = 1\n"
    a, b = python_function_span(code, code.index("return"))
    assert code[a:b] == "    def f(self):\n        return 1\n"
    with pytest.raises(RepairError, match="not inside a function"):
        python_function_span(code, code.index("x = 1"))
    bad = "x = (\ndef f(:\n  pass\ny = 2\n"
    assert python_function_span(bad, bad.index("pass")) == (bad.index("def"), bad.index("y ="))
    with pytest.raises(RepairError, match="does not parse"):
        python_function_span(bad, 0)
    big = "def f():\n" + "    x = 1\n" * 5000
    r = _repairer(tokenizer, "def f():\n    x = 1\n")
    with pytest.raises(RepairError, match="tokens long"):
        r.repair(big, (0, len(big)))


def test_tiny_random_models_run_the_search(tokenizer, tiny_model):
    from dllm_ls.diffusion_core.model import ModelConfig, Transformer

    buggy = FILE.replace("a + b", "a - b")
    span = python_function_span(buggy, buggy.index("total"))
    for model in (tiny_model, Transformer(ModelConfig.from_name("test", causal=True)).eval()):
        res = Repairer(model, tokenizer, RepairConfig(max_rounds=1, max_spans=2)).repair(buggy, span)
        assert res.rounds <= 1 and res.ms > 0
        assert apply_edits(buggy, res.edits)[: span[0]] == buggy[: span[0]]


def test_should_stop_cancels(tokenizer):
    from dllm_ls.diffusion_core.sampler import CompletionCancelled

    buggy = FILE.replace("a + b", "a - b")
    span = python_function_span(buggy, buggy.index("total"))
    with pytest.raises(CompletionCancelled):
        _repairer(tokenizer, GOOD).repair(buggy, span, should_stop=lambda: True)


def test_docstring_is_context_and_comes_back_as_it_was(tokenizer):
    from dllm_ls.diffusion_core.code_spans import docstring_range

    doc = '    """Add a and b; a doubted word here is prose."""\n'
    good = "def add(a, b):\n" + doc + "    total = a + b\n    return total\n"
    buggy_file = "import os\n\n\n" + good.replace("a + b", "a - b") + "\n\nprint(add(1, 2))\n"
    assert docstring_range(good) == (len("def add(a, b):\n"), len("def add(a, b):\n") + len(doc))
    assert docstring_range("def f(:\n    '''Doc.'''\n    return\n") is not None  # found without ast
    code_part = "    total = a + b\n    return total"  # the block the model judges (after the docstring)
    r = Repairer(JudgeModel(tokenizer, tokenizer.encode(code_part) + [tokenizer.eos_id]), tokenizer, RepairConfig())
    span = python_function_span(buggy_file, buggy_file.index("total"))
    res = r.repair(buggy_file, span)
    assert apply_edits(buggy_file, res.edits) == buggy_file.replace("a - b", "a + b")
    assert res.text == good and res.span == span
    only_doc = "def f():\n    '''Nothing else.'''\n"
    res = r.repair(only_doc, (0, len(only_doc)))
    assert res.edits == [] and res.text == only_doc and not res.judged


def test_trace_records_the_candidates(tokenizer):
    buggy = FILE.replace("a + b", "a - b")
    span = python_function_span(buggy, buggy.index("total"))
    r = _repairer(tokenizer, GOOD)
    r.trace = []
    res = r.repair(buggy, span)
    assert res.edits and r.trace and {"kind", "delta", "dsum", "dlen", "text", "rank"} <= set(r.trace[0])
    assert any(t["text"] == GOOD.rstrip("\n") for t in r.trace)
