"""Stage 3/4 rollouts in the training layout, their verifier and the training states drawn from them
(`trainer/post.py` runs the loop; its docstring describes the stages).

`rollout` runs the threshold decoder on every block of a batch of training sequences at once,
recording the step that committed each position; `state_at` rebuilds any intermediate state from
it; `block_nelbo` scores candidates; `verify_blocks` checks that a block opens no syntax error the
data's block lacks; `on_track` and `post_batch` turn a rollout into a training micro-batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..diffusion_core.tokenizer import Tokenizer


# --- rollouts -----------------------------------------------------------------------------------


FALLBACKS = ("leftmost", "confident")  # a rollout's commit when nothing passes (the sampler's block mode: leftmost)


@dataclass
class Rollout:
    y: torch.Tensor  # (B, L) final tokens (x0 where nothing is generated)
    commit_step: torch.Tensor  # (B, L) the step that committed each generated position; -1 elsewhere
    steps: torch.Tensor  # (B, nblk) steps of each block (0: nothing generated there)
    tokens: torch.Tensor  # (B, nblk) generated tokens of each block
    first: torch.Tensor  # (B, L) the token each position got when committed (before revisions)


def block_layout(L: int, bs: int, offset: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(block id of each position (B, L), number of block ids) for per-sequence offsets (B,)."""
    bid = (torch.arange(L, device=offset.device)[None, :] + bs - offset[:, None]) // bs
    return bid, (L - 1 + bs) // bs + 1


def generated_positions(x0: torch.Tensor, special_ids, middle: tuple[int, int] | None = None) -> torch.Tensor:
    """The positions a rollout writes: every token but the special ones (pad, FIM markers);
    <|eos|> ends a document and is generated like text. With middle = (fim_middle id, eos id):
    only the FIM middles, from the token after <|fim_middle|> to the <|eos|> that ends the middle
    (what the editor asks the model for; the rest of the sequence stays clean context)."""
    keep = torch.zeros_like(x0, dtype=torch.bool)
    for i in special_ids:
        keep |= x0 == i
    gen = ~keep
    if middle is not None:
        mid, eos = middle
        idx = torch.arange(x0.shape[1], device=x0.device).expand_as(x0)
        none = torch.full_like(idx, -1)
        last_mid = torch.where(x0 == mid, idx, none).cummax(1).values
        last_eos = torch.where(x0 == eos, idx, none).cummax(1).values  # an eos ends the middle after itself
        eos_before = torch.cat([none[:, :1], last_eos[:, :-1]], 1)
        gen &= (last_mid >= 0) & (last_mid > eos_before)
    return gen


def per_block(values: torch.Tensor, bid: torch.Tensor, nblk: int, reduce: str = "sum") -> torch.Tensor:
    out = torch.zeros(values.shape[0], nblk, dtype=values.dtype, device=values.device)
    return out.scatter_reduce(1, bid, values, reduce, include_self=reduce == "sum")


