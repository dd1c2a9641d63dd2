"""The benchmark code: Q1 tasks, the parse check, results.json merging, and a tiny end-to-end run."""

import json
import subprocess
import sys

import pytest

from dllm_ls.lsp_server.bench import parses, q1_tasks, write_results

from .conftest import server_env


def test_q1_tasks_are_every_non_blank_solution_line():
    tasks = q1_tasks(0, 0)
    assert len(tasks) == 1033
    t = tasks[0]
    assert t["prefix"].endswith("\n") and t["target"].strip()
    assert parses(t["prefix"] + t["target"] + "\n" + t["suffix"])
    assert [x["id"] for x in q1_tasks(5, 1)] == [x["id"] for x in q1_tasks(5, 1)]  # seeded sample


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
@pytest.mark.parametrize("bench", ["s2", "q1parse"])
def test_bench_runs_end_to_end(lsp_checkpoint, tmp_path, bench):
    out = tmp_path / "r.json"
    r = subprocess.run([sys.executable, "-m", "dllm_ls.cli", "bench", bench, "--checkpoint", str(lsp_checkpoint),
                        "--limit", "3", "--max-tokens", "8", "--threads", "1", "--json", str(out)],
                       env=server_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    name = "S2.cpu_warm_p50_ms" if bench == "s2" else "Q1.lsp_insertion_parse_rate"
    assert data[name]["value"] >= 0 and "--limit 3" in data[name]["command"]


def test_bench_without_a_model_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "dllm_ls.cli", "bench", "s2", "--checkpoint", str(tmp_path / "none"),
                        "--limit", "1"], env=server_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "no model" in r.stderr and "not found" in r.stderr and "Traceback" not in r.stderr
