"""Post-training: Seed's stage 3 (constrained-order distillation) and stage 4 (on-policy step
reduction), from a stage-2 (edit-stage) export, under the same loop machinery as train.py
(torchrun/DDP, counter-based data, atomic checkpoints and resume, metrics.jsonl, plots, export).

Rollouts use the training layout (objectives.py): the input is [x_t ; x_0] and every block of a
training sequence is denoised at once, each conditioned on the clean tokens of the blocks before
it, exactly what `Transformer.step` shows a block at inference. So one forward advances B x
(L / block_size) independent completions by one denoising step. The generated positions (`gen`)
are the valid non-special tokens; the special FIM tokens and padding stay as they are. A rollout
is the threshold decoder of the sampler's block mode (commit every masked position of a block
whose confidence passes the threshold, else its leftmost masked position; then revise tokens
committed in earlier steps, `fallback` and `revise`), recorded as the step at which each
position was committed (`commit_step`): the state after k steps is "masked where
commit_step >= k", so every intermediate state of every trajectory is known without storing it.

The syntax check (`verify_blocks`): tree-sitter counts the ERROR and MISSING nodes of a window
of text around a block (`verify_context` tokens before, a third of that after), with the
generated block and with the data's own block in place; the generated block passes when its
count is not higher (windows cut code mid-construct, so only the comparison means something).
Stage 3 keeps only candidates that pass it; both stages report the share that passes.

Targets. Stage 4 trains on the current model's on-track states, the state after k steps of a
block's trajectory for k up to the step of its first wrong commit (`on_track`), towards the
data's own tokens: the data is the verifier (training files have no tests, and a syntax check
alone is no verifier: blank or repetitive text passes it). Stage 3 trains towards a frozen
teacher's outputs (`targets="teacher"`, its default): the teacher is a copy of the stage-2 model
that never changes, so its chosen trajectories are fixed targets and every state of them is on
track. The first version of both stages trained the current model towards its own rollouts,
filtered by the syntax check; on the H100 it cut the rollouts' steps per token 26x within ~80
steps and wrote confident junk (Q1 0%): self-targets of a moving model reward confidence, not
correctness. `targets="data"` gives stage 3 the data as target instead (the session-3 version).

Stage 3, constrained-order distillation (`stage="distill"`): for each batch, the teacher's
trajectories under several decoding rules (`distill_rules`: thresholds and sampling temperatures,
so commit orders and outputs vary); each block's candidates are scored by their ELBO given the
clean context (`block_nelbo`, one masked draw per block shared by all candidates: common random
numbers) and the best one that opens no syntax error (`verify_blocks`) is kept; the student is
fine-tuned on the kept trajectories' states (a random k per block) towards their outputs, with
Seed's edit-style augmentation (a share alpha ~ U[0, augment_max] of the visible generated tokens
replaced by random ones, weight 1). With `horizon` h > 0 a state's loss covers only the positions
that its trajectory commits within h steps: the student learns to commit in one step what the
teacher commits in h, in the teacher's order (the constrained order), instead of guessing the
whole block's output from a nearly empty state (which the first teacher runs learned: confident
other predictions at the most-masked states, docs/results.md). With `teacher_kl` w > 0 the
positions beyond the horizon are not left free: they learn the teacher's whole distribution there
(w * KL(teacher || student), from one no-grad teacher forward of the same state), so the student
keeps the stage-2 model's view of what it cannot commit yet; without it the distilled models
drifted (validation NELBO up, Q1 down). The teacher's rollouts do not go stale, so one batch of them
feeds many updates (`updates_per_rollout`). The figures follow the student's own greedy rollout
on the same batch (steps per token, agreement with the teacher's choice).

Stage 4, on-policy step reduction (`stage="onpolicy"`): the current model rolls out the inference
decoder (threshold, greedy); the reward of a block is its Levenshtein progress per step towards
the data (every commit is final in this decoder, so the distance falls by the number of right
commits: reward = right tokens / steps). The surrogate: for each block an on-track state s_k (k
uniform up to the first wrong commit) and the cross-entropy of the data's tokens at every
still-masked position of s_k. Raising log p(x_i | s_k) at positions that the decoder had not yet
committed, in the states it actually visits, is what lets more of them pass the threshold at
step k, rightly: more progress per step. No negative weights (they made the objective unstable in
Seed's description). Each rollout feeds `updates_per_rollout` optimizer steps (fresh states each).

Both stages keep the mask-stage ELBO on the data itself (weight `data_weight`), so the model stays
a model of code, and report as they train: the reward (progress per step), the steps per
generated token, the token accuracy and exact blocks against the data, the on-track share of the
steps, the share of blocks that open no syntax error and the validation ELBO. The speed-up
against step (Seed's Figure 2a) is `plots.plot_post`.
"""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch

