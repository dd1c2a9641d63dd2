"""The training loop: exact resume, checkpoints without pickle, exports the sampler can use, AR, smoke."""

import argparse
import json
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from dllm_ls.cli import main as cli_main
from dllm_ls.diffusion_core.checkpoint import load_checkpoint, load_config
from dllm_ls.diffusion_core.model import ModelConfig
from dllm_ls.diffusion_core.sampler import Sampler, SamplerConfig
from dllm_ls.trainer import cli as train_cli
from dllm_ls.trainer.objectives import validation_loss
from dllm_ls.trainer.train import TrainConfig, lr_at, train


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_data):
    root = tmp_path_factory.mktemp("data")
    return root, tiny_data(root)


def config(root, out, *, ar=False, **kw) -> TrainConfig:
    base = dict(data_dir=str(root / "data"), tokenizer=str(root / "tokenizer.json"), out_dir=str(out),
                model=ModelConfig(vocab_size=512, n_layer=2, n_head=2, dim=32, max_seq_len=64, causal=ar), ar=ar,
                seq_len=64, batch_size=4, max_steps=8, warmup_steps=2, edit_frac=0.25, eval_every=4,
                eval_batches=1, log_every=1, ckpt_every=100, progress=False, threads=1)
    return TrainConfig(**{**base, **kw})


def metrics(out) -> list[dict]:
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def losses(out) -> list[tuple]:
    return [(r["step"], r.get("loss"), r.get("mask_loss"), r.get("edit_loss"), r.get("val_loss"))
            for r in metrics(out)]


