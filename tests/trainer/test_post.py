"""Post-training (trainer/post.py): rollouts, trajectory states, ELBO scoring, the verifier, the
surrogate loss, and both stages end to end on a tiny model (CPU)."""

import json

import numpy as np
import pytest
import torch

from dllm_ls.diffusion_core.checkpoint import load_checkpoint
from dllm_ls.diffusion_core.model import ModelConfig
from dllm_ls.diffusion_core.sampler import Sampler, SamplerConfig
from dllm_ls.trainer.objectives import TrainModule, batch_mask, batch_positions
from dllm_ls.trainer.post import PostConfig, post_train
from dllm_ls.trainer.rollouts import (block_layout, block_nelbo, generated_positions, on_track, post_batch, random_steps,
                                      rollout, state_at, syntax_errors, verify_blocks)
from dllm_ls.diffusion_core.tokenizer import Tokenizer
from dllm_ls.trainer.train import TrainConfig, TrainError, train

MASK = 1


def scripted(conf_by_pos: torch.Tensor, tokens: torch.Tensor, V: int = 16):
    """A logits function whose prediction at position i is tokens[i] with probability
    conf_by_pos[i] (the rest spread evenly), whatever the state."""
    def fn(xt):
        B, L = xt.shape
        p = ((1 - conf_by_pos) / (V - 1))[..., None].expand(B, L, V).clone()
        p.scatter_(-1, tokens[..., None].expand(B, L, 1), conf_by_pos[..., None].expand(B, L, 1))
        return p.log()
    return fn


@pytest.mark.parametrize("fallback", ["leftmost", "confident"])
def test_rollout_commits_by_the_threshold_at_least_one_per_block_and_records_the_order(fallback):
    B, L, bs, V = 1, 8, 4, 16
    x0 = torch.full((B, L), 7)
    tokens = torch.arange(8, 16).view(1, L)
    conf = torch.tensor([[0.95, 0.2, 0.3, 0.99, 0.1, 0.15, 0.12, 0.11]])
    bid, nblk = block_layout(L, bs, torch.zeros(B, dtype=torch.long))
    gen = torch.ones(B, L, dtype=torch.bool)
    gen[0, 6] = False  # a special token in the second block stays as it is
    ban = torch.zeros(V, dtype=torch.bool)
    r = rollout(scripted(conf, tokens), x0, gen, bid, nblk, mask_id=MASK, ban=ban, threshold=0.9, fallback=fallback)
    if fallback == "confident":
        # block 1 (positions 0-3): 0 and 3 pass the threshold at step 0, then 2 (0.3), then 1
        assert r.commit_step[0, :4].tolist() == [0, 2, 1, 0]
        # block 2 (positions 4-7, 6 not generated): one per step, most confident first: 5, 7, 4
        assert r.commit_step[0, 4:].tolist() == [2, 0, -1, 1]
    else:  # the sampler's block mode: one per step, left to right, where none passes
        assert r.commit_step[0, :4].tolist() == [0, 1, 2, 0]
        assert r.commit_step[0, 4:].tolist() == [0, 1, -1, 2]
    assert r.y[0].tolist() == [8, 9, 10, 11, 12, 13, 7, 15]
    assert r.steps[0, 1:3].tolist() == [3, 3] and r.tokens[0, 1:3].tolist() == [4, 3]
    assert (r.steps <= r.tokens).all()
    # the state after k steps of each block: masked where commit_step >= k
    k = torch.tensor([[0, 1, 2]])
    s = state_at(r, gen, bid, k)
    assert s[0].tolist() == ([False, True, True, False, True, False, False, False] if fallback == "confident"
                             else [False, True, True, False, False, False, False, True])


