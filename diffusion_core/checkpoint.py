"""Checkpoint directories: config.json + model.safetensors + tokenizer.json. Never pickle.

Weights are float tensors, or (an int8 export) each matrix as int8 `NAME` with its per-row float32
scales `NAME.scale` (symmetric: row i is NAME[i] * NAME.scale[i]); load_checkpoint dequantizes them.

Every failure raises CheckpointError with one message that names the file and what to do.
"""

from __future__ import annotations

import gc
import json
import os
import tempfile
from pathlib import Path

import torch

from ..errors import DllmError
from .model import ModelConfig, Transformer, for_inference
from .tokenizer import Tokenizer, TokenizerError

CONFIG, WEIGHTS, TOKENIZER = "config.json", "model.safetensors", "tokenizer.json"
SCALE = ".scale"  # NAME.scale: the per-row scales of the int8 matrix NAME
# export dtypes by the name the trainer's --export-dtype and config.json's "trainer" block use
EXPORT_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "int8": torch.int8}
DEFAULT_CHECKPOINT = Path(__file__).parent / "weights" / "default"


class CheckpointError(DllmError):
    pass


def default_checkpoint() -> Path | None:
    """The model shipped in the package, or None before one has been trained."""
    return DEFAULT_CHECKPOINT if (DEFAULT_CHECKPOINT / WEIGHTS).is_file() else None


def resolve_checkpoint(path: str | Path | None) -> Path:
    if path is not None:
        return Path(path)
    d = default_checkpoint()
    if d is None:
        raise CheckpointError(
            "no checkpoint given and no default model is installed "
            f"({DEFAULT_CHECKPOINT}/{WEIGHTS} is missing); pass --checkpoint DIR "
            "(a directory with config.json, model.safetensors, tokenizer.json)")
    return d


def _atomic_write(path: Path, write):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def quantize_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per row: (q, scale) with w ~= q * scale[:, None], |error| <= scale / 2."""
    w = w.detach().float()
    scale = (w.abs().amax(dim=1) / 127).clamp_min(1e-12)
    return torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8), scale


def save_checkpoint(directory: str | Path, model: Transformer, tokenizer: Tokenizer,
                    dtype: torch.dtype | None = None, extra_config: dict | None = None):
    """Write the three files atomically (each via a temp file + rename). dtype casts floats;
    torch.int8 stores every matrix as int8 with per-row scales, the rest in bfloat16."""
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for k, v in model.state_dict().items():
        v = v.detach().to("cpu")
        if dtype == torch.int8 and v.is_floating_point() and v.ndim == 2:
            v, tensors[k + SCALE] = quantize_rows(v)
        elif dtype == torch.int8 and v.is_floating_point():
            v = v.to(torch.bfloat16)
        elif dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        tensors[k] = v.contiguous()
    _atomic_write(d / WEIGHTS, lambda p: save_file(tensors, p, metadata={"format": "pt"}))
    cfg = json.loads(model.cfg.to_json())
    _atomic_write(d / TOKENIZER, tokenizer.save)
    body = json.dumps({**cfg, **(extra_config or {})}, indent=2, sort_keys=True)
    _atomic_write(d / CONFIG, lambda p: Path(p).write_text(body))


def convert_checkpoint(src: str | Path, dst: str | Path, dtype: str):
    """Write src's model again in dtype (an EXPORT_DTYPES name; int8: int8 matrices) into dst, its
    config's extra keys kept."""
    model, tok = load_checkpoint(src)
    _, extra = load_config(src)
    if isinstance(extra.get("trainer"), dict):
        extra["trainer"] = {**extra["trainer"], "dtype": dtype}
    save_checkpoint(dst, model, tok, dtype=EXPORT_DTYPES[dtype], extra_config=extra)