@torch.no_grad()
def rollout(logits_fn, x0: torch.Tensor, gen: torch.Tensor, bid: torch.Tensor, nblk: int, *, mask_id: int,
            ban: torch.Tensor, threshold: float, temperature: float = 0.0,
            generator: torch.Generator | None = None, fallback: str = "leftmost", revise: float = 0.0,
            eos_id: int | None = None) -> Rollout:
    """The threshold decoder on every block at once. logits_fn(x_t) -> (B, L, V) logits of the
    noisy half (the clean half, x0, is bound in it). temperature 0: the argmax and its
    probability (the sampler); > 0: the token is drawn from softmax(logits / temperature)
    (Gumbel-max) and its confidence is its probability under the model.

    As the sampler's block mode: a block where no masked position passes the threshold commits
    one, its leftmost masked position (`fallback="leftmost"`) or its most confident
    ("confident"); with `revise` > 0 and temperature 0, a position committed in an earlier step
    whose argmax now differs with confidence >= revise takes it (never to or from `eos_id`),
    after the commit rule. `Rollout.first` keeps the tokens as committed (`on_track` reads both)."""
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be one of {FALLBACKS}, not {fallback!r}")
    if revise > 0 and eos_id is None:
        raise ValueError("revision needs eos_id")
    xt = torch.where(gen, torch.full_like(x0, mask_id), x0)
    first = xt.clone()
    masked = gen.clone()
    commit_step = torch.full_like(x0, -1)
    idx = torch.arange(x0.shape[1], device=x0.device).expand_as(x0)
    step = 0
    while bool(masked.any()):
        logits = logits_fn(xt).float().masked_fill(ban, float("-inf"))
        logp = torch.log_softmax(logits, dim=-1)
        if temperature > 0:
            u = torch.rand(logits.shape, device=logits.device, generator=generator).clamp_(1e-10, 1.0)
            pred = (logits / temperature - torch.log(-torch.log(u))).argmax(-1)
            conf = logp.gather(-1, pred.unsqueeze(-1)).squeeze(-1).exp()
        else:
            best, pred = logp.max(-1)
            conf = best.exp()
        del logits, logp
        cm = torch.where(masked, conf, torch.full_like(conf, -1.0))
        if fallback == "confident":
            bmax = per_block(cm, bid, nblk, "amax").gather(1, bid)
            commit = masked & ((cm >= threshold) | (cm >= bmax))
        else:
            passes = masked & (cm >= threshold)
            none = per_block(passes.long(), bid, nblk, "amax").gather(1, bid) == 0
            left = per_block(torch.where(masked, idx, x0.shape[1]), bid, nblk, "amin").gather(1, bid)
            commit = passes | (masked & none & (idx == left))
        if revise > 0 and temperature == 0:
            rev = (gen & ~masked & (pred != xt) & (xt != eos_id) & (pred != eos_id) & (conf >= revise))
            xt = torch.where(rev, pred, xt)
        xt = torch.where(commit, pred, xt)
        first = torch.where(commit, pred, first)
        commit_step = torch.where(commit, torch.full_like(commit_step, step), commit_step)
        masked &= ~commit
        step += 1
    steps = per_block(commit_step + 1, bid, nblk, "amax")
    tokens = per_block(gen.long(), bid, nblk)
    return Rollout(y=torch.where(gen, xt, x0), commit_step=commit_step, steps=steps, tokens=tokens,
                   first=torch.where(gen, first, x0))


