"""The fused block update against its torch reference, state for state, over many random steps."""

import pytest
import torch

from dllm_ls.kernels.block_update import (BlockState, block_update_reference, block_update_triton,
                                          step_inputs_reference, step_inputs_triton)

EOS, MASK, V = 2, 3, 40


def _state(b, device, g, *, line: bool, done_ish: bool):
    n_active = int(torch.randint(1, b + 1, (1,), generator=g))
    active = torch.arange(b) < n_active
    masked = active & (torch.rand(b, generator=g) < (0.15 if done_ish else 0.9))
    blk = torch.randint(4, V, (b,), generator=g)
    blk[masked] = MASK
    prev = torch.randint(4, V, (b,), generator=g)
    newline = torch.zeros(V, dtype=torch.bool)
    newline[[5, 6, 7]] = True
    return BlockState(
        ids=torch.cat([prev, blk]).to(device), masked=masked.to(device), active=active.to(device),
        n_prev=torch.tensor(int(torch.randint(0, b + 1, (1,), generator=g)), device=device),
        gen=torch.tensor(int(torch.randint(0, 50, (1,), generator=g)), device=device),
        max_tok=torch.tensor(int(torch.randint(1, 80, (1,), generator=g)), device=device),
        pos=torch.tensor(int(torch.randint(1, 70, (1,), generator=g)), device=device),
        line_mode=torch.tensor(line, device=device), newline=newline.to(device),
        snap=torch.zeros(2 * b + 2, dtype=torch.long, device=device))


def _clone(st):
    return BlockState(**{k: v.clone() for k, v in vars(st).items()})


@pytest.mark.parametrize("b", [1, 5, 32])
@pytest.mark.parametrize("revise", [0.0, 0.5])
@pytest.mark.parametrize("rule,threshold,factor,fallback", [
    ("threshold", 0.5, 1.0, "mode"), ("threshold", 0.95, 1.0, "mode"), ("threshold", 0.95, 1.0, "leftmost"),
    ("threshold", 0.95, 1.0, "confident"), ("factor", 0.0, 1.0, "mode"), ("factor", 0.0, 3.0, "confident")])
def test_matches_the_reference(triton_device, b, rule, threshold, factor, fallback, revise):
    g = torch.Generator().manual_seed(b)
    finished = kept = lined = revised = 0
    for trial in range(12):
        st = _state(b, triton_device, g, line=trial % 2 == 1, done_ish=trial % 3 == 0)
        tokens = torch.randint(4, V, (b,), generator=g)
        tokens[torch.rand(b, generator=g) < 0.2] = EOS
        tokens[torch.rand(b, generator=g) < 0.2] = 6  # a line break
        conf = torch.rand(b, generator=g) * (0.3 if trial % 3 == 2 else 1.0)  # few commits: the block stays
        conf[:2] = conf[0]  # a tie
        tokens, conf = tokens.to(triton_device), conf.to(triton_device)
        ref = _clone(st)
        kw = dict(eos_id=EOS, mask_id=MASK, max_seq_len=64, rule=rule, threshold=threshold, factor=factor,
                  fallback=fallback, revise=revise)
        was = ref.ids[b:].clone(), ref.masked.clone()
        want = block_update_reference(tokens, conf, ref, **kw)
        got = block_update_triton(tokens, conf, st, **kw)
        assert got.tolist() == want.tolist(), trial
        for k, v in vars(ref).items():
            assert torch.equal(getattr(st, k), v), (trial, k)
        finished += int(ref.n_prev) > 0
        kept += int(ref.n_prev) == 0
        lined += trial % 2
        new_blk = ref.ids[:b] if int(ref.n_prev) > 0 else ref.ids[b:]  # a finished block moved to prev
        changed = int((~was[1] & (new_blk != was[0])).sum())  # committed tokens that changed
        revised += changed
        if revise == 0 or trial % 2 == 1:  # off, or line mode: only the fill after an eos
            assert changed == 0 or bool((new_blk == EOS).any()), trial
    assert finished and (kept or b == 1) and lined  # both outcomes of a step (b = 1 always finishes), line mode
    assert revised or revise == 0 or b == 1  # revisions happened (b = 1: a committed position is never read again)


def test_rejects_bad_blocks():
    st = _state(4, "cpu", torch.Generator().manual_seed(0), line=False, done_ish=False)
    with pytest.raises(ValueError, match="rule"):
        block_update_triton(torch.zeros(4, dtype=torch.long), torch.zeros(4), st, eos_id=EOS, mask_id=MASK,
                            max_seq_len=64, rule="nope")
    st.snap = torch.zeros(3, dtype=torch.long)
    with pytest.raises(ValueError, match="block_update"):
        block_update_triton(torch.zeros(4, dtype=torch.long), torch.zeros(4), st, eos_id=EOS, mask_id=MASK,
                            max_seq_len=64)


@pytest.mark.parametrize("b", [1, 3, 16])
def test_step_inputs_match_the_reference(triton_device, b):
    g = torch.Generator().manual_seed(b)
    for pos, n_prev in ((0, 0), (5, b), (60, b - 1), (63, 1)):  # 63: positions and slots clamp
        active = (torch.rand(b, generator=g) < 0.7).to(triton_device)
        args = (torch.tensor(pos, device=triton_device), torch.tensor(n_prev, device=triton_device), active)
        got = step_inputs_triton(*args, max_seq_len=64, capacity=66)
        want = step_inputs_reference(*args, max_seq_len=64, capacity=66)
        for x, y in zip(got, want):
            assert torch.equal(x, y), (pos, n_prev)
