"""The training loop: block diffusion (mask stage, then Seed's edit stage) or the AR baseline.

One loop from one device to many: under `torchrun` (WORLD_SIZE > 1) it runs DDP over
torch.distributed; each rank draws its own data (seeded by rank). CUDA: bf16 autocast,
FlexAttention block masks and torch.compile (`compile=False` falls back to SDPA with a bool mask).
CPU: fp32, SDPA with the bool mask.

Steps [0, edit_start) train the mask stage, [edit_start, total) the edit stage,
edit_start = round((1 - edit_frac) * total). The mask-stage model at the switch is exported to
OUT/export_mask, the final one to OUT/export (config.json + model.safetensors + tokenizer.json,
loadable by `diffusion_core.checkpoint.load_checkpoint`).

With a time budget (`max_minutes`) the first `probe_steps` steps are timed (they are real
training steps, inside the LR warm-up, which does not depend on the total) and the total is set
from the measured step time so that the 80/20 split holds. At each evaluation the total is
planned again from the steps run since the last plan (`_replan`): when the run is slower than the
probe said (another run sharing the GPU that was still compiling during the probe), the total
shrinks, and with it the edit stage's start, so the run still ends with its edit stage. The loop
still stops and exports when the time is up.

Checkpoints and the export: train_checkpoint.py (no pickle). Data and noise are counter-based (seeded by seed, step, rank, micro-batch), so the step number is
all the sampler state there is and a resumed run repeats the uninterrupted run's losses exactly.
"""

from __future__ import annotations

import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..diffusion_core.checkpoint import EXPORT_DTYPES
from ..diffusion_core.model import ModelConfig, Transformer
from ..diffusion_core.tokenizer import Tokenizer
from ..errors import DllmError
from .data import SequenceConfig, SequenceSampler, StepStream, TokenData, make_loader
from .objectives import (ObjectiveConfig, TrainModule, batch_mask, batch_positions, eval_batches, evaluate,
                         loss_terms, step_flops)
from .train_checkpoint import RunState, export, latest_checkpoint, load_train_checkpoint, save_train_checkpoint


class TrainError(DllmError):
    pass


@dataclass(kw_only=True)
class TrainConfig:
    data_dir: str  # tokenised data (data.py)
    tokenizer: str  # the tokenizer.json the data was tokenised with
    out_dir: str
    model: ModelConfig = field(default_factory=ModelConfig)
    ar: bool = False  # the autoregressive baseline (model.causal must be True)
    seq_len: int = 512
    batch_size: int = 32  # sequences per rank per micro-batch
    grad_accum: int = 1
    max_steps: int | None = 1000  # with max_minutes: an upper bound
    max_minutes: float | None = None
    stop_at_step: int | None = None  # end this session after this step (checkpoint, export); resume later
    probe_steps: int = 30
    lr: float = 2e-3
    min_lr_frac: float = 0.1
    warmup_steps: int = 100
    schedule: str = "cosine"  # "cosine" or "wsd" (warmup, stable, linear decay over decay_frac)
    decay_frac: float = 0.2
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    edit_frac: float = 0.2  # the last edit_frac of the steps train the edit stage
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    data: SequenceConfig = field(default_factory=SequenceConfig)
    eval_every: int = 200
    eval_batches: int = 8
    eval_block_size: int = 32
    ckpt_every: int = 1000
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 0
    compile: bool = True  # CUDA only: torch.compile the model and FlexAttention
    peak_flops: float = 989e12  # per device: H100 SXM bf16 dense
    export_dtype: str = "bf16"
    workers: int = -1  # data-loader processes per rank; -1: 0 on CPU, up to 8 on CUDA
    device: str = "auto"
    threads: int = 0  # CPU: torch intra-op threads (0 = torch's default; 1 suits tiny models on busy CPUs)
    progress: bool = True
    init: str = ""  # start from this export's weights (fresh optimizer and schedule); "": from scratch

    def __post_init__(self):
        self.data.seq_len = self.seq_len
        if self.ar != self.model.causal:
            raise TrainError("the AR baseline needs ModelConfig(causal=True) and diffusion causal=False")
        self.objective.shift = self.model.shift
        if self.seq_len > self.model.max_seq_len:
            raise TrainError(f"seq_len {self.seq_len} exceeds the model's max_seq_len {self.model.max_seq_len}")
        if not self.ar and any(self.seq_len % b for b in self.objective.block_sizes):
            raise TrainError(f"seq_len {self.seq_len} must be a multiple of every block size "
                             f"{self.objective.block_sizes}")
        if self.max_steps is None and self.max_minutes is None:
            raise TrainError("give max_steps or max_minutes")
        if self.schedule not in ("cosine", "wsd"):
            raise TrainError(f"schedule must be cosine or wsd, not {self.schedule!r}")
        if self.export_dtype not in EXPORT_DTYPES:
            raise TrainError(f"export_dtype must be one of {', '.join(EXPORT_DTYPES)}")
        if not 0.0 <= self.edit_frac < 1.0:
            raise TrainError("edit_frac must be in [0, 1)")