def test_rollout_revises_committed_tokens_as_the_sampler_and_on_track_sees_the_first_token():
    """Position 0 is committed as 9 at step 0; once position 1 is visible the model prefers 8 there
    (0.8): with revise 0.5 it takes 8 (the data's), with 0.9 or 0 it stays. Position 3 is eos and
    the model wants 12 there later: eos is never replaced. A temperature rollout never revises."""
    B, L, bs, V, EOS = 1, 4, 4, 16, 2
    x0 = torch.tensor([[8, 10, 11, EOS]])

    def fn(xt):
        seen = bool(xt[0, 1] != MASK)
        top = [(8, 0.8) if seen else (9, 0.95), (10, 0.92 if bool(xt[0, 0] != MASK) else 0.5), (11, 0.6),
               (12, 0.97) if seen else (EOS, 0.97)]
        p = torch.empty(1, L, V)
        for i, (t, q) in enumerate(top):
            p[0, i] = (1 - q) / (V - 1)
            p[0, i, t] = q
        return p.log()

    bid, nblk = block_layout(L, bs, torch.zeros(B, dtype=torch.long))
    gen = torch.ones(B, L, dtype=torch.bool)
    ban = torch.zeros(V, dtype=torch.bool)
    run = lambda **kw: rollout(fn, x0, gen, bid, nblk, mask_id=MASK, ban=ban, threshold=0.9, eos_id=EOS, **kw)  # noqa: E731
    r = run(revise=0.5)
    assert r.commit_step[0].tolist() == [0, 1, 2, 0]
    assert r.y[0].tolist() == [8, 10, 11, EOS] and r.first[0].tolist() == [9, 10, 11, EOS]
    for kw in (dict(revise=0.9), dict(revise=0.0), dict(revise=0.5, temperature=1e-4)):
        assert run(**kw).y[0].tolist() == [9, 10, 11, EOS], kw
    # the first token committed (9) was wrong: no state after step 0 is on track, although y is right
    assert on_track(r, x0, gen, bid, nblk)[0, 1] == 0
    with pytest.raises(ValueError):
        rollout(fn, x0, gen, bid, nblk, mask_id=MASK, ban=ban, threshold=0.9, revise=0.5)  # no eos_id


def test_generated_positions_everywhere_or_the_fim_middles_only():
    PAD, SUF, PRE, MID, EOS = 0, 4, 3, 5, 2
    x0 = torch.tensor([[SUF, 9, PRE, 8, MID, 10, 11, EOS, 12, 13, SUF, 9, PRE, 8, MID, 14, EOS, PAD]])
    everywhere = generated_positions(x0, [PAD, SUF, PRE, MID])
    assert everywhere[0].tolist() == [x not in (PAD, SUF, PRE, MID) for x in x0[0].tolist()]
    middles = generated_positions(x0, [PAD, SUF, PRE, MID], (MID, EOS))
    assert torch.nonzero(middles[0]).flatten().tolist() == [5, 6, 7, 15, 16]  # a plain segment (12, 13) is context


def test_random_steps_stay_inside_each_trajectory():
    steps = torch.tensor([[0, 1, 5, 32]] * 50)
    k = random_steps(steps, torch.Generator().manual_seed(0))
    assert (k >= 0).all() and (k[:, 1] == 0).all() and (k[:, 2] <= 4).all() and (k[:, 3] <= 31).all()
    assert len(set(k[:, 3].tolist())) > 10


def test_block_nelbo_prefers_what_the_model_predicts():
    B, L, bs = 1, 8, 4
    tokens = torch.arange(8, 16).view(1, L)
    fn = scripted(torch.full((B, L), 0.8), tokens)
    bid, nblk = block_layout(L, bs, torch.zeros(B, dtype=torch.long))
    gen = torch.ones(B, L, dtype=torch.bool)
    t, u = torch.full((B, nblk), 0.999), torch.zeros(B, L)  # everything masked
    good = block_nelbo(fn, tokens, gen, bid, nblk, mask_id=MASK, t=t, u=u)
    other = tokens.clone()
    other[0, 5] = 3
    bad = block_nelbo(fn, other, gen, bid, nblk, mask_id=MASK, t=t, u=u)
    assert torch.allclose(good[0, 1], bad[0, 1]) and bad[0, 2] > good[0, 2] + 1