from ..diffusion_core.model import Transformer
from ..diffusion_core.tokenizer import Tokenizer
from .data import SequenceSampler, TokenData
from .objectives import (ObjectiveConfig, TrainModule, batch_mask, batch_positions, diffusion_batch, eval_batches,
                         evaluate, loss_terms, shift_sources)
from .rollouts import (FALLBACKS, Rollout, block_layout, block_nelbo, generated_positions, on_track, per_block,
                       post_batch, rollout, verify_blocks)
from .train import (MetricsLog, TrainConfig, TrainError, end_run, load_init, lr_at, make_optimizer, start_run,
                    with_threads)
from .train_checkpoint import RunState, export, latest_checkpoint, load_train_checkpoint, save_train_checkpoint

STAGES = ("distill", "onpolicy")
TARGETS = ("teacher", "data")


@dataclass(kw_only=True)
class PostConfig(TrainConfig):
    stage: str = "onpolicy"  # init: the stage-2 export (config.json + model.safetensors + tokenizer.json)
    block_size: int = 32  # the decoder's block size (the sampler's default)
    threshold: float = 0.9  # the inference decoder's commit threshold (stage 4)
    fallback: str = "leftmost"  # the rollouts' commit fallback and revision: the sampler's block mode
    revise: float = 0.5
    distill_rules: tuple[tuple[float, float], ...] = ((0.9, 0.0), (0.7, 0.0), (0.5, 0.0), (0.9, 0.7))
    targets: str = ""  # "teacher" (stage 3's default) or "data" (stage 4's, and its only choice)
    data_weight: float = 0.5  # weight of the mask-stage ELBO on the data
    post_keep_weight: float = 0.1  # CE weight of visible generated positions of a state (target: itself)
    augment_max: float = 0.1  # stage 3: edit augmentation share alpha ~ U[0, augment_max]
    horizon: int = 0  # > 0: a state's loss covers the positions its trajectory commits within this many steps
    teacher_kl: float = 0.0  # with a horizon: weight of KL(teacher || student) at the masked positions beyond it
    verify_context: int = 48
    fim_only: bool = False  # roll out the FIM middles only (generated_positions' `middle`)
    updates_per_rollout: int = 2
    lr: float = 3e-4
    warmup_steps: int = 20
    edit_frac: float = 0.0
    eval_every: int = 50
    log_every: int = 5
    ckpt_every: int = 200

    def __post_init__(self):
        self.objective = ObjectiveConfig(block_sizes=(self.block_size,))
        super().__post_init__()
        if self.stage not in STAGES:
            raise TrainError(f"stage must be one of {', '.join(STAGES)}, not {self.stage!r}")
        if self.ar:
            raise TrainError("post-training is for the diffusion model")
        if not self.init:
            raise TrainError("post-training starts from a stage-2 export: give init")
        if not self.distill_rules:
            raise TrainError("distill_rules is empty")
        self.targets = self.targets or ("teacher" if self.stage == "distill" else "data")
        if self.targets not in TARGETS:
            raise TrainError(f"targets must be one of {', '.join(TARGETS)}, not {self.targets!r}")
        if self.horizon < 0:
            raise TrainError(f"horizon must be >= 0, not {self.horizon}")
        if self.fallback not in FALLBACKS or not 0.0 <= self.revise <= 1.0:
            raise TrainError(f"fallback must be one of {FALLBACKS} and revise in [0, 1], "
                             f"not {self.fallback!r}, {self.revise!r}")
        if self.teacher_kl < 0:
            raise TrainError(f"teacher_kl must be >= 0, not {self.teacher_kl}")
        if self.teacher_kl > 0 and (self.targets != "teacher" or self.horizon == 0):
            raise TrainError("teacher_kl anchors the positions beyond the horizon to the frozen teacher: "
                             "it needs targets 'teacher' and a horizon")
        if self.stage == "onpolicy" and self.targets != "data":
            raise TrainError("on-policy targets are the data: the current model's own outputs reward confidence, "
                             "not correctness")


