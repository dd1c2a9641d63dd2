"""Checkpoint I/O: round trip, and one clear error naming the file for every kind of damage."""

import json
import re
from pathlib import Path

import pytest
import torch

from dllm_ls.diffusion_core import checkpoint as ck
from dllm_ls.diffusion_core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from dllm_ls.diffusion_core.model import ModelConfig, Transformer

REPO = Path(__file__).resolve().parents[2]


def test_round_trip_gives_identical_logits(tiny_checkpoint, tiny_model):
    model, tok = load_checkpoint(tiny_checkpoint)
    idx = torch.randint(6, 500, (1, 12))
    pos = torch.arange(12)[None]
    torch.testing.assert_close(model(idx, pos), tiny_model(idx, pos), atol=0, rtol=0)
    assert tok.vocab_size == 512
    assert sorted(p.name for p in tiny_checkpoint.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]


def test_bf16_export_loads(tmp_path, tiny_model, tokenizer):
    save_checkpoint(tmp_path, tiny_model, tokenizer, dtype=torch.bfloat16)
    model, _ = load_checkpoint(tmp_path)
    assert next(model.parameters()).dtype == torch.float32  # CPU inference runs in fp32
    assert (tmp_path / "model.safetensors").stat().st_size < 0.6 * tiny_model.cfg.n_params() * 4


def test_int8_export_stores_matrices_as_int8_rows_and_loads_close(tmp_path, tiny_model, tokenizer):
    save_checkpoint(tmp_path, tiny_model, tokenizer, dtype=torch.int8)
    from safetensors.torch import load_file

    raw = load_file(str(tmp_path / "model.safetensors"))
    for k, w in tiny_model.state_dict().items():
        if w.ndim == 2:  # every matrix: int8 with one scale a row, within half a step of the weights
            assert raw[k].dtype == torch.int8 and raw[k + ck.SCALE].shape == (w.shape[0],)
            err = (raw[k].float() * raw[k + ck.SCALE][:, None] - w).abs()
            assert (err <= raw[k + ck.SCALE][:, None] / 2 + 1e-7).all(), k
        else:
            assert raw[k].dtype == torch.bfloat16 and k + ck.SCALE not in raw
    model, _ = load_checkpoint(tmp_path)
    assert next(model.parameters()).dtype == torch.float32
    idx, pos = torch.randint(6, 500, (1, 12)), torch.arange(12)[None]
    with torch.no_grad():
        a, b = model(idx, pos), tiny_model(idx, pos)
    assert (a - b).abs().max() < 0.05 * b.abs().max()
    bf16 = tmp_path / "bf16"
    save_checkpoint(bf16, tiny_model, tokenizer, dtype=torch.bfloat16)
    assert (tmp_path / "model.safetensors").stat().st_size < 0.6 * (bf16 / "model.safetensors").stat().st_size


def test_quantize_rows_keeps_zero_rows_and_extremes():
    w = torch.tensor([[0.0, 0.0], [1.0, -0.5], [-3.0, 3.0]])
    q, scale = ck.quantize_rows(w)
    assert q.tolist() == [[0, 0], [127, -64], [-127, 127]]  # -63.5 rounds to even
    torch.testing.assert_close(q.float() * scale[:, None], w, atol=0.5 * scale.max().item(), rtol=0)


@pytest.mark.parametrize("damage_int8,pattern", [
    (lambda t, k: t.pop(k + ck.SCALE), "int8 tensor .* needs float scales"),
    (lambda t, k: t.__setitem__(k + ck.SCALE, t[k + ck.SCALE][:-1]), "int8 tensor .* needs float scales"),
    (lambda t, k: t.__setitem__(k + ck.SCALE, torch.full_like(t[k + ck.SCALE], float("nan"))), "NaN"),
    (lambda t, k: t.__setitem__("stray" + ck.SCALE, torch.ones(3)), "unexpected tensors"),
])
def test_damaged_int8_export_is_refused(tmp_path, tiny_model, tokenizer, damage_int8, pattern):
    from safetensors.torch import load_file, save_file

    save_checkpoint(tmp_path, tiny_model, tokenizer, dtype=torch.int8)
    path = tmp_path / "model.safetensors"
    tensors = load_file(str(path))
    damage_int8(tensors, next(k for k, v in tensors.items() if v.dtype == torch.int8))
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError, match=pattern):
        load_checkpoint(tmp_path)


def damage(ckpt: Path, name: str, data: bytes):
    (ckpt / name).write_bytes(data)


@pytest.mark.parametrize("name,data,pattern", [
    ("model.safetensors", b"\x00garbage" * 10, "model.safetensors.*corrupt"),
    ("model.safetensors", b"", "model.safetensors.*corrupt"),
    ("config.json", b"{oops", "config.json.*invalid"),
    ("config.json", b'{"dim": 30, "n_head": 4, "n_layer": 1, "vocab_size": 512}', "config.json.*invalid"),
    ("config.json", b'{"wrong_key": 1}', "config.json.*missing keys"),
    ("tokenizer.json", b"[]", "tokenizer.json"),
])
def test_damaged_file_is_named(tiny_checkpoint, name, data, pattern):
    damage(tiny_checkpoint, name, data)
    with pytest.raises(CheckpointError, match=pattern):
        load_checkpoint(tiny_checkpoint)