def state_at(r: Rollout, gen: torch.Tensor, bid: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Bool (B, L): masked in the state after k[b, blk] steps of each block."""
    return gen & (r.commit_step >= k.gather(1, bid))


def random_steps(steps: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """k ~ U{0, ..., steps - 1} per block (0 where a block has no steps)."""
    u = torch.rand(steps.shape, device=steps.device, generator=generator)
    return (u * steps.clamp(min=1)).long().clamp(max=(steps - 1).clamp(min=0))


@torch.no_grad()
def block_nelbo(logits_fn, y: torch.Tensor, gen: torch.Tensor, bid: torch.Tensor, nblk: int, *, mask_id: int,
                t: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """One-draw estimate of each block's NELBO (nats; lower is more likely) of y given the clean
    context: mask a generated position when u < t of its block, sum CE / t over masked positions.
    t (B, nblk) and u (B, L) are passed in so that candidates share the noise."""
    tp = t.gather(1, bid)
    masked = gen & (u < tp)
    xt = torch.where(masked, torch.full_like(y, mask_id), y)
    logits = logits_fn(xt).float()
    ce = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view_as(y)
    return per_block(torch.where(masked, ce / tp, torch.zeros_like(ce)), bid, nblk)


# --- the verifier ---------------------------------------------------------------------------------


def syntax_errors(text: str) -> int:
    """ERROR and MISSING nodes in tree-sitter's Python parse of text."""
    from ..diffusion_core.syntax_guard import python_parser

    tree = python_parser().parse(text.encode("utf-8", errors="replace"))
    if not tree.root_node.has_error:
        return 0
    n, stack = 0, [tree.root_node]
    while stack:
        node = stack.pop()
        if node.type == "ERROR" or node.is_missing:
            n += 1
        if node.has_error:
            stack.extend(node.children)
    return n


def verify_blocks(tok: Tokenizer, x0: np.ndarray, y: np.ndarray, bid: np.ndarray, tokens: np.ndarray,
                  context: int = 48, ref_cache: dict | None = None) -> np.ndarray:
    """Bool (B, nblk): the generated block opens no syntax error that the data's block lacks.
    ref_cache: a dict kept across calls on the same x0 (the data's counts, parsed once)."""
    ref_cache = {} if ref_cache is None else ref_cache
    B, L = x0.shape
    ok = np.zeros(tokens.shape, dtype=bool)
    for b in range(B):
        for k in np.flatnonzero(tokens[b]):
            where = np.flatnonzero(bid[b] == k)
            s, e = int(where[0]), int(where[-1]) + 1
            if np.array_equal(x0[b, s:e], y[b, s:e]):
                ok[b, k] = True
                continue
            lo, hi = max(0, s - context), min(L, e + context // 3)
            if (b, k) not in ref_cache:
                ref_cache[b, k] = syntax_errors(tok.decode(x0[b, lo:hi].tolist()))
            new = tok.decode(np.concatenate([x0[b, lo:s], y[b, s:e], x0[b, e:hi]]).tolist())
            ok[b, k] = syntax_errors(new) <= ref_cache[b, k]
    return ok


def on_track(r: Rollout, x0: torch.Tensor, gen: torch.Tensor, bid: torch.Tensor, nblk: int) -> torch.Tensor:
    """(B, nblk): the last step k whose state is still on track, i.e. every token committed before
    step k is the data's own (the step of the first wrong commit, capped at steps - 1). A token
    revised counts from its commit as wrong if it was wrong when committed or after revision."""
    wrong = gen & ((r.y != x0) | (r.first != x0))
    first_wrong = per_block(torch.where(wrong, r.commit_step, r.steps.gather(1, bid)), bid, nblk, "amin")
    return torch.minimum(first_wrong, r.steps - 1).clamp(min=0)


def post_batch(r: Rollout, x0: torch.Tensor, gen: torch.Tensor, bid: torch.Tensor, keep: torch.Tensor, *,
               mask_id: int, keep_weight: float, augment_max: float, draw, generator: torch.Generator,
               rng: np.random.Generator, target: torch.Tensor | None = None, horizon: int = 0) -> dict:
    """A training micro-batch of on-track states of the rollout `r`: for each block a step k ~
    U{0..on_track}, the state after k steps (every visible generated token is the target's), input
    [state ; x0], target `target` (default x0, the data; a teacher's rollout passes its own y, and
    then every state of it is on track, up to a token it later revised): masked positions weight 1,
    visible generated ones keep_weight, augmented (replaced) ones weight 1; blocks with keep False
    weigh nothing. With horizon h > 0 a masked position weighs 1 only when the trajectory committed
    it within h steps of the state (commit_step < k + h), else nothing: the state learns to commit
    what the trajectory commits next, in its order, not to guess the whole block from few tokens;
    those later positions are `beyond` (where `teacher_kl` matches the teacher's distribution)."""
    target = x0 if target is None else target
    nblk = r.steps.shape[1]
    k = random_steps(on_track(r, target, gen, bid, nblk) + 1, generator)
    masked = state_at(r, gen, bid, k)
    xt = torch.where(masked, torch.full_like(x0, mask_id), target)
    corrupted = torch.zeros_like(masked)
    if augment_max > 0:
        alpha = torch.as_tensor(rng.uniform(0.0, augment_max, r.steps.shape), device=x0.device, dtype=torch.float32)
        u = torch.rand(x0.shape, device=x0.device, generator=generator)
        corrupted = gen & ~masked & (u < alpha.gather(1, bid))
        n = int(corrupted.sum())
        if n:
            xt[corrupted] = torch.as_tensor(draw(rng, n), device=x0.device, dtype=xt.dtype)
    valid = gen & keep.gather(1, bid)
    w = torch.where(masked | corrupted, 1.0, keep_weight) * valid
    beyond = torch.zeros_like(masked)
    if horizon > 0:
        beyond = masked & valid & (r.commit_step >= k.gather(1, bid) + horizon)
        w = torch.where(beyond, 0.0, w)
    return {"idx": torch.cat([xt, x0], 1), "targets": target, "weight": w.float(), "masked": masked,
            "corrupted": corrupted, "valid": valid, "beyond": beyond}


__all__ = ["FALLBACKS", "Rollout", "rollout", "block_layout", "generated_positions", "per_block", "state_at",
           "random_steps", "block_nelbo", "syntax_errors", "verify_blocks", "on_track", "post_batch"]