def post_train(cfg: PostConfig) -> dict:
    """Post-train (or resume) a run in cfg.out_dir; returns the summary written to OUT/summary.json."""
    return with_threads(cfg, _post_train)


def _post_train(cfg: PostConfig) -> dict:
    dist, out, device, own_group = start_run(cfg)
    t_session = time.perf_counter()

    tok = Tokenizer.from_file(cfg.tokenizer)
    data = TokenData.load(cfg.data_dir, "train", cfg.tokenizer)
    sampler = SequenceSampler(data, tok, cfg.data, seed=cfg.seed + 1000)  # other sequences than pre-training's
    draw = data.token_draw(tok.special_ids)
    val_batches = []
    if (Path(cfg.data_dir) / "val.meta.json").is_file() and cfg.eval_batches > 0:
        vs = SequenceSampler(TokenData.load(cfg.data_dir, "val", cfg.tokenizer), tok, cfg.data, seed=cfg.seed + 1)
        val_batches = list(eval_batches(vs, cfg.eval_batches, cfg.batch_size, cfg.eval_block_size, ar=False,
                                        seed=cfg.seed, shift=cfg.model.shift))

    torch.manual_seed(cfg.seed)
    net = Transformer(cfg.model).to(device)
    load_init(net, cfg)
    teacher = None
    if cfg.targets == "teacher":  # a frozen copy of the stage-2 model: stage 3 distils its trajectories
        teacher = Transformer(cfg.model).to(device)
        load_init(teacher, cfg)
        teacher.eval().requires_grad_(False)
    opt = make_optimizer(net, cfg, device)
    state = RunState(total_steps=None if cfg.max_minutes else cfg.max_steps)
    ck = latest_checkpoint(out)
    if ck is not None:
        state = load_train_checkpoint(ck, net, opt)
    if state.done:
        p = out / "summary.json"
        return json.loads(p.read_text()) if p.is_file() else {"steps": state.step}

    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    flex = device.type == "cuda" and cfg.compile
    module = TrainModule(net)
    logits_mod = module.logits
    teacher_mod = TrainModule(teacher).logits if teacher is not None else None
    if flex:
        module = torch.compile(module)
        logits_mod = torch.compile(TrainModule(net).logits)
        teacher_mod = torch.compile(teacher_mod) if teacher is not None else None
    eval_module = module
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        module = DDP(module, device_ids=[device.index] if device.type == "cuda" else None)
    L, bs = cfg.seq_len, cfg.block_size
    V = cfg.model.vocab_size
    ban = torch.zeros(V, dtype=torch.bool)
    ban[[i for i in tok.special_ids if i != tok.eos_id]] = True
    ban[tok.vocab_size:] = True
    ban = ban.to(device)
    special = [i for i in tok.special_ids if i != tok.eos_id]
    decoder = dict(fallback=cfg.fallback, revise=cfg.revise, eos_id=tok.eos_id)  # the sampler's block mode
    log = MetricsLog(out / "metrics.jsonl", state.step, dist.main)
    if dist.main:
        (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2, default=str))
    bar = None
    if dist.main and cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=state.total_steps, initial=state.step, unit="step", dynamic_ncols=True, desc=cfg.stage)
    budget_s = cfg.max_minutes * 60 if cfg.max_minutes else None
    total = state.total_steps or cfg.max_steps or 10**9
    acc: dict[str, float] = {}
    acc_n, t_log = 0, time.perf_counter()
    last_val = None
    stopped_early = False
    gen_t = torch.Generator(device=device)

    def add(name, value):
        acc[name] = acc.get(name, 0.0) + float(value)

    def checkpoint():
        if dist.main:
            save_train_checkpoint(out, net, tok, opt, state, cfg)

    if val_batches and dist.main and state.step == 0:  # the starting point of the curves
        last_val = evaluate(eval_module, val_batches, ar=False, device=device, flex=flex, autocast=autocast)["loss"]
        log.write({"step": 0, "val_loss": round(last_val, 5), "tokens": 0})
    try:
        while state.step < total:
            rollout_id = state.step // cfg.updates_per_rollout
            rng = sampler.rng(rollout_id, dist.rank, 0, 5)
            gen_t.manual_seed(int(rng.integers(2**62)))
            x0_np, anchor = sampler.batch(rollout_id, cfg.batch_size, dist.rank)
            x0 = torch.from_numpy(x0_np).to(device)
            offset = torch.from_numpy(anchor % bs).to(device)
            bid, nblk = block_layout(L, bs, offset)
            gen = generated_positions(x0, special, (tok.fim_middle_id, tok.eos_id) if cfg.fim_only else None)
            src = None
            if cfg.model.shift:  # x_0[0] has no position before it: never generated
                src = torch.from_numpy(shift_sources(L, bs, anchor % bs)).to(device)
                gen[:, 0] = False
            mask = batch_mask({"offset": offset, "bs": bs}, L, False, device, flex)
            pos = batch_positions(x0.shape[0], L, False, device)

            def logits_fn(xt, fn=logits_mod):
                with autocast:
                    return fn(torch.cat([xt, x0], 1), pos, mask, L, src)

            refs: dict = {}  # the data's syntax error counts, shared by every candidate's check

            def verify(c: Rollout) -> torch.Tensor:
                return torch.from_numpy(verify_blocks(tok, x0_np, c.y.cpu().numpy(), bid.cpu().numpy(),
                                                      c.tokens.cpu().numpy(), cfg.verify_context, refs)).to(device)

            net.eval()
            t0 = time.perf_counter()
            target = None  # the data
            if cfg.stage == "onpolicy":
                r = rollout(logits_fn, x0, gen, bid, nblk, mask_id=tok.mask_id, ban=ban, threshold=cfg.threshold,
                            **decoder)
                ok = verify(r)
                keep = torch.ones_like(ok)  # every block has on-track states; syntax_ok is reported
                greedy = r
            else:
                roll_fn = logits_fn if teacher_mod is None else partial(logits_fn, fn=teacher_mod)
                t_blk = torch.rand(x0.shape[0], nblk, device=device, generator=gen_t).clamp_(min=1e-3)
                u = torch.rand(x0.shape, device=device, generator=gen_t)
                cands, scores, oks = [], [], []
                for th, temp in cfg.distill_rules:
                    c = rollout(roll_fn, x0, gen, bid, nblk, mask_id=tok.mask_id, ban=ban, threshold=th,
                                temperature=temp, generator=gen_t, **decoder)
                    ok = verify(c)
                    sc = block_nelbo(roll_fn, c.y, gen, bid, nblk, mask_id=tok.mask_id, t=t_blk, u=u)
                    cands.append(c)
                    oks.append(ok)
                    scores.append(torch.where(ok, sc, torch.full_like(sc, float("inf"))))
                score = torch.stack(scores)  # (S, B, nblk)
                choice = score.argmin(0)
                keep = torch.isfinite(score.min(0).values)
                cp = choice.gather(1, bid)  # (B, L)
                r = Rollout(y=torch.stack([c.y for c in cands]).gather(0, cp[None])[0],
                            commit_step=torch.stack([c.commit_step for c in cands]).gather(0, cp[None])[0],
                            steps=torch.stack([c.steps for c in cands]).gather(0, choice[None])[0],
                            tokens=cands[0].tokens,
                            first=torch.stack([c.first for c in cands]).gather(0, cp[None])[0])
                greedy, ok = cands[0], oks[0]  # the first rule is the inference decoder: its figures are reported
                add("chosen_greedy", float(((choice == 0) & keep).sum()) / max(1, int(keep.sum())))
                if teacher_mod is not None:  # the student's own decoder is what the figures follow
                    target = r.y
                    t_has = greedy.tokens > 0
                    add("teacher_steps_per_token",
                        float(greedy.steps[t_has].sum()) / max(1, int(greedy.tokens[t_has].sum())))
                    greedy = rollout(logits_fn, x0, gen, bid, nblk, mask_id=tok.mask_id, ban=ban,
                                     threshold=cfg.threshold, **decoder)
                    ok = verify(greedy)
                    add("teacher_agree", float((gen & (greedy.y == r.y)).sum()) / max(1, int(gen.sum())))
            t_roll = time.perf_counter() - t0
            net.train()
            has = greedy.tokens > 0
            right = per_block((gen & (greedy.y == x0)).long(), bid, nblk)
            add("steps_per_token", float(greedy.steps[has].sum()) / max(1, int(greedy.tokens[has].sum())))
            add("syntax_ok", float(ok[has].float().mean()))
            add("token_acc", float(right[has].sum()) / max(1, int(greedy.tokens[has].sum())))
            add("exact_blocks", float((right == greedy.tokens)[has].float().mean()))
            add("on_track_share", float((on_track(greedy, x0, gen, bid, nblk) + 1)[has].sum())
                / max(1, int(greedy.steps[has].sum())))
            add("reward", float((right[has].float() / greedy.steps[has].clamp(min=1)).mean()))
            add("rollout_s", t_roll)

            for _ in range(cfg.updates_per_rollout):
                if state.step >= total:
                    break
                lr = lr_at(state.step, total, cfg)
                for g in opt.param_groups:
                    g["lr"] = lr
                b = post_batch(r, x0, gen, bid, keep, mask_id=tok.mask_id, keep_weight=cfg.post_keep_weight,
                               augment_max=cfg.augment_max if cfg.stage == "distill" else 0.0, draw=draw,
                               generator=gen_t, rng=rng, target=target, horizon=cfg.horizon)
                n_valid = b["valid"].sum().clamp(min=1)
                if cfg.teacher_kl > 0:
                    with torch.no_grad(), autocast:
                        ref = teacher_mod(b["idx"], pos, mask, L, src)
                    with autocast:
                        ce, kl = module(b["idx"], pos, mask, b["targets"], src, ref)
                    kl_loss = (kl * b["beyond"]).sum() / n_valid
                    add("teacher_kl", kl_loss.detach())
                else:
                    with autocast:
                        ce = module(b["idx"], pos, mask, b["targets"], src)
                    kl_loss = 0.0
                post_loss = (ce * b["weight"]).sum() / n_valid
                loss = post_loss + cfg.teacher_kl * kl_loss
                if cfg.data_weight > 0:
                    d = diffusion_batch(x0_np, anchor, bs, edit=False, ids=sampler.special, cfg=cfg.objective,
                                        rng=sampler.rng(state.step, dist.rank, 0, 6))
                    d = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in d.items()}
                    with autocast:
                        ced = module(d["idx"], pos, mask, d["targets"], src)
                    data_loss = loss_terms(ced, d)["loss"]
                    loss = loss + cfg.data_weight * data_loss
                    add("data_loss", data_loss.detach())
                loss.backward()
                gn = torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
                opt.step()
                opt.zero_grad(set_to_none=True)
                state.step += 1
                state.tokens += int(gen.sum()) * dist.world
                add("post_loss", post_loss.detach())
                add("grad_norm", gn.detach())
                add("lr", lr)
                acc_n += 1
                if bar is not None:
                    bar.update(1)
            n_roll = max(1, acc_n // max(1, cfg.updates_per_rollout))

            if state.step % cfg.log_every < cfg.updates_per_rollout or state.step >= total:
                now = time.perf_counter()
                state.train_seconds += now - t_log
                per_roll = {"steps_per_token", "syntax_ok", "token_acc", "exact_blocks", "on_track_share", "reward",
                            "rollout_s", "chosen_greedy", "teacher_steps_per_token", "teacher_agree"}
                rec = {"step": state.step, "stage": cfg.stage, "tokens": state.tokens,
                       "time": round(state.train_seconds, 3),
                       **{k: round(v / (n_roll if k in per_roll else max(1, acc_n)), 5) for k, v in acc.items()}}
                rec["loss"] = rec.get("post_loss", 0.0)
                log.write(rec)
                if bar is not None:
                    bar.set_postfix(spt=f"{rec['steps_per_token']:.3f}", reward=f"{rec['reward']:.2f}",
                                    acc=f"{rec['token_acc']:.2f}", refresh=False)
                acc.clear()
                acc_n, t_log = 0, time.perf_counter()
            if val_batches and dist.main and (state.step % cfg.eval_every < cfg.updates_per_rollout
                                              or state.step >= total):
                te = time.perf_counter()
                net.eval()
                last_val = evaluate(eval_module, val_batches, ar=False, device=device, flex=flex,
                                    autocast=autocast)["loss"]
                net.train()
                log.write({"step": state.step, "val_loss": round(last_val, 5), "tokens": state.tokens})
                t_log += time.perf_counter() - te
            if state.step % cfg.ckpt_every < cfg.updates_per_rollout and state.step < total:
                checkpoint()
            if budget_s is not None and time.perf_counter() - t_session > budget_s:
                stopped_early = state.step < total  # the session ends here; a rerun resumes
                break
            if cfg.stop_at_step is not None and state.step >= cfg.stop_at_step:
                stopped_early = state.step < total
                break
    finally:
        if bar is not None:
            bar.close()

    state.done = not stopped_early
    checkpoint()
    summary = {}
    if dist.main:
        size = export(out / "export", net, tok, cfg, state, cfg.stage)
        summary = post_summary(out, cfg, state, size, last_val)
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        try:
            from .plots import plot_post

            plot_post(out / "metrics.jsonl", out / "speedup.png", title=f"{out.name} ({cfg.stage})")
        except Exception as e:  # a plot must never cost a trained model
            print(f"warning: could not plot: {e}")
    end_run(own_group)
    return summary


def post_summary(out: Path, cfg: PostConfig, state: RunState, size: int, val: float | None) -> dict:
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    train = [r for r in recs if "steps_per_token" in r]
    vals = [r for r in recs if "val_loss" in r]
    first, last = (train[0], train[-1]) if train else ({}, {})
    spt0, spt1 = first.get("steps_per_token"), last.get("steps_per_token")
    return {"stage": cfg.stage, "targets": cfg.targets, "init": cfg.init, "steps": state.step, "train_seconds": round(state.train_seconds, 2),
            "steps_per_token_first": spt0, "steps_per_token_last": spt1,
            "rollout_speedup": (spt0 / spt1) if spt0 and spt1 else None,
            "token_acc_first": first.get("token_acc"), "token_acc_last": last.get("token_acc"),
            "teacher_agree_last": last.get("teacher_agree"),
            "val_loss_first": vals[0]["val_loss"] if vals else None, "val_loss_last": val,
            "export": str(out / "export"), "export_bytes": size, "seq_len": cfg.seq_len,
            "batch_size": cfg.batch_size, "block_size": cfg.block_size, "threshold": cfg.threshold}


__all__ = ["PostConfig", "post_train", "STAGES", "TARGETS"]
