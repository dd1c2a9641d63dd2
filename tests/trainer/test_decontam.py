"""Decontamination: HumanEval prompts and solutions are found in their usual disguises; other code is not."""

from __future__ import annotations

import json
import sysconfig
import textwrap
from pathlib import Path

import pytest

from dllm_ls.trainer.decontam import Decontaminator, normalise_line, problem_fingerprints
from dllm_ls.trainer.humaneval import load_problems


@pytest.fixture(scope="module")
def decon():
    return Decontaminator()


@pytest.fixture(scope="module")
def problems():
    return load_problems()


def test_normalise_line():
    assert normalise_line('    """ Check  if\tin given list') == "Check if in given list"
    assert normalise_line("   # a comment") == ""
    assert normalise_line("x = 1  ") == "x = 1"


def test_every_problem_has_a_prompt_fingerprint(problems):
    for tid, p in problems.items():
        kinds = {fp.kind for fp in problem_fingerprints(tid, p)}
        assert "prompt" in kinds, tid


def test_prompt_plus_solution_is_found(decon, problems):
    for tid in ("HumanEval/0", "HumanEval/23", "HumanEval/100", "HumanEval/163"):
        p = problems[tid]
        text = "import os\n\n" + p["prompt"] + p["canonical_solution"] + "\n\nprint('hi')\n"
        fp = decon.match(text)
        assert fp is not None and fp.problem_id == tid


def test_solution_alone_reindented_in_a_class(decon, problems):
    p = problems["HumanEval/0"]
    body = textwrap.indent(p["canonical_solution"], "    ")
    text = ("class Helper:\n    def close(self, numbers, threshold):\n        # checks pairs\n"
            + body + "\n")
    fp = decon.match(text)
    assert fp is not None and fp.problem_id == "HumanEval/0" and "solution" in fp.kind


def test_docstring_under_another_name(decon, problems):
    p = problems["HumanEval/10"]
    doc_start = p["prompt"].index("def make_palindrome")
    prompt = p["prompt"][doc_start:].replace("def make_palindrome(string: str)", "def shortest_pal(s)")
    assert decon.match("x = 1\n" + prompt + "    pass\n").problem_id == "HumanEval/10"


def test_escaped_in_a_data_string(decon, problems):
    p = problems["HumanEval/2"]
    text = "DATA = " + json.dumps({"prompt": p["prompt"], "solution": p["canonical_solution"]}) + "\n"
    assert "\n    " not in text.split("DATA = ", 1)[1]  # really one escaped line
    fp = decon.match(text)
    assert fp is not None and fp.problem_id == "HumanEval/2"


def test_short_solution_only_with_its_signature(decon, problems):
    p = problems["HumanEval/23"]  # return len(string)
    assert decon.match("def size(string):\n    return len(string)\n") is None
    assert decon.match("def strlen(string: str) -> int:\n    return len(string)\n").problem_id == "HumanEval/23"


def test_unrelated_code_is_kept(decon):
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    names = ["textwrap.py", "heapq.py", "bisect.py", "functools.py", "statistics.py", "fractions.py",
             "string.py", "difflib.py", "json/encoder.py", "collections/__init__.py", "random.py"]
    for name in names:
        assert decon.match((stdlib / name).read_text(encoding="utf-8")) is None, name
    generic = "def f(numbers):\n    result = []\n    for x in numbers:\n        result.append(x)\n    return result\n"
    assert decon.match(generic) is None
