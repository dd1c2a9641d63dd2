"""`dllm-ls bench s2nvim`: S2 from a real Neovim 0.11 with the plugin and a real server (the
shipped model, so the ghost texts are real; the model is deterministic, so are they)."""

import json
import subprocess
import sys

import pytest

from .conftest import ROOT, nvim_binary

pytestmark = pytest.mark.slow


def test_s2nvim_times_cold_warm_and_keystroke_in_neovim(tmp_path):
    out = tmp_path / "r.json"
    r = subprocess.run([sys.executable, "-m", "dllm_ls.cli", "bench", "s2nvim", "--nvim", str(nvim_binary("0.11")),
                        "--limit", "2", "--threads", "1", "--max-tokens", "8", "--timeout", "120", "--json", str(out)],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    data = json.loads(out.read_text())
    for name in ("cold", "warm", "keystroke"):
        assert data[f"S2.nvim_cpu_{name}_p50_ms"]["value"] > 0
    assert "Neovim 0.11" in data["S2.nvim_cpu_cold_p50_ms"]["machine"]
    assert "1 timed tasks in Neovim 0.11" in r.stdout


def test_s2nvim_without_neovim_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "dllm_ls.cli", "bench", "s2nvim", "--nvim", str(tmp_path / "none"),
                        "--limit", "2"], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "Traceback" not in r.stderr
