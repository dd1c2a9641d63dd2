"""`dllm-ls bench speed` (S1): the figures' logic, the floor, and a CPU smoke run with tiny models."""

from __future__ import annotations

import json

import pytest
import torch

from dllm_ls.cli import main
from dllm_ls.diffusion_core.checkpoint import save_checkpoint
from dllm_ls.diffusion_core.model import ModelConfig, Transformer
from dllm_ls.trainer.bench_speed import settings_order, speedup
from dllm_ls.trainer.step_floor import step_floor


def _row(bench, kind, tps, p, b=1, t=None, impl="graphed"):
    return {"bench": bench, "kind": kind, "impl": impl, "tokens_per_s": tps, "pass_at_1": p,
            "block_size": b, "threshold": t}


def test_speedup_takes_the_fastest_setting_within_one_point_of_ar():
    rows = [_row("Q2", "ar", 100.0, 0.50),
            _row("Q2", "diffusion", 900.0, 0.45, 64, 0.5),  # fastest, but 5 points worse: not eligible
            _row("Q2", "diffusion", 600.0, 0.495, 32, 0.7),  # within a point
            _row("Q2", "diffusion", 300.0, 0.52, 16, 0.9),
            _row("Q2", "diffusion", 5000.0, 0.9, 32, 0.9, impl="eager"),  # eager rows never count
            _row("Q1", "diffusion", 10_000.0, 0.9, 4, 0.9)]  # another benchmark
    s = speedup(rows, "Q2")
    assert s["speedup"] == pytest.approx(6.0) and (s["block_size"], s["threshold"]) == (32, 0.7)
    assert speedup(rows, "Q1") is None  # no AR row for Q1
    worse = [_row("Q2", "ar", 100.0, 0.5), _row("Q2", "diffusion", 900.0, 0.3, 8, 0.5),
             _row("Q2", "diffusion", 200.0, 0.4, 32, 0.9)]
    s = speedup(worse, "Q2")  # none qualifies: no speedup, and the most accurate setting as `closest`
    assert s["speedup"] is None and s["ar_pass_at_1"] == 0.5
    assert s["closest"]["speedup"] == pytest.approx(2.0) and s["closest"]["threshold"] == 0.9


def test_at_the_pass_floor_edit_similarity_decides():
    """Q2's pass@1 is 0 for both small models: a setting must also be within a point of AR's edit
    similarity, or any junk would qualify."""
    rows = [{**_row("Q2", "ar", 100.0, 0.0), "edit_sim": 0.40},
            {**_row("Q2", "diffusion", 900.0, 0.0, 64, 0.5), "edit_sim": 0.30},  # faster, but worse text
            {**_row("Q2", "diffusion", 500.0, 0.0, 32, 0.7), "edit_sim": 0.395}]
    s = speedup(rows, "Q2")
    assert s["speedup"] == pytest.approx(5.0) and (s["edit_sim"], s["ar_edit_sim"]) == (0.395, 0.40)


def test_syntax_validity_decides_too():
    """Edit similarity rewards broken code that shares characters with the held-out text
    (`closest_ = = =((([elem,222]))`): a setting must also be within a point of AR's syntax
    validity, and the most accurate setting is then the one that parses most often."""
    ar = {**_row("Q2", "ar", 100.0, 0.0), "edit_sim": 0.285, "syntax_valid": 0.445}
    fast = {**_row("Q2", "diffusion", 745.0, 0.0, 32, 0.15), "edit_sim": 0.289, "syntax_valid": 0.08}
    careful = {**_row("Q2", "diffusion", 241.0, 0.0, 32, 0.9), "edit_sim": 0.234, "syntax_valid": 0.34}
    s = speedup([ar, fast, careful], "Q2")
    assert s["speedup"] is None
    assert s["closest"]["threshold"] == 0.9 and s["closest"]["speedup"] == pytest.approx(2.41)
    assert (s["closest"]["syntax_valid"], s["closest"]["ar_syntax_valid"]) == (0.34, 0.445)
    ok = {**fast, "syntax_valid": 0.44}  # within a point on all three: it qualifies
    assert speedup([ar, ok, careful], "Q2")["speedup"] == pytest.approx(7.45)


def test_edit_similarity():
    from dllm_ls.trainer.eval import edit_similarity

    assert edit_similarity("    return x\n", "    return x") == 1.0
    assert edit_similarity("", "") == 1.0 and edit_similarity("abc", "") == 0.0
    assert 0.0 < edit_similarity("    return y", "    return x") < 1.0


def test_default_setting_runs_first():
    order = settings_order([4, 32, 64], [0.5, 0.9])
    assert order[0] == (32, 0.9) and len(order) == 6 and len(set(order)) == 6


