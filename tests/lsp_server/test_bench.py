"""The benchmark code: Q1 tasks, the parse check, results.json merging, and a tiny end-to-end run."""

import json
import subprocess
import sys

import pytest

from dllm_ls.lsp_server.bench import (cursor_lines, file_tasks, held_out_files, next_char, parses, q1_tasks, s2_document,
                                     write_results)

from .conftest import server_env


def test_q1_tasks_are_every_non_blank_solution_line():
    tasks = q1_tasks(0, 0)
    assert len(tasks) == 1033
    t = tasks[0]
    assert t["prefix"].endswith("\n") and t["target"].strip()
    assert parses(t["prefix"] + t["target"] + "\n" + t["suffix"])
    assert [x["id"] for x in q1_tasks(5, 1)] == [x["id"] for x in q1_tasks(5, 1)]  # seeded sample
    assert all(next_char(x, "q1") == " " for x in q1_tasks(20, 0))  # canonical lines are indented


def test_file_tasks_are_held_out_files_cut_inside_a_function():
    files = held_out_files()
    assert len(files) > 30 and not any("test" in f.parts[-2:] for f in files)
    tasks = file_tasks(40, 0)
    assert len(tasks) == 40 and [t["id"] for t in tasks] == [t["id"] for t in file_tasks(40, 0)]  # seeded
    assert len({t["id"].split(":")[0] for t in tasks}) >= 30  # spread over the files
    for t in tasks:
        text, line, col = s2_document(t, "files")
        cur = text.split("\n")[line]
        assert cur[:col].strip() == "" and cur[col:] == "" and col > 0  # indented, the rest of the line removed
        assert t["target"].strip() and parses(t["prefix"] + t["target"] + t["suffix"])
        assert len(t["prefix"]) > 500 and len(t["suffix"]) > 100  # context on both sides
        assert next_char(t, "files") == t["target"][0] != " "  # the statement's first character
    # the cursor lines: statement starts inside functions, in the middle half, no docstrings
    src = "\n".join(["x = 1"] * 4 + ["def f(a):", '    """doc."""', "    y = a", "    return y"] + ["z = 2"] * 4)
    assert cursor_lines(src) == [6, 7]
    assert cursor_lines("def f(a):\n    return a\n" + "x = 1\n" * 10) == []  # outside the middle half


def test_parses():
    assert parses("def f(x):\n    return x\n") and not parses("def f(x):\n    return (x\n")


def test_write_results_merges(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"Q1.pass_at_1": {"value": 0.1}}))
    write_results(str(path), {"S2.cpu_warm_p50_ms": (12.5, "ms")}, "test machine", "dllm-ls bench s2")
    data = json.loads(path.read_text())
    assert data["Q1.pass_at_1"] == {"value": 0.1}
    assert data["S2.cpu_warm_p50_ms"]["value"] == 12.5 and data["S2.cpu_warm_p50_ms"]["command"] == "dllm-ls bench s2"


@pytest.mark.slow
@pytest.mark.parametrize("bench", ["s2", "s2 --docs q1 --mode line", "q1parse"])
def test_bench_runs_end_to_end(lsp_checkpoint, tmp_path, bench):
    out = tmp_path / "r.json"
    r = subprocess.run([sys.executable, "-m", "dllm_ls.cli", "bench", *bench.split(), "--checkpoint", str(lsp_checkpoint),
                        "--limit", "3", "--max-tokens", "8", "--threads", "1", "--json", str(out)],
                       env=server_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    name = {"s2": "S2.cpu_warm_p50_ms", "s2 --docs q1 --mode line": "S2.cpu_warm_p50_ms_q1docs_line"}.get(
        bench, "Q1.lsp_insertion_parse_rate")
    assert data[name]["value"] >= 0 and "--limit 3" in data[name]["command"]
    if bench.startswith("s2"):  # the keystroke reused the prompt's KV (the bench checks it) and says how much
        assert "keystroke_reused_fraction_p50" in r.stdout and "keystroke_over_cold_median_per_doc" in r.stdout
        # the client's time split: the core's, the handler's own, the transport's
        handler = next(line for line in r.stdout.splitlines() if "handler_overhead_p50_ms" in line)
        assert "'warm': " in handler and "transport_p50_ms" in r.stdout


def test_bench_without_a_model_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "dllm_ls.cli", "bench", "s2", "--checkpoint", str(tmp_path / "none"),
                        "--limit", "1"], env=server_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "no model" in r.stderr and "not found" in r.stderr and "Traceback" not in r.stderr