# --- schedule, optimizer ----------------------------------------------------------------------


def lr_at(step: int, total: int | None, cfg: TrainConfig) -> float:
    """Linear warm-up over warmup_steps, then cosine to min_lr or WSD (constant, linear decay)."""
    lo = cfg.lr * cfg.min_lr_frac
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if total is None:
        return cfg.lr
    if cfg.schedule == "cosine":
        p = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
        return lo + 0.5 * (cfg.lr - lo) * (1 + math.cos(math.pi * p))
    decay_start = total - int(cfg.decay_frac * total)
    if step < decay_start:
        return cfg.lr
    return cfg.lr - (cfg.lr - lo) * (step - decay_start) / max(1, total - decay_start)


def make_optimizer(net: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    decay = [p for p in net.parameters() if p.dim() >= 2]
    rest = [p for p in net.parameters() if p.dim() < 2]  # norms: no weight decay
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    extra = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, **extra)


# --- the loop ---------------------------------------------------------------------------------------


class _Dist:
    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))

    @property
    def main(self) -> bool:
        return self.rank == 0


def _device(cfg: TrainConfig, dist: _Dist) -> torch.device:
    if cfg.device != "auto":
        return torch.device(cfg.device)
    if torch.cuda.is_available():
        return torch.device("cuda", dist.local_rank)
    return torch.device("cpu")