def test_truncated_weights(tiny_checkpoint):
    p = tiny_checkpoint / "model.safetensors"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_checkpoint(tiny_checkpoint)


def test_mismatched_config_names_both_files(tiny_checkpoint):
    cfg = json.loads((tiny_checkpoint / "config.json").read_text())
    cfg["dim"] = 64
    (tiny_checkpoint / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"model.safetensors.*does not match.*config.json.*shape"):
        load_checkpoint(tiny_checkpoint)


def test_tokenizer_larger_than_the_model(tmp_path, tokenizer):
    m = Transformer(ModelConfig.from_name("test", vocab_size=256))
    save_checkpoint(tmp_path, m, tokenizer)
    with pytest.raises(CheckpointError, match="different models"):
        load_checkpoint(tmp_path)


def test_nan_weights_are_refused(tmp_path, tiny_model, tokenizer):
    with torch.no_grad():
        tiny_model.norm.weight[0] = float("nan")
    save_checkpoint(tmp_path, tiny_model, tokenizer)
    with pytest.raises(CheckpointError, match="NaN"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("missing", ["config.json", "model.safetensors", "tokenizer.json"])
def test_missing_file_is_named(tiny_checkpoint, missing):
    (tiny_checkpoint / missing).unlink()
    with pytest.raises(CheckpointError, match=missing):
        load_checkpoint(tiny_checkpoint)


def test_no_checkpoint_and_no_default_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setattr(ck, "DEFAULT_CHECKPOINT", tmp_path / "nothing")
    with pytest.raises(CheckpointError, match="--checkpoint"):
        ck.resolve_checkpoint(None)


def test_no_pickle_anywhere():
    """Checkpoints load from safetensors only: no torch.load, pickle or numpy object loading."""
    pattern = re.compile(r"torch\.load\(|\bimport pickle\b|\bpickle\.load|allow_pickle=True")
    offenders = [str(p) for d in ("diffusion_core", "trainer", "kernels", "lsp_server", "dllm_ls")
                 for p in (REPO / d).rglob("*.py") if pattern.search(p.read_text())]
    assert not offenders


def test_decoding_on_cuda_turns_cudnn_attention_off(monkeypatch):
    """cuDNN builds an attention graph per new prompt length: the decoder keeps it off on CUDA
    (unless DLLM_LS_CUDNN_ATTENTION=1); a CPU model leaves the setting alone."""
    import torch

    from dllm_ls.diffusion_core import model as model_mod

    before = torch.backends.cuda.cudnn_sdp_enabled()
    try:
        torch.backends.cuda.enable_cudnn_sdp(True)
        model_mod.for_inference(torch.device("cpu"))
        assert torch.backends.cuda.cudnn_sdp_enabled()
        monkeypatch.setattr(model_mod, "CUDNN_ATTENTION", True)
        model_mod.for_inference(torch.device("cuda"))
        assert torch.backends.cuda.cudnn_sdp_enabled()
        monkeypatch.setattr(model_mod, "CUDNN_ATTENTION", False)
        model_mod.for_inference(torch.device("cuda"))
        assert not torch.backends.cuda.cudnn_sdp_enabled()
    finally:
        torch.backends.cuda.enable_cudnn_sdp(before)


def test_freeze_heap_keeps_old_cycles_collectable():
    """freeze_heap hides the loaded process from full collections, and a second call (a reload)
    unfreezes first, so a cycle that died in between (the old model's) is still freed."""
    import gc
    import weakref

    from dllm_ls.diffusion_core.checkpoint import freeze_heap

    class Node:
        pass

    a = Node()
    a.self = a
    ref = weakref.ref(a)
    try:
        freeze_heap()
        assert gc.get_freeze_count() > 0
        del a
        gc.collect()
        assert ref() is not None  # frozen: out of the collector's reach
        freeze_heap()
        assert ref() is None
    finally:
        gc.unfreeze()


def test_convert_checkpoint_to_int8_keeps_the_training_metadata(tmp_path, tiny_model, tokenizer):
    save_checkpoint(tmp_path / "a", tiny_model, tokenizer, extra_config={"trainer": {"steps": 7, "dtype": "fp32"}})
    ck.convert_checkpoint(tmp_path / "a", tmp_path / "b", "int8")
    _, extra = ck.load_config(tmp_path / "b")
    assert extra["trainer"] == {"steps": 7, "dtype": "int8"}
    model, _ = load_checkpoint(tmp_path / "b")
    assert model.cfg == tiny_model.cfg
