"""`dllm-ls bench s3` end to end on a tiny random model: a real core, 1 then 2 simulated editors
typing for 3 s each; the JSON figures exist, latencies are positive and p50 <= p95."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from dllm_ls.lsp_server.bench_s3 import documents, figures, parse_editors

from .conftest import ROOT


def test_documents_are_distinct_real_source_and_seeded():
    docs = documents(3, 0, 40)
    assert docs == documents(3, 0, 40)
    for text, start, end in docs:
        assert end - start == 40 and (start == 0 or text[start - 1] == "\n")
    assert len({(id(t), s) for t, s, _ in docs}) == 3
    assert parse_editors("1,8,32") == [1, 8, 32]


def test_bench_s3_runs_end_to_end(tiny_checkpoint, tmp_path):
    out = tmp_path / "r.json"
    # keep a PYTHONPATH the caller set (dllm_ls may be mapped from elsewhere), the repo first
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    r = subprocess.run([sys.executable, "-m", "dllm_ls.cli", "bench", "s3", "--checkpoint", str(tiny_checkpoint),
                        "--editors", "1,2", "--seconds", "3", "--device", "cpu", "--threads", "1",
                        "--max-tokens", "16", "--json", str(out)],
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    assert "| editors |" in r.stdout
    data = json.loads(out.read_text())
    for n in (1, 2):
        p50, p95 = data[f"S3.p50_ms_{n}_editors"], data[f"S3.p95_ms_{n}_editors"]
        assert 0 < p50["value"] <= p95["value"] and p50["unit"] == "ms"
        assert data[f"S3.requests_per_s_{n}_editors"]["value"] > 0
        assert data[f"S3.tokens_per_s_{n}_editors"]["value"] >= 0
        assert p50["command"].startswith("dllm-ls bench s3") and p50["machine"]
    assert set(figures([{"editors": 4, "p50_ms": 1, "p95_ms": 2, "requests_per_s": 3, "tokens_per_s": 4}])) == {
        "S3.p50_ms_4_editors", "S3.p95_ms_4_editors", "S3.requests_per_s_4_editors", "S3.tokens_per_s_4_editors"}
