"""The evaluation loop, validation loss, results.json and `dllm-ls eval`."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from dllm_ls.cli import main
from dllm_ls.diffusion_core.model import ModelConfig, Transformer
from dllm_ls.trainer.eval import (EvalError, EvalReport, block_diffusion_mask, oracle_complete, run_infill,
                                  simple_validation_loss, update_results_json)
from dllm_ls.trainer.humaneval import q1_tasks, subsample
from dllm_ls.trainer.sandbox import SandboxConfig


def _report():
    return EvalReport(benchmark="Q1", checkpoint="-", model="oracle", device="cpu", settings={})


def test_run_infill_scores_the_completions():
    tasks = subsample(q1_tasks(), 12)
    r = run_infill(tasks, oracle_complete, _report(), sandbox=SandboxConfig(workers=4), progress=False)
    assert (r.n_tasks, r.n_passed, r.pass_at_1, r.exact_match) == (12, 12, 1.0, 1.0)

    def wrong(task):
        return task.target.rstrip() + " + 1/0" if "return" in task.target else "", "eol", 3, 6, 1.5

    r = run_infill(tasks, wrong, _report(), sandbox=SandboxConfig(workers=4), progress=False)
    assert r.pass_at_1 < 1.0 and r.exact_match == 0.0
    assert r.mean_steps == 3 and r.tokens_per_step == 2.0 and r.mean_ms == 1.5
    failed = [t for t in r.tasks if not t.passed]
    assert failed and all(t.error for t in failed)
    assert json.loads(r.to_json())["tasks"][0]["task_id"] == tasks[0].task_id


def test_update_results_json_merges(tmp_path):
    path = tmp_path / "docs" / "results.json"
    update_results_json(path, "Q1.pass_at_1", 0.25, "fraction", "H100", "dllm-ls eval q1", date="2025-01-01")
    update_results_json(path, "Q1.ar_pass_at_1", 0.2, "fraction", "H100", "dllm-ls eval q1 --checkpoint ar")
    data = update_results_json(path, "Q1.pass_at_1", 0.3, "fraction", "H100", "dllm-ls eval q1")
    assert json.loads(path.read_text()) == data
    assert set(data) == {"Q1.pass_at_1", "Q1.ar_pass_at_1"}
    assert data["Q1.pass_at_1"]["value"] == 0.3
    assert set(data["Q1.ar_pass_at_1"]) == {"value", "unit", "machine", "date", "command"}
    path.write_text("{broken")
    with pytest.raises(EvalError, match="not valid JSON"):
        update_results_json(path, "x", 1, "u", "m", "c")


def test_block_diffusion_mask():
    m = block_diffusion_mask(4, 2)[0, 0]  # [noisy 0..3 ; clean 0..3], blocks {0,1} {2,3}
    assert m.shape == (8, 8)
    assert m[0, :2].all() and not m[0, 2:4].any() and not m[0, 4:].any()  # block 0: itself only
    assert m[2, 2:4].all() and m[2, 4:6].all() and not m[2, 6:].any()  # block 1: + clean block 0
    assert not m[4:, :4].any() and torch.equal(m[4:, 4:], torch.ones(4, 4, dtype=torch.bool).tril())


@pytest.mark.parametrize("causal", [False, True])
def test_simple_validation_loss_of_a_random_model(tokenizer, causal):
    torch.manual_seed(0)
    model = Transformer(ModelConfig.from_name("test", causal=causal)).eval()
    texts = ["def f(x):\n    return x * 2\n" * 40] * 4
    out = simple_validation_loss(model, tokenizer, texts, seq_len=64, max_tokens=1024)
    key = "ce_next_token" if causal else "elbo"
    assert out["kind"] == ("ar" if causal else "diffusion")
    assert abs(out[key] - math.log(512)) < 1.0  # an untrained model is near uniform
    assert out == simple_validation_loss(model, tokenizer, texts, seq_len=64, max_tokens=1024)


def test_cli_oracle_and_checkpoint(tmp_path, tiny_checkpoint):
    js = tmp_path / "q1.json"
    assert main(["eval", "q1", "--oracle", "--limit", "6", "--quiet", "--json", str(js)]) == 0
    assert json.loads(js.read_text())["pass_at_1"] == 1.0
    res = tmp_path / "results.json"
    assert main(["eval", "q2", "--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--limit", "2",
                 "--max-tokens", "8", "--quiet", "--json", str(js), "--record", "--results", str(res)]) == 0
    d = json.loads(js.read_text())
    assert d["n_tasks"] == 2 and d["model"] == "diffusion" and len(d["tasks"]) == 2
    assert json.loads(res.read_text())["Q2.pass_at_1"]["unit"] == "fraction"
    assert main(["eval", "q1", "--oracle", "--record", "--limit", "1"]) == 2  # refused, one-line error


def test_eval_cli_imports_no_torch():
    code = "import sys, dllm_ls.trainer.eval_cli; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