def load_config(directory: str | Path) -> tuple[ModelConfig, dict]:
    """The ModelConfig and the extra keys (training metadata) of a checkpoint's config.json."""
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; a checkpoint directory holds {CONFIG}, {WEIGHTS}, {TOKENIZER}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        required = {"vocab_size", "n_layer", "n_head", "dim"}
        if required - set(raw):
            raise ValueError(f"missing keys {', '.join(sorted(required - set(raw)))}")
        known = {f for f in ModelConfig.__dataclass_fields__}
        extra = {k: v for k, v in raw.items() if k not in known}
        cfg = ModelConfig.from_dict({k: v for k, v in raw.items() if k in known})
    except (ValueError, TypeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: invalid model config ({e}); re-export the checkpoint") from None
    return cfg, extra


def freeze_heap():
    """Put every object alive now (a loaded model, the libraries) out of the cyclic collector's
    reach: a full collection then walks only what came after, not the ~170k objects of a loaded
    server (~70 ms on a CPU core, inside whatever completion set it off). Called once a process
    has loaded its model; again after a reload (unfrozen first, so that the old model's cycles
    can still be collected)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _dequantize(state: dict[str, torch.Tensor], wpath: Path) -> dict[str, torch.Tensor]:
    """An int8 export's matrices back to float32 (NAME * NAME.scale per row); float tensors as they are."""
    out = {}
    for k, v in state.items():
        if k.endswith(SCALE) and state.get(k[: -len(SCALE)], v).dtype == torch.int8:
            continue  # consumed with its matrix
        if v.dtype == torch.int8:
            scale = state.get(k + SCALE)
            if v.ndim != 2 or scale is None or scale.shape != (v.shape[0],) or not scale.is_floating_point():
                raise CheckpointError(f"{wpath}: int8 tensor {k} needs float scales {k}{SCALE} of shape "
                                      f"({v.shape[0]},); the checkpoint is damaged, re-export it")
            v = v.float() * scale.float()[:, None]
        out[k] = v
    return out


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu",
                    dtype: torch.dtype | None = None) -> tuple[Transformer, Tokenizer]:
    """Load a checkpoint directory; dtype defaults to float32 on CPU and bfloat16 on CUDA."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    d = Path(directory)
    if not d.is_dir():
        raise CheckpointError(f"{d}: checkpoint directory not found")
    cfg, _ = load_config(d)
    tpath = d / TOKENIZER
    if not tpath.is_file():
        raise CheckpointError(f"{tpath}: missing; copy the tokenizer.json the model was trained with")
    try:
        tok = Tokenizer.from_file(tpath)
    except TokenizerError as e:
        raise CheckpointError(str(e)) from None
    if tok.vocab_size > cfg.vocab_size:
        raise CheckpointError(f"{tpath}: tokenizer has {tok.vocab_size} tokens but {d / CONFIG} "
                              f"says vocab_size {cfg.vocab_size}; the files come from different models")
    wpath = d / WEIGHTS
    if not wpath.is_file():
        raise CheckpointError(f"{wpath}: missing")
    try:
        state = load_file(str(wpath), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{wpath}: corrupt or not a safetensors file ({e})") from None
    state = _dequantize(state, wpath)
    model = Transformer(cfg)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    bad = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or bad:
        parts = []
        if missing:
            parts.append(f"missing tensors {missing[:3]}")
        if unexpected:
            parts.append(f"unexpected tensors {unexpected[:3]}")
        if bad:
            k = bad[0]
            parts.append(f"{k} has shape {tuple(state[k].shape)}, config expects {tuple(expected[k].shape)}")
        raise CheckpointError(f"{wpath}: does not match {d / CONFIG}: {'; '.join(parts)}")
    for k, v in state.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise CheckpointError(f"{wpath}: tensor {k} holds NaN or Inf values; the checkpoint is damaged")
    model.load_state_dict(state)
    device = torch.device(device)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model.to(device=device, dtype=dtype).eval()
    for_inference(device)
    return model, tok