def test_floor_of_a_step():
    """Bytes: every weight once plus the context's K/V; FLOPs: the matmuls of the step's tokens."""
    m = Transformer(ModelConfig(vocab_size=1000, n_layer=2, n_head=2, dim=64, max_seq_len=256))
    peaks = {"hbm_bytes_per_s": 1e9, "peak_flops": 1e12}
    f = step_floor(m, tokens_per_step=16, head_rows=8, context=100, peaks=peaks, launch_ms=0.01)
    n_params = sum(p.numel() for p in m.parameters())
    assert f["weight_bytes"] == 4 * n_params
    assert f["kv_bytes"] == 2 * 2 * 64 * 100 * 4
    assert f["memory_ms"] == pytest.approx((f["weight_bytes"] + f["kv_bytes"]) / 1e9 * 1000)
    assert f["floor_ms"] == pytest.approx(max(f["memory_ms"], f["compute_ms"]) + 0.01)
    more = step_floor(m, tokens_per_step=32, head_rows=16, context=100, peaks=peaks, launch_ms=0.01)
    assert more["flops"] > f["flops"] and more["weight_bytes"] == f["weight_bytes"]


@pytest.fixture
def ar_checkpoint(tmp_path, tokenizer):
    torch.manual_seed(1)
    d = tmp_path / "ar"
    save_checkpoint(d, Transformer(ModelConfig.from_name("test", causal=True)).eval(), tokenizer)
    return d


def test_bench_speed_smoke_on_cpu(tmp_path, tiny_checkpoint, ar_checkpoint, capsys):
    """The whole command on a CPU with tiny random models: rows for every setting and both
    benchmarks, pass@1, the floor table, the plot, the report and the results map."""
    n = torch.get_num_threads()
    results = tmp_path / "results.json"
    report = tmp_path / "report.json"
    png = tmp_path / "pareto.png"
    try:
        rc = main(["bench", "speed", "--checkpoint", str(tiny_checkpoint), "--ar-checkpoint", str(ar_checkpoint),
                   "--device", "cpu", "--threads", "1", "--limit", "2", "--block-sizes", "4,8", "--thresholds", "0.5",
                   "--max-tokens-line", "8", "--max-tokens-block", "12", "--eager-rows", "--workers", "2",
                   "--plot", str(png), "--report", str(report), "--json", str(results), "--quiet"])
    finally:
        torch.set_num_threads(n)
    assert rc == 0
    rep = json.loads(report.read_text())
    rows = {(r["bench"], r["kind"], r["impl"], r["block_size"]) for r in rep["results"]}
    for bench in ("Q1", "Q2"):
        assert {(bench, "ar", "graphed", 1), (bench, "diffusion", "graphed", 4), (bench, "diffusion", "graphed", 8),
                (bench, "ar", "eager", 1), (bench, "diffusion", "eager", 32)} <= rows
    for r in rep["results"]:
        assert r["tasks"] == 2 and 0.0 <= r["pass_at_1"] <= 1.0 and r["tokens_per_s"] >= 0
        assert all("passed" in row and row["gc_full"] >= 0 for row in r["rows"])
    graphed = {(r["bench"], r["block_size"], r["kind"]): r for r in rep["results"] if r["impl"] == "graphed"}
    eager = {(r["bench"], r["kind"]): r for r in rep["results"] if r["impl"] == "eager"}
    # the graphed AR decoder writes what Sampler.complete writes
    for bench in ("Q1", "Q2"):
        texts = [x["text"] for x in graphed[(bench, 1, "ar")]["rows"]]
        assert texts == [x["text"] for x in eager[(bench, "ar")]["rows"]]
    assert {(f["kind"], f["block_size"]) for f in rep["floors"]} == {("ar", 1), ("diffusion", 4), ("diffusion", 8)}
    assert all(f["floor_ms"] > 0 and f["measured_step_ms"] > 0 for f in rep["floors"])
    figures = json.loads(results.read_text())
    assert "S1.step_time_over_floor" in figures
    # both ratios are written: the best qualifying setting's, else the most accurate one's, said so
    assert {"S1.speedup_multi_line", "S1.speedup_single_line"} <= set(figures)
    for name, fig in figures.items():
        assert name.startswith("S1.") and set(fig) == {"value", "unit", "machine", "date", "command"}
        assert fig["command"].startswith("dllm-ls bench speed")
    assert png.stat().st_size > 1000
    out = capsys.readouterr().out
    assert "S1.step_time_over_floor" in out
    assert all(0.0 <= r["syntax_valid"] <= 1.0 and all(isinstance(row["syntax_valid"], bool) for row in r["rows"])
               for r in rep["results"])

    # --rescore: the same rows scored again with no model, the same figures
    again = tmp_path / "again.json"
    assert main(["bench", "speed", "--rescore", str(report), "--json", str(again), "--quiet"]) == 0
    assert {k: v["value"] for k, v in json.loads(again.read_text()).items()} == \
        {k: v["value"] for k, v in figures.items()}
    assert "S1.speedup_multi_line" in capsys.readouterr().out
    # a report that is not one: a clear error, no traceback
    bad = tmp_path / "bad.json"
    bad.write_text('{"results": [')
    assert main(["bench", "speed", "--rescore", str(bad)]) == 2
    assert "not a bench speed report" in capsys.readouterr().err


def test_a_causal_checkpoint_as_the_diffusion_model_is_refused(tmp_path, ar_checkpoint, capsys):
    rc = main(["bench", "speed", "--checkpoint", str(ar_checkpoint), "--device", "cpu", "--limit", "1",
               "--plot", "", "--quiet"])
    assert rc == 2 and "--ar-checkpoint" in capsys.readouterr().err