def _to(batch: dict, device) -> dict:
    nb = device.type == "cuda"
    return {k: (v.to(device, non_blocking=nb) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


class MetricsLog:
    """metrics.jsonl: one JSON object per line; on resume, lines after the resumed step are dropped."""

    def __init__(self, path: Path, resume_step: int, enabled: bool):
        self.path, self.enabled = path, enabled
        if enabled and path.is_file():
            keep = [ln for ln in path.read_text().splitlines() if ln.strip()
                    and json.loads(ln).get("step", 0) <= resume_step]
            path.write_text("".join(k + "\n" for k in keep))
        elif enabled and resume_step == 0 and path.exists():
            path.unlink()

    def write(self, rec: dict):
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(rec) + "\n")


def train(cfg: TrainConfig) -> dict:
    """Train (or resume) a run in cfg.out_dir; returns the summary written to OUT/summary.json."""
    return with_threads(cfg, _train)


def with_threads(cfg: TrainConfig, run):
    """run(cfg) with cfg.threads CPU intra-op threads, restored afterwards (process-wide setting)."""
    threads = torch.get_num_threads()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    try:
        return run(cfg)
    finally:
        torch.set_num_threads(threads)


def start_run(cfg: TrainConfig) -> tuple[_Dist, Path, torch.device, bool]:
    """(dist, out dir, device, whether this call started the process group): the set-up that
    train.py and post.py share."""
    dist = _Dist()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    own_group = False
    if dist.world > 1:
        import torch.distributed as tdist

        if not tdist.is_initialized():  # the CLI may have started it to prepare the data on rank 0
            tdist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
            own_group = True
    device = _device(cfg, dist)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return dist, out, device, own_group


def end_run(own_group: bool):
    if own_group:
        import torch.distributed as tdist

        tdist.destroy_process_group()


def _train(cfg: TrainConfig) -> dict:
    dist, out, device, own_group = start_run(cfg)
    t_session = time.perf_counter()

    tok = Tokenizer.from_file(cfg.tokenizer)
    if tok.vocab_size > cfg.model.vocab_size:
        raise TrainError(f"the tokenizer has {tok.vocab_size} tokens, the model only {cfg.model.vocab_size}")
    train_data = TokenData.load(cfg.data_dir, "train", cfg.tokenizer)
    sampler = SequenceSampler(train_data, tok, cfg.data, seed=cfg.seed)
    draw = train_data.token_draw(tok.special_ids)
    val_batches = []
    if (Path(cfg.data_dir) / "val.meta.json").is_file() and cfg.eval_batches > 0:
        val_sampler = SequenceSampler(TokenData.load(cfg.data_dir, "val", cfg.tokenizer), tok, cfg.data,
                                      seed=cfg.seed + 1)
        val_batches = list(eval_batches(val_sampler, cfg.eval_batches, cfg.batch_size, cfg.eval_block_size,
                                        ar=cfg.ar, seed=cfg.seed, shift=cfg.model.shift))

    torch.manual_seed(cfg.seed)
    net = Transformer(cfg.model).to(device)
    opt = make_optimizer(net, cfg, device)
    state = RunState(total_steps=None if cfg.max_minutes else cfg.max_steps)
    ck = latest_checkpoint(out)
    if ck is None and cfg.init:  # a new run that continues an exported model
        load_init(net, cfg)
    if ck is not None:
        from ..diffusion_core.checkpoint import load_config

        if asdict(load_config(ck)[0]) != asdict(cfg.model):
            raise TrainError(f"{ck} holds a checkpoint of another model than the one asked for "
                             f"(preset, size, seq_len or --ar differ); use another --out or delete {out}")
        state = load_train_checkpoint(ck, net, opt)
    if state.total_steps is not None and state.edit_start is None:
        state.edit_start = _edit_start(state.total_steps, cfg)
    if state.done:
        summary_path = out / "summary.json"
        return json.loads(summary_path.read_text()) if summary_path.is_file() else {"steps": state.step}

    module = TrainModule(net)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    use_flex = device.type == "cuda" and cfg.compile
    if use_flex:
        err = check_flex(net, cfg, device, autocast)
        if dist.world > 1:
            import torch.distributed as tdist

            t = torch.tensor([err], device=device)
            tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
            err = float(t)
        if err > 0.15:
            use_flex = False
            if dist.main:
                print(f"warning: compiled FlexAttention disagrees with SDPA (relative error {err:.2f}); "
                      "training with SDPA and a bool mask instead")
    if device.type == "cuda" and cfg.compile:
        module = torch.compile(module)
    eval_module = module
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        module = DDP(module, device_ids=[device.index] if device.type == "cuda" else None)
    workers = cfg.workers if cfg.workers >= 0 else (
        0 if device.type == "cpu" else max(0, min(8, (os.cpu_count() or 1) // dist.world - 2)))

    log = MetricsLog(out / "metrics.jsonl", state.step, dist.main)
    if dist.main:
        (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2, default=str))
    bar = None
    if dist.main and cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=state.total_steps or cfg.probe_steps, initial=state.step, unit="step",
                   dynamic_ncols=True, desc="ar" if cfg.ar else "diffusion")

    def stream_from(step):
        stop = state.total_steps if state.total_steps is not None else (cfg.max_steps or 10**9)
        return make_loader(StepStream(sampler, cfg, dist.rank, step, stop, state.edit_start, draw), workers,
                           device.type == "cuda")

    L = cfg.seq_len
    loader = stream_from(state.step)
    budget_s = cfg.max_minutes * 60 if cfg.max_minutes else None
    probing = state.total_steps is None
    plan = None  # (step, time) of the last plan of the total; not at a session's start (compiling)
    step_times: list[float] = []
    acc = {k: torch.zeros((), device=device) for k in ("loss", "mask_loss", "keep_loss", "edit_loss", "grad_norm")}
    acc_n, acc_flops, acc_tokens, t_log = 0, 0.0, 0, time.perf_counter()
    last_val = None
    tokens_per_step = cfg.batch_size * L * cfg.grad_accum * dist.world
    stopped_early = False

    def checkpoint():
        if dist.main:
            save_train_checkpoint(out, net, tok, opt, state, cfg)

    try:
        while state.total_steps is None or state.step < state.total_steps:
            step = state.step
            if (not cfg.ar and state.edit_start is not None and step == state.edit_start
                    and not state.mask_exported and cfg.edit_frac > 0):
                if dist.main:  # the mask-stage-only model, for the repair comparison
                    export(out / "export_mask", net, tok, cfg, state, "mask")
                state.mask_exported = True
                checkpoint()
            t0 = time.perf_counter()
            micro = next(loader)
            lr = lr_at(step, state.total_steps, cfg)
            for g in opt.param_groups:
                g["lr"] = lr
            for m, b in enumerate(micro):
                b = _to(b, device)
                B = b["targets"].shape[0]
                mask = batch_mask(b, L, cfg.ar, device, use_flex)
                sync = nullcontext() if (dist.world == 1 or m == len(micro) - 1) else module.no_sync()
                with sync:
                    with autocast:
                        ce = module(b["idx"], batch_positions(B, L, cfg.ar, device), mask, b["targets"], b.get("src"))
                    terms = loss_terms(ce, b)
                    (terms["loss"] / len(micro)).backward()
                for k in ("loss", "mask_loss", "keep_loss", "edit_loss"):
                    acc[k] += terms[k].detach() / len(micro)
                acc_flops += step_flops(cfg.model, B, L, b["bs"], cfg.ar) * dist.world
            gn = torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
            acc["grad_norm"] += gn.detach()
            opt.step()
            opt.zero_grad(set_to_none=True)
            state.step += 1
            state.tokens += tokens_per_step
            acc_n += 1
            acc_tokens += tokens_per_step
            if bar is not None:
                bar.update(1)

            if probing:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                step_times.append(time.perf_counter() - t0)
                if state.step >= min(cfg.probe_steps, cfg.max_steps or 10**9):
                    if val_batches and dist.main:  # compile the evaluation now, so that its cost is counted
                        evaluate(eval_module, val_batches[:1], ar=cfg.ar, device=device, flex=use_flex,
                                 autocast=autocast)
                    state.total_steps = _total_from_probe(cfg, state, step_times, time.perf_counter() - t_session,
                                                          budget_s, dist)
                    state.edit_start = _edit_start(state.total_steps, cfg)
                    probing = False
                    plan = (state.step, time.perf_counter())
                    loader = stream_from(state.step)
                    if bar is not None:
                        bar.total = state.total_steps
                        bar.refresh()

            if state.step % cfg.log_every == 0 or state.step == state.total_steps:
                vals = {k: float(v) / acc_n for k, v in acc.items()}  # one host sync per log interval
                now = time.perf_counter()
                dt = now - t_log
                state.train_seconds += dt
                rec = {"step": state.step, **{k: round(v, 5) for k, v in vals.items()}, "lr": lr,
                       "tokens": state.tokens, "tokens_per_s": acc_tokens / dt,
                       "mfu": acc_flops / dt / (cfg.peak_flops * dist.world),
                       "stage": "ar" if cfg.ar else ("edit" if micro[0]["edit"] else "mask"),
                       "block_size": micro[0]["bs"], "time": round(state.train_seconds, 3)}
                log.write(rec)
                if bar is not None:
                    bar.set_postfix(loss=f"{vals['loss']:.3f}", tok_s=f"{rec['tokens_per_s']:.0f}",
                                    mfu=f"{rec['mfu']:.1%}", stage=rec["stage"], refresh=False)
                for v in acc.values():
                    v.zero_()
                acc_n, acc_flops, acc_tokens, t_log = 0, 0.0, 0, time.perf_counter()

            if val_batches and dist.main and (state.step % cfg.eval_every == 0 or state.step == state.total_steps):
                te = time.perf_counter()
                net.eval()
                last_val = evaluate(eval_module, val_batches, ar=cfg.ar, device=device, flex=use_flex,
                                    autocast=autocast)["loss"]
                net.train()
                log.write({"step": state.step, "val_loss": round(last_val, 5), "tokens": state.tokens})
                t_log += time.perf_counter() - te  # evaluation time is not training time
            if budget_s is not None and not probing and state.step % cfg.eval_every == 0 \
                    and state.step < state.total_steps:  # every rank: the plan must agree
                now = time.perf_counter()
                if plan is None:
                    plan = (state.step, now)
                elif state.step - plan[0] >= 10:  # a rate over a few steps at least
                    total = _replan(cfg, state, (state.step - plan[0]) / (now - plan[1]),
                                    budget_s - (now - t_session), dist)
                    if total < state.total_steps:
                        if dist.main:
                            print(f"re-planned: {state.total_steps} -> {total} steps (slower than planned)")
                        state.total_steps = total
                        if state.step < state.edit_start:
                            state.edit_start = max(state.step, _edit_start(total, cfg))
                        loader = stream_from(state.step)
                        if bar is not None:
                            bar.total = total
                    plan = (state.step, now)
            if state.step % cfg.ckpt_every == 0 and state.step != state.total_steps:
                checkpoint()
            if budget_s is not None and not probing and time.perf_counter() - t_session > budget_s:
                stopped_early = state.step < (state.total_steps or 0)
                break
            if cfg.stop_at_step is not None and state.step >= cfg.stop_at_step:
                stopped_early = state.step < (state.total_steps or 0)
                break
    except KeyboardInterrupt:
        checkpoint()
        raise
    finally:
        if bar is not None:
            bar.close()

    state.done = not stopped_early
    checkpoint()
    summary = {}
    if dist.main:
        size = export(out / "export", net, tok, cfg, state, "ar" if cfg.ar else "edit" if state.mask_exported else "mask")
        summary = _summary(out, cfg, state, size, last_val, stopped_early)
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        try:
            from .plots import plot_metrics

            plot_metrics(out / "metrics.jsonl", out / "loss.png", title=out.name)
        except Exception as e:  # a plot must never cost a trained model
            print(f"warning: could not plot the loss curves: {e}")
    end_run(own_group)
    return summary


@torch.no_grad()
def check_flex(net, cfg: TrainConfig, device, autocast) -> float:
    """Max |compiled FlexAttention - SDPA| / std(SDPA) of the first attention layer on the training mask.

    A guard for the compiled path (torch.compile has produced wrong FlexAttention results for
    non-contiguous inputs); bf16 rounding gives a few percent, a broken kernel tens of percent.
    """
    from .objectives import causal_mask, flex_block_mask, training_mask

    L, B = cfg.seq_len, 2
    g = torch.Generator(device="cpu").manual_seed(0)
    offset = torch.tensor([0, 5], device=device)
    T = L if cfg.ar else 2 * L
    x = torch.randn(B, T, cfg.model.dim, generator=g).to(device)
    pos = batch_positions(B, L, cfg.ar, device)
    cos, sin = net.rope_cos[pos].unsqueeze(1), net.rope_sin[pos].unsqueeze(1)
    attn = net.layers[0].attn
    dense = causal_mask(L, device) if cfg.ar else training_mask(L, 8, offset)
    with autocast:
        ref = attn(x, cos, sin, dense, None, 0, 0).float()
        got = torch.compile(attn)(x, cos, sin, flex_block_mask(L, 8, offset, ar=cfg.ar), None, 0, 0).float()
    return float((got - ref).abs().max() / ref.std().clamp(min=1e-6))


def load_init(net, cfg: TrainConfig):
    """Copy the weights of the export cfg.init into net (its model config must be cfg.model, but
    for `causal` and `shift`: an AR export may start a diffusion run and the other way round)."""
    from ..diffusion_core.checkpoint import load_checkpoint

    model, _ = load_checkpoint(cfg.init, dtype=torch.float32)
    same = {"causal": cfg.model.causal, "shift": cfg.model.shift}
    if asdict(model.cfg) | same != asdict(cfg.model):
        raise TrainError(f"{cfg.init}: its model config differs from the one asked for")
    net.load_state_dict(model.state_dict())


def _edit_start(total: int, cfg: TrainConfig) -> int:
    return total if cfg.ar else int(round((1.0 - cfg.edit_frac) * total))


def _total_from_probe(cfg: TrainConfig, state: RunState, times: list[float], elapsed: float,
                      budget_s: float | None, dist: _Dist) -> int:
    """Total steps that fit the time budget, from the steady-state step time of the probe."""
    if budget_s is None:
        return int(cfg.max_steps)
    steady = sorted(times[len(times) // 3:]) or sorted(times)
    t_step = steady[len(steady) // 2]  # median, past the compile steps
    evals = cfg.eval_batches / max(1, cfg.eval_every) * 0.4  # an eval batch ~ 0.4 of a train step
    reserve = min(20.0 + 0.02 * budget_s, 0.1 * budget_s)  # final checkpoint, exports, plots
    n = state.step + int(max(0.0, budget_s - elapsed - reserve) / (t_step * (1 + evals)))
    if cfg.max_steps:
        n = min(n, cfg.max_steps)
    n = max(n, state.step + 1)
    if dist.world > 1:  # every rank must run the same number of steps
        import torch.distributed as tdist

        t = torch.tensor([n], device="cuda" if torch.cuda.is_available() else "cpu")
        tdist.all_reduce(t, op=tdist.ReduceOp.MIN)
        n = int(t)
    return n


def _replan(cfg: TrainConfig, state: RunState, steps_per_s: float, left_s: float, dist: _Dist) -> int:
    """The total steps that fit the time left at the rate since the last plan (evaluations
    included); never more than the current total, never less than the next step."""
    reserve = min(20.0 + 0.02 * cfg.max_minutes * 60, 0.1 * cfg.max_minutes * 60)
    n = min(state.total_steps, state.step + 1 + int(max(0.0, left_s - reserve) * steps_per_s))
    if dist.world > 1:  # every rank must run the same number of steps
        import torch.distributed as tdist

        t = torch.tensor([n], device="cuda" if torch.cuda.is_available() else "cpu")
        tdist.all_reduce(t, op=tdist.ReduceOp.MIN)
        n = int(t)
    return n


def _summary(out: Path, cfg: TrainConfig, state: RunState, size: int, val: float | None, early: bool) -> dict:
    recs = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines() if ln.strip()] \
        if (out / "metrics.jsonl").is_file() else []
    train_recs = [r for r in recs if "tokens_per_s" in r]
    steady = train_recs[len(train_recs) // 5:] or train_recs  # past compile and warm-up
    mean = (lambda k: float(np.mean([r[k] for r in steady]))) if steady else (lambda k: None)
    return {
        "kind": "ar" if cfg.ar else "diffusion", "steps": state.step, "total_steps": state.total_steps,
        "edit_start": state.edit_start, "tokens": state.tokens, "train_seconds": round(state.train_seconds, 2),
        "tokens_per_s": mean("tokens_per_s"), "mfu": mean("mfu"), "final_loss": train_recs[-1]["loss"] if
        train_recs else None, "val_loss": val, "n_params": cfg.model.n_params(), "export_bytes": size,
        "export": str(out / "export"), "export_mask": str(out / "export_mask") if state.mask_exported else None,
        "stopped_early": early, "seq_len": cfg.seq_len, "batch_size": cfg.batch_size,
    }