def test_syntax_errors_and_the_block_verifier(tiny_tok):
    assert syntax_errors("def f(x):\n    return x + 1\n") == 0
    assert syntax_errors("def f(x:\n    return x +\n") > 0
    tok = tiny_tok
    ref = "def f(x):\n    y = x + 1\n    return y\n"
    ids = tok.encode(ref)
    L = len(ids)
    x0 = np.asarray([ids, ids])
    bid = np.zeros((2, L), dtype=np.int64)
    tokens = np.asarray([[L], [L]])
    broken = np.asarray(tok.encode("def f(x):\n    y = x + (\n    return y\n"))
    y = x0.copy()
    if len(broken) == L:
        y[1] = broken
    else:  # tokenisation differs in length: compare whole windows of equal length instead
        y = np.asarray([ids, (broken.tolist() + [ids[-1]] * L)[:L]])
    ok = verify_blocks(tok, x0, y, bid, tokens, context=8)
    assert ok[0, 0] and not ok[1, 0]


def test_post_batch_weights_states_and_augmentation():
    B, L, bs = 2, 8, 4
    tokens = torch.arange(8, 16).view(1, L).expand(B, L)
    x0 = tokens.clone()  # the rollout writes the data: every state is on track
    conf = torch.tensor([[0.95, 0.2, 0.3, 0.99, 0.1, 0.15, 0.12, 0.11]]).expand(B, L)
    bid, nblk = block_layout(L, bs, torch.zeros(B, dtype=torch.long))
    gen = torch.ones(B, L, dtype=torch.bool)
    r = rollout(scripted(conf, tokens), x0, gen, bid, nblk, mask_id=MASK, ban=torch.zeros(16, dtype=torch.bool),
                threshold=0.9)
    keep = torch.ones(B, nblk, dtype=torch.bool)
    keep[1, 2] = False
    g = torch.Generator().manual_seed(0)
    draw = lambda rng, n: rng.integers(2, 6, n)  # noqa: E731
    b = post_batch(r, x0, gen, bid, keep, mask_id=MASK, keep_weight=0.1, augment_max=0.0, draw=draw, generator=g,
                   rng=np.random.default_rng(0))
    assert (b["targets"] == x0).all() and (b["idx"][:, L:] == x0).all()
    xt, w, m = b["idx"][:, :L], b["weight"], b["masked"]
    assert (xt[m] == MASK).all() and (xt[~m] == x0[~m]).all()
    assert (w[m & keep.gather(1, bid)] == 1).all() and (w[1, 4:] == 0).all()
    assert torch.allclose(w[~m & keep.gather(1, bid)], torch.tensor(0.1))
    b = post_batch(r, x0, gen, bid, keep, mask_id=MASK, keep_weight=0.1, augment_max=1.0, draw=draw, generator=g,
                   rng=np.random.default_rng(1))
    c = b["corrupted"]
    assert c.any() and not (c & b["masked"]).any()
    assert (b["idx"][:, :L][c] < 6).all() and (b["weight"][c & keep.gather(1, bid)] == 1).all()


# --- end to end on a tiny model ------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_data):
    """Tokenised data and a stage-2 export of a tiny model trained for a few steps."""
    root = tmp_path_factory.mktemp("post")
    tiny_data(root)
    tok = Tokenizer.from_file(root / "tokenizer.json")
    model = ModelConfig(vocab_size=512, n_layer=2, n_head=2, dim=32, max_seq_len=64)
    cfg = TrainConfig(data_dir=str(root / "data"), tokenizer=str(root / "tokenizer.json"), out_dir=str(root / "pre"),
                      model=model, seq_len=64, batch_size=4, max_steps=12, warmup_steps=2, edit_frac=0.25,
                      eval_every=100, eval_batches=1, log_every=1, ckpt_every=100, progress=False, threads=1)
    train(cfg)
    return root, model, tok


