"""`dllm-ls bench refactor` end to end on CPU with the tiny random fixture model (a smoke test: the
figures of a random model mean nothing), and its harness check (--oracle: every site updated,
no line wrongly changed)."""

import json
import subprocess
import sys

import pytest

from .conftest import server_env


def _bench(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "dllm_ls.cli", "bench", "refactor", *map(str, args)],
                          env=server_env(), capture_output=True, text=True, timeout=timeout)


def test_oracle_harness_check(tmp_path):
    out = tmp_path / "r.json"
    r = _bench("--oracle", "--limit", "20", "--json", out)
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert data["RF.sites_updated"]["value"] == 1.0 and data["RF.wrong_line_share"]["value"] == 0.0
    assert data["RF.sites_updated_add_param"]["value"] == 1.0 and "--oracle" in data["RF.sites_updated"]["command"]


@pytest.mark.slow
def test_bench_refactor_runs_end_to_end_on_cpu(lsp_checkpoint, tmp_path):
    out, cases = tmp_path / "r.json", tmp_path / "cases.jsonl"
    r = _bench("--checkpoint", lsp_checkpoint, "--limit", "1", "--threads", "1", "--timing-lines", "40",
               "--repeats", "1", "--device", "cpu", "--json", out, "--out", cases)
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    for name in ("RF.sites_updated", "RF.wrong_line_share", "RF.sites_updated_rename_param",
                 "RF.cpu_repair_file_40_lines_s", "RF.cpu_propagate_40_lines_s"):
        assert name in data and data[name]["value"] >= 0, (name, data)
    assert "--limit 1" in data["RF.sites_updated"]["command"]
    rows = [json.loads(line) for line in cases.read_text().splitlines()]
    assert sorted(row["kind"] for row in rows) == ["add_param", "rename_param", "return_type"]
    assert all(row["sites"] >= 1 and 0 <= row["sites_ok"] <= row["sites"] for row in rows)
    assert "timed file: HumanEval programs" in r.stdout


def test_bad_arguments_are_one_line(tmp_path):
    r = _bench("--oracle", "--kinds", "rename")
    assert r.returncode == 2 and "unknown refactor kind 'rename'" in r.stderr and "Traceback" not in r.stderr
    r = _bench("--checkpoint", tmp_path / "none", "--limit", "1")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
