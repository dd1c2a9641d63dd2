"""The training run's state on disk: resumable checkpoints (OUT/checkpoints/step_N/, written to a
temp dir then renamed; `latest` names the newest) and the inference export. The model via
`save_checkpoint` (fp32), optim.safetensors (the AdamW moments, flattened, and the torch RNG
states) and state.json (the `RunState`, the optimizer's hyper-parameters, the config). No pickle."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..diffusion_core.checkpoint import EXPORT_DTYPES, save_checkpoint
from ..diffusion_core.tokenizer import Tokenizer

if TYPE_CHECKING:
    from .train import TrainConfig

EXPORT_MAX_BYTES = 32 * 1024 * 1024


@dataclass
class RunState:
    step: int = 0  # optimizer steps done
    total_steps: int | None = None
    edit_start: int | None = None
    tokens: int = 0  # training tokens seen (all ranks, x_0 positions)
    train_seconds: float = 0.0
    mask_exported: bool = False
    done: bool = False


def save_train_checkpoint(out: Path, net, tok: Tokenizer, opt, state: RunState, cfg: TrainConfig) -> Path:
    from safetensors.torch import save_file

    root = out / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{state.step:08d}"
    tmp = root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_checkpoint(tmp, net, tok, extra_config={"trainer_step": state.step})
    sd = opt.state_dict()
    tensors = {f"state.{i}.{k}": v.detach().cpu().contiguous()
               for i, s in sd["state"].items() for k, v in s.items() if isinstance(v, torch.Tensor)}
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    save_file(tensors, str(tmp / "optim.safetensors"))
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    body = {"run": asdict(state), "param_groups": groups,
            "config": json.loads(json.dumps(asdict(cfg), default=str))}
    (tmp / "state.json").write_text(json.dumps(body, indent=2))
    final = root / name
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    _write_atomic(root / "latest", name)
    old = sorted(p for p in root.glob("step_*") if p.is_dir())
    for p in old[: max(0, len(old) - cfg.keep_checkpoints)]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def _write_atomic(path: Path, text: str):
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def latest_checkpoint(out: Path) -> Path | None:
    p = out / "checkpoints" / "latest"
    if not p.is_file():
        return None
    d = out / "checkpoints" / p.read_text().strip()
    return d if (d / "state.json").is_file() else None


def load_train_checkpoint(d: Path, net, opt) -> RunState:
    from safetensors.torch import load_file

    weights = load_file(str(d / "model.safetensors"))
    net.load_state_dict(weights)
    body = json.loads((d / "state.json").read_text())
    tensors = load_file(str(d / "optim.safetensors"))
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("state."):
            _, i, k = key.split(".", 2)
            state.setdefault(int(i), {})[k] = v
    groups = [{**g, "betas": tuple(g["betas"])} for g in body["param_groups"]]
    opt.load_state_dict({"state": state, "param_groups": groups})
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return RunState(**body["run"])


def export(directory: Path, net, tok: Tokenizer, cfg: TrainConfig, state: RunState, stage: str) -> int:
    """The model for inference, in export_dtype; returns the size of model.safetensors in bytes."""
    meta = {"trainer": {"stage": stage, "steps": state.step, "tokens": state.tokens, "ar": cfg.ar,
                        "seq_len": cfg.seq_len, "n_params": net.cfg.n_params(), "dtype": cfg.export_dtype}}
    save_checkpoint(directory, net, tok, dtype=EXPORT_DTYPES[cfg.export_dtype], extra_config=meta)
    size = (directory / "model.safetensors").stat().st_size
    if size > EXPORT_MAX_BYTES:
        print(f"warning: {directory}/model.safetensors is {size / 2**20:.1f} MiB, over the 32 MiB limit")
    return size