@pytest.fixture(scope="module")
def tiny_tok(run):
    return run[2]


def post_config(root, model, stage, out, **kw) -> PostConfig:
    base = dict(stage=stage, init=str(root / "pre" / "export"), data_dir=str(root / "data"),
                tokenizer=str(root / "tokenizer.json"), out_dir=str(out), model=model, seq_len=64, batch_size=4,
                block_size=8, max_steps=6, eval_every=4, eval_batches=1, log_every=1, ckpt_every=100,
                progress=False, threads=1, updates_per_rollout=2)
    return PostConfig(**{**base, **kw})


@pytest.mark.parametrize("stage,fim_only,targets,horizon,kl", [
    ("onpolicy", False, "", 0, 0.0), ("distill", False, "", 2, 0.0), ("distill", False, "", 2, 1.0),
    ("distill", False, "data", 0, 0.0), ("onpolicy", True, "", 0, 0.0)])
def test_both_stages_train_report_and_export(run, tmp_path, stage, fim_only, targets, horizon, kl):
    root, model, _ = run
    summary = post_train(post_config(root, model, stage, tmp_path / stage, fim_only=fim_only, targets=targets,
                                     horizon=horizon, teacher_kl=kl))
    assert summary["targets"] == ("teacher" if stage == "distill" and not targets else "data")
    recs = [json.loads(x) for x in (tmp_path / stage / "metrics.jsonl").read_text().splitlines()]
    train_recs = [r for r in recs if "steps_per_token" in r]
    assert train_recs and all(0 < r["steps_per_token"] <= 1 and 0 <= r["token_acc"] <= 1 and r["reward"] >= 0
                              and 0 <= r["syntax_ok"] <= 1 for r in train_recs)
    teacher = summary["targets"] == "teacher"  # the teacher's figures beside the student's
    assert all(("teacher_agree" in r) == teacher and ("teacher_steps_per_token" in r) == teacher
               for r in train_recs)
    if teacher:
        assert all(0 < r["teacher_steps_per_token"] <= 1 and 0 <= r["teacher_agree"] <= 1 for r in train_recs)
        assert train_recs[0]["teacher_agree"] == 1.0  # one rollout in, student and teacher are one model
    # the KL to the teacher is logged where it is trained: ~0 at the first update (one model), then >= 0
    assert all(("teacher_kl" in r) == (kl > 0) for r in train_recs)
    if kl:
        assert abs(train_recs[0]["teacher_kl"]) < 1e-3 and all(r["teacher_kl"] >= -1e-4 for r in train_recs)
    assert [r for r in recs if "val_loss" in r][0]["step"] == 0  # the starting point is on the curve
    assert summary["steps"] == 6 and summary["stage"] == stage and (tmp_path / stage / "speedup.png").is_file()
    m, tok = load_checkpoint(tmp_path / stage / "export")
    c = Sampler(m, tok, SamplerConfig(block_size=8, max_tokens=8)).complete("def f(x):\n", "", mode="block")
    assert c.trace.steps >= 1


def test_post_training_resumes_exactly(run, tmp_path):
    root, model, _ = run
    post_train(post_config(root, model, "onpolicy", tmp_path / "a"))
    post_train(post_config(root, model, "onpolicy", tmp_path / "b", stop_at_step=2))
    post_train(post_config(root, model, "onpolicy", tmp_path / "b"))
    la, lb = (load_checkpoint(tmp_path / x / "export")[0].state_dict() for x in "ab")
    assert all(torch.allclose(la[k].float(), lb[k].float(), atol=1e-3) for k in la)