def test_resume_repeats_the_uninterrupted_run_exactly(data, tmp_path):
    root, _ = data
    full = train(config(root, tmp_path / "full"))
    assert full["steps"] == 8 and full["edit_start"] == 6
    first = train(config(root, tmp_path / "split", stop_at_step=4))  # a session ends after step 4
    assert first["stopped_early"] and first["steps"] == 4
    second = train(config(root, tmp_path / "split"))  # new objects, resumed from the checkpoint
    assert second["steps"] == 8 and not second["stopped_early"]
    assert losses(tmp_path / "split") == losses(tmp_path / "full")
    stages = [r["stage"] for r in metrics(tmp_path / "full") if "stage" in r]
    assert stages == ["mask"] * 6 + ["edit"] * 2
    a = load_file(str(tmp_path / "full" / "export" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "export" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a finished run is not trained again
    assert train(config(root, tmp_path / "full"))["steps"] == 8


def test_checkpoint_holds_no_pickle_and_restores_the_optimizer(data, tmp_path):
    root, _ = data
    train(config(root, tmp_path, max_steps=3))
    ck = tmp_path / "checkpoints" / (tmp_path / "checkpoints" / "latest").read_text()
    assert sorted(p.name for p in ck.iterdir()) == ["config.json", "model.safetensors", "optim.safetensors",
                                                    "state.json", "tokenizer.json"]
    with safe_open(str(ck / "optim.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert any(k.endswith(".exp_avg_sq") for k in keys) and "rng.torch" in keys
    state = json.loads((ck / "state.json").read_text())
    assert state["run"]["step"] == 3 and state["run"]["done"]


def test_exports_load_and_decode_with_the_sampler(data, tmp_path):
    root, texts = data
    train(config(root, tmp_path))
    for name, stage in (("export", "edit"), ("export_mask", "mask")):
        cfg, extra = load_config(tmp_path / name)
        assert extra["trainer"]["stage"] == stage and not cfg.causal and cfg.max_seq_len == 64
        with safe_open(str(tmp_path / name / "model.safetensors"), "pt") as f:
            assert f.get_tensor("tok_emb.weight").dtype == torch.bfloat16
        model, tok = load_checkpoint(tmp_path / name)
        c = Sampler(model, tok, SamplerConfig(block_size=8, max_tokens=16)).complete("def f(x):\n", "", mode="block")
        assert c.trace.steps >= 1 and c.trace.tokens <= 16
    assert extra["trainer"]["steps"] == 6  # the mask-stage model is the one at the 80% switch
    assert (tmp_path / "loss.png").stat().st_size > 1000
    v = validation_loss(model, tok, texts[:2], seq_len=64, batch_size=2, n_batches=2)
    assert v["kind"] == "nelbo" and 0 < v["loss"] < 20 and v == validation_loss(model, tok, texts[:2], seq_len=64,
                                                                                 batch_size=2, n_batches=2)


def test_an_int8_export_decodes_and_int8_fits_twice_the_layers(data, tmp_path):
    root, _ = data
    train(config(root, tmp_path, max_steps=3, export_dtype="int8"))
    with safe_open(str(tmp_path / "export" / "model.safetensors"), "pt") as f:
        assert f.get_tensor("tok_emb.weight").dtype == torch.int8 and "tok_emb.weight.scale" in f.keys()
    assert load_config(tmp_path / "export")[1]["trainer"]["dtype"] == "int8"
    model, tok = load_checkpoint(tmp_path / "export")
    c = Sampler(model, tok, SamplerConfig(block_size=8, max_tokens=16)).complete("def f(x):\n", "", mode="block")
    assert c.trace.steps >= 1
    p = argparse.ArgumentParser()
    train_cli.add_arguments(p)
    layers = {d: train_cli.model_config(p.parse_args(["--out", "x", "--export-dtype", d]), 8192).n_layer
              for d in ("bf16", "int8")}
    assert layers["bf16"] == 7 and layers["int8"] >= 2 * layers["bf16"]  # 7: the shipped model's depth


def test_ar_flag_trains_a_causal_model_that_decodes_through_extend(data, tmp_path, monkeypatch):
    root, texts = data
    s = train(config(root, tmp_path, ar=True, max_steps=6))
    assert s["kind"] == "ar" and s["export_mask"] is None
    assert {r["stage"] for r in metrics(tmp_path) if "stage" in r} == {"ar"}
    model, tok = load_checkpoint(tmp_path / "export")
    assert model.cfg.causal
    calls = []
    real = model.extend
    monkeypatch.setattr(model, "extend", lambda *a, **k: calls.append(1) or real(*a, **k))
    c = Sampler(model, tok, SamplerConfig(max_tokens=8)).complete("x = ", "", mode="line")
    assert calls and c.trace.steps == c.trace.tokens == len(calls)
    assert validation_loss(model, tok, texts[:1], seq_len=64, batch_size=2, n_batches=1)["kind"] == "ce"


def test_time_budget_sets_the_total_and_keeps_the_stage_split(data, tmp_path):
    root, _ = data
    t0 = time.perf_counter()
    s = train(config(root, tmp_path, max_steps=None, max_minutes=0.1, probe_steps=4, warmup_steps=4,
                     eval_every=10**6, log_every=5))
    wall = time.perf_counter() - t0
    assert s["total_steps"] >= 5 and s["edit_start"] == round(0.75 * s["total_steps"])
    assert s["steps"] == s["total_steps"] or s["stopped_early"]
    assert (tmp_path / "export" / "model.safetensors").is_file()
    assert wall < 0.1 * 60 + 15  # the budget, plus the final checkpoint and export


def test_a_run_slower_than_its_probe_is_replanned_and_keeps_its_edit_stage(data, tmp_path, monkeypatch, capsys):
    """Steps that slow down after the probe (another run sharing the GPU stops compiling) shrink
    the total at the next evaluation, so the run still reaches its edit stage and ends in time."""
    import dllm_ls.trainer.train as train_mod

    root, _ = data
    real, n = train_mod.loss_terms, [0]

    def slow(*a, **k):
        n[0] += 1
        if n[0] > 6:
            time.sleep(0.3)
        return real(*a, **k)

    monkeypatch.setattr(train_mod, "loss_terms", slow)
    t0 = time.perf_counter()
    s = train(config(root, tmp_path, max_steps=None, max_minutes=0.25, probe_steps=6, warmup_steps=2,
                     eval_every=8, log_every=1))
    assert "re-planned" in capsys.readouterr().out
    assert not s["stopped_early"] and s["steps"] == s["total_steps"] and s["edit_start"] < s["steps"]
    assert any(r.get("stage") == "edit" for r in metrics(tmp_path))
    assert time.perf_counter() - t0 < 0.25 * 60 + 20


def test_replan_only_shrinks():
    from dllm_ls.trainer.train import _Dist, _replan
    from dllm_ls.trainer.train_checkpoint import RunState

    cfg = TrainConfig(data_dir="d", tokenizer="t", out_dir="o", max_steps=None, max_minutes=10)
    st = RunState(step=100, total_steps=1000)
    reserve = min(20 + 0.02 * 600, 60)
    assert _replan(cfg, st, steps_per_s=2.0, left_s=300.0, dist=_Dist()) == 100 + 1 + int((300 - reserve) * 2)
    assert _replan(cfg, st, steps_per_s=50.0, left_s=300.0, dist=_Dist()) == 1000  # faster: unchanged
    assert _replan(cfg, st, steps_per_s=2.0, left_s=0.0, dist=_Dist()) == 101


def test_total_steps_from_the_probe():
    from dllm_ls.trainer.train import _Dist, _total_from_probe
    from dllm_ls.trainer.train_checkpoint import RunState

    cfg = TrainConfig(data_dir="d", tokenizer="t", out_dir="o", max_steps=None, max_minutes=10, eval_every=100,
                      eval_batches=10)
    times = [5.0, 0.2] + [0.1] * 28  # compile steps, then 0.1 s a step
    n = _total_from_probe(cfg, RunState(step=30), times, elapsed=60.0, budget_s=600.0, dist=_Dist())
    reserve = min(20 + 0.02 * 600, 60)
    assert n == 30 + int((600 - 60 - reserve) / (0.1 * (1 + 10 / 100 * 0.4)))
    cfg.max_steps = 100
    assert _total_from_probe(cfg, RunState(step=30), times, 60.0, 600.0, _Dist()) == 100


def test_lr_schedules():
    cfg = TrainConfig(data_dir="d", tokenizer="t", out_dir="o", lr=1.0, min_lr_frac=0.1, warmup_steps=10,
                      max_steps=110)
    assert lr_at(0, 110, cfg) == pytest.approx(0.1) and lr_at(9, 110, cfg) == pytest.approx(1.0)
    assert lr_at(10, 110, cfg) == pytest.approx(1.0) and lr_at(110, 110, cfg) == pytest.approx(0.1)
    assert lr_at(60, 110, cfg) == pytest.approx(0.55)
    cfg.schedule = "wsd"
    assert lr_at(80, 110, cfg) == pytest.approx(1.0) and lr_at(110, 110, cfg) == pytest.approx(0.1)


def test_smoke_pipeline_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli_main(["train", "--smoke", "--out", str(out), "--max-steps", "12", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "smoke completion" in printed
    for p in ("corpus/train.jsonl", "tokenizer.json", "data/train.meta.json", "diffusion/export/model.safetensors",
              "diffusion/export_mask/model.safetensors", "diffusion/loss.png"):
        assert (out / p).is_file(), p
    stamp = (out / "tokenizer.json").stat().st_mtime_ns
    assert cli_main(["train", "--smoke", "--ar", "--out", str(out), "--max-steps", "6", "--no-progress",
                     "--export-dtype", "int8"]) == 0
    assert (out / "tokenizer.json").stat().st_mtime_ns == stamp  # stages done once are reused
    assert load_config(out / "ar" / "export")[0].causal
    assert load_config(out / "diffusion" / "export")[1]["trainer"]["dtype"] == "bf16"  # the default from scratch
    # an AR export starts a diffusion run: a shift model by default, which the smoke run decodes;
    # it exports in --init's dtype (int8 here) unless --export-dtype says otherwise
    assert cli_main(["train", "--smoke", "--out", str(out), "--init", str(out / "ar" / "export"), "--name", "adapt",
                     "--max-steps", "3", "--no-progress"]) == 0
    assert "smoke completion" in capsys.readouterr().out
    cfg, extra = load_config(out / "adapt" / "export")
    assert cfg.shift and not cfg.causal and extra["trainer"]["dtype"] == "int8"


def test_data_loader_workers_give_the_same_run(data, tmp_path):
    root, _ = data
    train(config(root, tmp_path / "w0", max_steps=5, edit_frac=0.4, workers=0))
    train(config(root, tmp_path / "w2", max_steps=5, edit_frac=0.4, workers=2))
    assert losses(tmp_path / "w0") == losses(tmp_path / "w2")


def test_resuming_with_another_model_is_a_clear_error(data, tmp_path):
    from dllm_ls.errors import DllmError

    root, _ = data
    train(config(root, tmp_path, max_steps=2))
    bigger = config(root, tmp_path, max_steps=4)
    bigger.model = ModelConfig(vocab_size=512, n_layer=3, n_head=2, dim=32, max_seq_len=64)
    with pytest.raises(DllmError, match="another model"):
        train(bigger)


def test_init_continues_an_export(data, tmp_path):
    """--init: a new run starts from an export's weights (fresh optimizer): its first loss is
    the export's, well below a fresh model's, and another model's export is a clear error."""
    from dllm_ls.errors import DllmError

    root, _ = data
    train(config(root, tmp_path / "a", max_steps=30, edit_frac=0.0, lr=3e-3))
    fresh = metrics(tmp_path / "a")[0]["loss"]
    train(config(root, tmp_path / "b", max_steps=1, init=str(tmp_path / "a" / "export")))
    cont = metrics(tmp_path / "b")[0]["loss"]
    trained = [r["loss"] for r in metrics(tmp_path / "a") if "loss" in r][-5:]
    assert cont < fresh - 0.5 and cont < max(trained) * 1.5
    other = config(root, tmp_path / "c", max_steps=1, init=str(tmp_path / "a" / "export"))
    other.model = ModelConfig(vocab_size=512, n_layer=3, n_head=2, dim=32, max_seq_len=64)
    with pytest.raises(DllmError, match="differs"):
        train(other)


def test_plots_overlay_runs(tmp_path):
    from dllm_ls.trainer.plots import main as plots_main

    for name, stage in (("diffusion", "mask"), ("ar", "ar")):
        rows = [{"step": s, "loss": 5 - s / 10, "mask_loss": 5 - s / 10, "keep_loss": 0.1, "edit_loss": 0.0,
                 "tokens": 100 * s, "tokens_per_s": 1000.0, "mfu": 0.1, "stage": stage} for s in range(1, 9)]
        rows.append({"step": 8, "val_loss": 4.5, "tokens": 800})
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert plots_main([str(tmp_path / "cmp.png"), f"diffusion={tmp_path / 'diffusion.jsonl'}",
                       f"ar={tmp_path / 'ar.jsonl'}"]) == 0
    assert plots_main([str(tmp_path / "one.png"), str(tmp_path / "diffusion.jsonl")]) == 0
    for png in ("cmp.png", "one.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_loader_workers_survive_an_explicit_tokenizers_parallelism(tmp_path):
    """Regression: with TOKENIZERS_PARALLELISM=true the forked data-loader workers deadlocked
    (the first H100 run hung with every process asleep). The run must finish."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "TOKENIZERS_PARALLELISM": "true"}
    r = subprocess.run([sys.executable, "-m", "dllm_ls.cli", "train", "--smoke", "--out", str(tmp_path / "run"),
                        "--workers", "2", "--max-steps", "6", "--no-progress"],
                       env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "run" / "diffusion" / "export" / "model.safetensors").is_file()


def test_torchrun_ddp_on_cpu_and_resume_at_another_world_size(tmp_path):
    """Two gloo ranks on the CPU (the DDP path a multi-GPU run takes with NCCL) train half the
    run; one process resumes from their checkpoint and finishes it."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["-m", "dllm_ls.cli", "train", "--smoke", "--out", str(tmp_path), "--max-steps", "8", "--no-progress"]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                        f"--master_port={port}", *args, "--stop-at-step", "4"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "diffusion"
    assert json.loads((run / "summary.json").read_text())["steps"] == 4
    r = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 8 and not summary["stopped_early"]
    steps = [m["step"] for m in metrics(run) if "loss" in m]
    assert steps == sorted(steps) and steps[-1] == 8  # one run, continued


def test_an_ar_export_starts_a_shift_diffusion_run(data, tmp_path):
    """An AR export's weights start a diffusion run (`init`, causal differs): with `shift` its head
    keeps its meaning, so the first diffusion loss is far below a fresh model's."""
    root, _ = data
    train(config(root, tmp_path / "ar", ar=True, max_steps=40, lr=3e-3))
    fresh = config(root, tmp_path / "fresh", max_steps=1, edit_frac=0.0)
    fresh.model = ModelConfig(vocab_size=512, n_layer=2, n_head=2, dim=32, max_seq_len=64, shift=True)
    train(fresh)
    adapted = config(root, tmp_path / "adapted", max_steps=1, edit_frac=0.0, init=str(tmp_path / "ar" / "export"))
    adapted.model = fresh.model
    train(adapted)
    first = lambda out: next(r["mask_loss"] for r in metrics(out) if "mask_loss" in r)  # noqa: E731
    assert first(tmp_path / "adapted") < first(tmp_path / "fresh") - 0.5
    cfg, _ = load_config(tmp_path / "adapted" / "export")
    assert cfg.shift and not cfg.causal