def test_the_surrogate_raises_the_confidence_of_the_right_tokens_at_visited_states(run):
    """One rollout of the tiny model, then a few steps of the stage-4 loss on its on-track states:
    the model's probability of the data's tokens at still-masked positions rises (what makes more
    positions pass the threshold per step, rightly)."""
    root, model_cfg, tok = run
    torch.manual_seed(0)
    net, _ = load_checkpoint(root / "pre" / "export", dtype=torch.float32)
    from dllm_ls.trainer.data import SequenceConfig, SequenceSampler, TokenData

    data = TokenData.load(root / "data", "train", root / "tokenizer.json")
    x0_np, anchor = SequenceSampler(data, tok, SequenceConfig(seq_len=64), seed=3).batch(0, 4)
    x0 = torch.from_numpy(x0_np)
    bs, L = 8, 64
    offset = torch.from_numpy(anchor % bs)
    bid, nblk = block_layout(L, bs, offset)
    gen = generated_positions(x0, [i for i in tok.special_ids if i != tok.eos_id])
    mask = batch_mask({"offset": offset, "bs": bs}, L, False, "cpu", False)
    pos = batch_positions(4, L, False, "cpu")
    module = TrainModule(net)
    fn = lambda xt: module.logits(torch.cat([xt, x0], 1), pos, mask, L)  # noqa: E731
    ban = torch.zeros(512, dtype=torch.bool)
    ban[[i for i in tok.special_ids if i != tok.eos_id]] = True
    with torch.no_grad():
        r = rollout(fn, x0, gen, bid, nblk, mask_id=tok.mask_id, ban=ban, threshold=0.9)
    keep = torch.ones(4, nblk, dtype=torch.bool)
    g = torch.Generator().manual_seed(1)
    probe = post_batch(r, x0, gen, bid, keep, mask_id=tok.mask_id, keep_weight=0.1, augment_max=0.0, draw=None,
                       generator=g, rng=np.random.default_rng(0))

    def mean_logp():
        with torch.no_grad():
            lp = torch.log_softmax(module.logits(probe["idx"], pos, mask, L), -1)
            return float(lp.gather(-1, x0[..., None])[..., 0][probe["masked"]].mean())

    before = mean_logp()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    for _ in range(5):
        b = post_batch(r, x0, gen, bid, keep, mask_id=tok.mask_id, keep_weight=0.1, augment_max=0.0, draw=None,
                       generator=g, rng=np.random.default_rng(0))
        ce = module(b["idx"], pos, mask, b["targets"])
        ((ce * b["weight"]).sum() / b["valid"].sum()).backward()
        opt.step()
        opt.zero_grad()
    assert mean_logp() > before + 0.1


def test_targets_default_per_stage_and_bad_ones_are_refused(run):
    root, model, _ = run
    assert post_config(root, model, "distill", "x").targets == "teacher"
    assert post_config(root, model, "onpolicy", "x").targets == "data"
    assert post_config(root, model, "distill", "x", targets="data").targets == "data"
    with pytest.raises(TrainError, match="on-policy targets are the data"):
        post_config(root, model, "onpolicy", "x", targets="teacher")
    with pytest.raises(TrainError, match="targets must be one of"):
        post_config(root, model, "distill", "x", targets="self")
    with pytest.raises(TrainError, match="horizon must be >= 0"):
        post_config(root, model, "distill", "x", horizon=-1)
    with pytest.raises(TrainError, match="teacher_kl must be >= 0"):
        post_config(root, model, "distill", "x", horizon=2, teacher_kl=-1.0)
    for kw in (dict(horizon=0), dict(horizon=2, targets="data")):  # nothing beyond a horizon, or no teacher
        with pytest.raises(TrainError, match="teacher_kl anchors"):
            post_config(root, model, "distill", "x", teacher_kl=1.0, **kw)


def test_distill_rules_from_the_command_line():
    from dllm_ls.trainer.cli import TrainCliError, _rules

    assert _rules("0.9:0,0.5:0.7") == ((0.9, 0.0), (0.5, 0.7))
    for bad in ("0.9", "0.9:x", "1.5:0", "0.9:-1", ""):
        with pytest.raises(TrainCliError, match="--distill-rules"):
            _rules(bad)


def test_teacher_targets_make_every_state_of_its_trajectory_a_training_state():
    """With the teacher's output y as the target, a state after k steps shows y's tokens, even
    where y is not the data: every step of the trajectory is on track, and the targets are y."""
    B, L, bs = 1, 8, 4
    x0 = torch.arange(8, 16).view(1, L)
    tokens = x0.clone()
    tokens[0, 0] = 3  # the teacher's first commit is not the data's token
    conf = torch.tensor([[0.95, 0.2, 0.3, 0.99, 0.1, 0.15, 0.12, 0.11]])
    bid, nblk = block_layout(L, bs, torch.zeros(B, dtype=torch.long))
    gen = torch.ones(B, L, dtype=torch.bool)
    r = rollout(scripted(conf, tokens), x0, gen, bid, nblk, mask_id=MASK, ban=torch.zeros(16, dtype=torch.bool),
                threshold=0.9)
    keep = torch.ones(B, nblk, dtype=torch.bool)
    g = torch.Generator().manual_seed(0)
    seen_data, seen_teacher, later = set(), set(), 0
    for i in range(40):
        kw = dict(mask_id=MASK, keep_weight=0.1, augment_max=0.0, draw=None, generator=g,
                  rng=np.random.default_rng(i))
        d = post_batch(r, x0, gen, bid, keep, **kw)
        t = post_batch(r, x0, gen, bid, keep, target=r.y, **kw)
        seen_data.add(int(d["masked"][0, :4].sum()))
        seen_teacher.add(int(t["masked"][0, :4].sum()))
        assert (t["targets"] == r.y).all() and (t["idx"][:, L:] == x0).all()  # the context stays the data
        xt = t["idx"][:, :L]
        assert (xt[t["masked"]] == MASK).all() and (xt[~t["masked"]] == r.y[~t["masked"]]).all()
        h = post_batch(r, x0, gen, bid, keep, target=r.y, horizon=1, **kw)  # the next step's commits only
        for blk in range(1, nblk):
            m = h["masked"][0] & (bid[0] == blk)
            if m.any():
                nxt = m & (r.commit_step[0] == r.commit_step[0][m].min())
                assert (h["weight"][0][nxt] == 1).all() and (h["weight"][0][m & ~nxt] == 0).all()
                assert (h["beyond"][0][m] == ~nxt[m]).all()  # where the teacher KL applies instead
                later += int((m & ~nxt).sum())
    assert later > 0  # still-masked positions committed later than the next step weigh nothing
    assert not t["beyond"].any()  # without a horizon every masked position has its target
    assert seen_data == {4}  # against the data only the all-mask state of block 1 is on track
    assert seen_teacher == {4, 2, 1}  # against the teacher's y: all three states (steps 0, 1, 2)


@pytest.mark.parametrize("horizon", [0, 2])
def test_distilling_the_teachers_trajectories_cuts_the_students_steps(run, horizon):
    """Stage 3's loss on a frozen tiny model's own rollouts: after a few updates the student
    decodes the same batch in fewer steps per token, and writes what the teacher wrote (with a
    horizon of 2 steps too: each state learns the teacher's next two steps' commits)."""
    root, model_cfg, tok = run
    torch.manual_seed(0)
    teacher, _ = load_checkpoint(root / "pre" / "export", dtype=torch.float32)
    net, _ = load_checkpoint(root / "pre" / "export", dtype=torch.float32)
    from dllm_ls.trainer.data import SequenceConfig, SequenceSampler, TokenData

    data = TokenData.load(root / "data", "train", root / "tokenizer.json")
    x0_np, anchor = SequenceSampler(data, tok, SequenceConfig(seq_len=64), seed=5).batch(0, 4)
    x0 = torch.from_numpy(x0_np)
    bs, L = 8, 64
    offset = torch.from_numpy(anchor % bs)
    bid, nblk = block_layout(L, bs, offset)
    gen = generated_positions(x0, [i for i in tok.special_ids if i != tok.eos_id])
    mask = batch_mask({"offset": offset, "bs": bs}, L, False, "cpu", False)
    pos = batch_positions(4, L, False, "cpu")
    ban = torch.zeros(512, dtype=torch.bool)
    ban[[i for i in tok.special_ids if i != tok.eos_id]] = True
    module = TrainModule(net)

    def roll(m):
        fn = lambda xt: TrainModule(m).logits(torch.cat([xt, x0], 1), pos, mask, L)  # noqa: E731
        with torch.no_grad():
            return rollout(fn, x0, gen, bid, nblk, mask_id=tok.mask_id, ban=ban, threshold=0.9)

    def steps_per_token(r):
        return float(r.steps.sum()) / float(r.tokens.sum())

    r = roll(teacher)
    keep = torch.ones(4, nblk, dtype=torch.bool)
    g = torch.Generator().manual_seed(1)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    for i in range(60):
        b = post_batch(r, x0, gen, bid, keep, mask_id=tok.mask_id, keep_weight=0.1, augment_max=0.1,
                       draw=data.token_draw(tok.special_ids), generator=g, rng=np.random.default_rng(i), target=r.y,
                       horizon=horizon)
        ce = module(b["idx"], pos, mask, b["targets"])
        ((ce * b["weight"]).sum() / b["valid"].sum()).backward()
        opt.step()
        opt.zero_grad()
    s = roll(net)
    assert steps_per_token(s) < 0.5 * steps_per_token(r)
    assert float((s.y == r.y)[gen].float().mean()) > 0.9


def test_on_track_stops_before_the_first_wrong_commit():
    B, L, bs = 1, 8, 4
    x0 = torch.arange(8, 16).view(1, L)
    tokens = x0.clone()
    tokens[0, 2] = 3  # position 2 (committed at step 1 below) is wrong
    conf = torch.tensor([[0.95, 0.2, 0.3, 0.99, 0.1, 0.15, 0.12, 0.11]])
    bid, nblk = block_layout(L, bs, torch.zeros(B, dtype=torch.long))
    gen = torch.ones(B, L, dtype=torch.bool)
    r = rollout(scripted(conf, tokens), x0, gen, bid, nblk, mask_id=MASK, ban=torch.zeros(16, dtype=torch.bool),
                threshold=0.9, fallback="confident")
    t = on_track(r, x0, gen, bid, nblk)
    assert t[0, 1] == 1  # states 0 and 1 hold only right tokens; state 2 holds the wrong one
    assert t[0, 2] == r.steps[0, 2] - 1  # all right: every state


def test_post_training_under_torchrun_and_resume_at_another_world_size(tmp_path):
    """Stage 4 on two gloo ranks (the DDP path of a multi-GPU run) for half the run, from a smoke
    export; one process resumes from their checkpoint and finishes it."""
    import os
    import socket
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    smoke = [sys.executable, "-m", "dllm_ls.cli", "train", "--smoke", "--out", str(tmp_path), "--no-progress"]
    r = subprocess.run([*smoke, "--max-steps", "6"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    post = ["-m", "dllm_ls.cli", "train", "--smoke", "--out", str(tmp_path), "--no-progress", "--stage", "onpolicy",
            "--init", str(tmp_path / "diffusion" / "export"), "--max-steps", "4", "--batch-size", "2"]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
                        *post, "--stop-at-step", "2"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "onpolicy"
    assert json.loads((out / "summary.json").read_text())["steps"] == 2
    r = subprocess.run([sys.executable, *post], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((out / "summary.json").read_text())["steps"] == 4
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if "steps_per_token" in r][-1] == 4
