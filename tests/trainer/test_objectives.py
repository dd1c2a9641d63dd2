"""The block-diffusion training mask, its agreement with inference, the ELBO, the edit corruption, data."""

import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch

from dllm_ls.diffusion_core.kv_cache import KVCache
from dllm_ls.diffusion_core.model import ModelConfig, Transformer
from dllm_ls.diffusion_core.tokenizer import train_tokenizer
from dllm_ls.trainer.data import SequenceConfig, SequenceSampler, TokenData
from dllm_ls.trainer.objectives import (ObjectiveConfig, SpecialIds, TokenDraw, TrainModule, ar_batch,
                                        attention_pairs, batch_positions, causal_mask, corrupt_blocks, flex_block_mask,
                                        diffusion_batch, edit_corrupt, elbo_weight, q_xt, sample_t,
                                        training_block_mask, training_mask, training_mask_mod)

IDS = SpecialIds(pad=0, mask=1, eos=2)


def levenshtein(a, b) -> int:
    a, b = list(a), list(b)
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def blocks_of(L, bs, offset):
    """Block boundaries written out independently of block_ids: cuts at offset % bs + k * bs."""
    cuts = [0] + [c for c in range(offset % bs, L, bs) if c > 0] + [L]
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]


def block_of(i, blocks):
    return next(k for k, (a, b) in enumerate(blocks) if a <= i < b)


# --- the mask ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("L,bs,offset", [(16, 4, 0), (16, 4, 3), (24, 8, 13), (12, 1, 0), (16, 16, 5)])
def test_training_mask_structure(L, bs, offset):
    m = training_mask(L, bs, torch.tensor([offset]))[0, 0]  # (2L, 2L)
    blocks = blocks_of(L, bs, offset)
    for i in range(L):
        bi = block_of(i, blocks)
        start = blocks[bi][0]
        for j in range(L):
            # noisy i sees noisy j of its own block only (bidirectionally)
            assert m[i, j] == (block_of(j, blocks) == bi), (i, j)
            # noisy i sees the clean tokens before its block, nothing at or after its start
            assert m[i, L + j] == (j < start), (i, j)
            # clean tokens are causal and never see noisy ones
            assert m[L + i, L + j] == (j <= i)
            assert not m[L + i, j]


def test_flex_mask_mod_equals_bool_mask():
    L, bs = 32, 8
    offsets = torch.tensor([0, 5, 7])
    dense = training_mask(L, bs, offsets)[:, 0]  # (B, 2L, 2L)
    mod = training_mask_mod(L, bs, offsets)
    b = torch.arange(3)[:, None, None]
    q = torch.arange(2 * L)[None, :, None]
    k = torch.arange(2 * L)[None, None, :]
    assert torch.equal(mod(b, torch.zeros_like(b), q, k), dense)


@pytest.mark.parametrize("L", [64, 256])  # 256: the block mask from tile ranges (training_block_mask)
def test_flex_attention_equals_sdpa_on_cpu(L):
    flex = pytest.importorskip("torch.nn.attention.flex_attention")
    bs = 8
    offsets = torch.tensor([0, 3])
    bm = flex_block_mask(L, bs, offsets, compile=False)
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 2 * L, 16) for _ in range(3))
    y = flex.flex_attention(q, k, v, block_mask=bm)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=training_mask(L, bs, offsets))
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("L,bs", [(128, 1), (256, 4), (256, 32), (384, 8), (256, 128), (128, 256)])
def test_block_mask_from_tile_ranges_equals_create_block_mask(L, bs):
    """training_block_mask (tiles classified from block-id ranges) == create_block_mask's
    evaluation of the mask_mod, tile by tile: counts and indices, kv and q sides."""
    flex = pytest.importorskip("torch.nn.attention.flex_attention")
    offsets = torch.tensor([0, 1, bs - 1, 37 % bs])
    a = training_block_mask(L, bs, offsets)
    b = flex.create_block_mask(training_mask_mod(L, bs, offsets), 4, None, 2 * L, 2 * L, device="cpu", _compile=False)
    for num, ind in [("kv_num_blocks", "kv_indices"), ("full_kv_num_blocks", "full_kv_indices"),
                     ("q_num_blocks", "q_indices"), ("full_q_num_blocks", "full_q_indices")]:
        n = getattr(a, num)
        assert torch.equal(n, getattr(b, num)), num
        used = torch.arange(getattr(a, ind).shape[-1]) < n[..., None]
        assert torch.equal(getattr(a, ind)[used], getattr(b, ind)[used]), ind
    assert (a.kv_num_blocks > 0).any() and ((a.full_kv_num_blocks > 0).any() or L == 128)  # one tile a half: none full


def test_attention_pairs_counts_the_mask():
    for L, bs in [(16, 4), (32, 8), (24, 24)]:
        assert attention_pairs(L, bs) == int(training_mask(L, bs, torch.tensor([0])).sum())
    assert attention_pairs(16, 1, ar=True) == int(causal_mask(16).sum())


@pytest.mark.parametrize("bs,offset", [(4, 0), (4, 5), (8, 3)])
def test_training_logits_equal_kv_cache_steps(bs, offset):
    """The noisy half under the training mask == Transformer.step block by block with a KV cache."""
    torch.manual_seed(0)
    net = Transformer(ModelConfig.from_name("test")).eval()
    L = 24
    g = torch.Generator().manual_seed(1)
    x0 = torch.randint(6, 512, (1, L), generator=g)
    xt = torch.where(torch.rand(1, L, generator=g) < 0.5, torch.tensor(IDS.mask), x0)
    xt[0, 3] = 77  # an unmasked position that differs from x_0 (edit stage)
    idx = torch.cat([xt, x0], dim=1)
    pos = batch_positions(1, L, False, "cpu")
    mask = training_mask(L, bs, torch.tensor([offset]))
    with torch.no_grad():
        train_logits = TrainModule(net).logits(idx, pos, mask, L)[0]  # (L, V)
        full = net(idx, pos, mask=mask)[0, :L]  # the model's own forward agrees with the wrapper
    torch.testing.assert_close(train_logits, full, atol=1e-5, rtol=1e-5)
    cache = KVCache.for_model(net)
    prev = 0
    for a, b in blocks_of(L, bs, offset):
        step_logits = net.step(x0[:, prev:a], xt[:, a:b], cache)[0]  # clean tokens since the last block
        prev = a
        torch.testing.assert_close(step_logits, train_logits[a:b], atol=1e-5, rtol=1e-5)


def test_ar_training_matches_extend():
    """AR: causal logits at i (trained to predict x_0[i+1]) == Transformer.extend one token at a time."""
    torch.manual_seed(0)
    net = Transformer(ModelConfig.from_name("test", causal=True)).eval()
    L = 12
    x0 = torch.randint(6, 512, (1, L))
    with torch.no_grad():
        logits = TrainModule(net).logits(x0, batch_positions(1, L, True, "cpu"), causal_mask(L), L)[0]
    cache = KVCache.for_model(net)
    for i in range(L):
        torch.testing.assert_close(net.extend(x0[:, i:i + 1], cache)[0], logits[i], atol=1e-5, rtol=1e-5)
    b = ar_batch(x0.numpy(), IDS)
    assert torch.equal(b["targets"][0, :-1], x0[0, 1:]) and not b["valid"][0, -1]


# --- noise and the ELBO -----------------------------------------------------------------------------


def test_sample_t_is_stratified_in_range():
    t = sample_t(4, 8, 1e-3, np.random.default_rng(0))
    assert t.shape == (4, 8) and t.min() >= 1e-3 and t.max() < 1
    gaps = np.diff(np.sort(t.ravel()))
    np.testing.assert_allclose(gaps, (1 - 1e-3) / 32, rtol=1e-6)  # one draw per stratum


def test_q_xt_masking_rate_and_pads():
    rng = np.random.default_rng(0)
    x = rng.integers(6, 500, (64, 256))
    maskable = np.ones_like(x, dtype=bool)
    maskable[:, 200:] = False  # pad
    for t in (0.1, 0.5, 0.9):
        xt, masked = q_xt(x, np.full(x.shape, t), IDS.mask, maskable, rng)
        assert abs(masked[:, :200].mean() - t) < 0.01
        assert not masked[:, 200:].any()
        assert (xt[masked] == IDS.mask).all() and (xt[~masked] == x[~masked]).all()


def test_elbo_weight_gives_the_nll_of_a_known_model():
    """For a model whose CE is c at every masked token, E[sum_masked c/t] / n = c (the NELBO is exact)."""
    assert elbo_weight(0.25) == 4.0
    rng = np.random.default_rng(0)
    c = 2.5
    est = []
    for s in range(60):
        x0 = rng.integers(6, 500, (8, 128))
        x0[:, 120:] = IDS.pad
        b = diffusion_batch(x0, rng.integers(0, 64, 8), [4, 8, 16, 32][s % 4], edit=False, ids=IDS,
                            cfg=ObjectiveConfig(), rng=rng)
        est.append(float((c * b["weight"] * b["masked"]).sum() / b["valid"].sum()))
    assert abs(np.mean(est) / c - 1) < 0.05


def test_diffusion_batch_layout_and_weights():
    rng = np.random.default_rng(0)
    L, bs = 32, 8
    x0 = rng.integers(6, 500, (4, L))
    x0[:, 28:] = IDS.pad
    cfg = ObjectiveConfig(keep_weight=0.1)
    b = diffusion_batch(x0, np.array([0, 3, 9, 30]), bs, edit=False, ids=IDS, cfg=cfg, rng=rng)
    xt, clean = b["idx"][:, :L], b["idx"][:, L:]
    assert torch.equal(clean, torch.from_numpy(x0)) and torch.equal(b["targets"], clean)
    assert torch.equal(b["offset"], torch.tensor([0, 3, 1, 6]))
    m, w = b["masked"], b["weight"]
    assert (xt[m] == IDS.mask).all() and torch.equal(xt[~m], clean[~m])
    assert (w[~b["valid"]] == 0).all() and not m[~b["valid"]].any()
    assert torch.allclose(w[b["valid"] & ~m], torch.tensor(0.1))
    assert (w[m] >= 1.0).all()  # 1/t with t <= 1
    # one t per block: the weights of masked tokens of one block are equal
    blocks = blocks_of(L, bs, 3)
    for a, e in blocks:
        ws = w[1, a:e][m[1, a:e]]
        assert len(ws) == 0 or torch.allclose(ws, ws[0])


# --- edit corruption --------------------------------------------------------------------------------


def test_edit_corrupt_levenshtein_bounded_by_k():
    rng = np.random.default_rng(0)
    draw = TokenDraw(100, None, 6)
    for trial in range(200):
        n = int(rng.integers(0, 30))
        ids = rng.integers(6, 100, n)
        k = int(rng.integers(0, 8))
        out = edit_corrupt(ids, k, rng, draw)
        assert levenshtein(ids, out) <= k
        assert abs(len(out) - n) <= k
        if k == 0:
            assert np.array_equal(out, ids)
    # the operations really happen: some corruption changes the text at all
    outs = [edit_corrupt(np.arange(6, 40), 3, rng, draw) for _ in range(20)]
    assert any(levenshtein(np.arange(6, 40), o) > 0 for o in outs)


def test_corrupt_blocks_keeps_length_alignment_and_k():
    rng = np.random.default_rng(1)
    draw = TokenDraw(500, None, 6)
    L, bs = 64, 8
    for off in (0, 3):
        x0 = rng.integers(6, 500, L)
        out = corrupt_blocks(x0, 60, bs, off, 0.1, rng, draw)  # k = 6
        assert len(out) == L and np.array_equal(out[60:], x0[60:])
        changed = [any(out[a:e] != x0[a:e]) for a, e in blocks_of(60, bs, off)]
        assert 1 <= sum(changed) <= 6  # only blocks that got an operation change
    assert np.array_equal(corrupt_blocks(x0, 60, bs, 0, 0.0, rng, draw), x0)


def test_edit_stage_batch_targets_clean_tokens():
    rng = np.random.default_rng(2)
    x0 = rng.integers(6, 500, (16, 64))
    cfg = ObjectiveConfig(edit_alpha_max=0.1)
    b = diffusion_batch(x0, np.zeros(16, dtype=int), 8, edit=True, ids=IDS, cfg=cfg, rng=rng,
                        draw=TokenDraw(500, None, 6))
    xt = b["idx"][:, :64]
    cor = b["corrupted"]
    assert cor.any() and torch.equal(b["targets"], torch.from_numpy(x0))
    assert (xt[cor] != b["targets"][cor]).all()  # corrupted tokens are visible and differ from the target
    assert cor.float().mean() < 0.1
    assert torch.allclose(b["weight"][~b["masked"]], torch.tensor(cfg.edit_keep_weight))


# --- data ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["gpt2-bpe", "code-bpe"])
def corpus(request):
    """json's sources with a GPT-2-regex BPE (FIM cut in text) or the line-aligned code BPE (cut in tokens)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = [p.read_text(encoding="utf-8") for p in sorted((stdlib / "json").glob("*.py"))]
    if request.param == "gpt2-bpe":
        tok = train_tokenizer(texts, 512)
    else:
        tok = pytest.importorskip("dllm_ls.trainer.tokenizer_train").train_code_tokenizer(texts, 512)
    return tok, TokenData.from_texts(tok, texts)


def test_line_alignment_is_detected(corpus):
    tok, data = corpus
    s = SequenceSampler(data, tok, SequenceConfig(seq_len=128))
    assert s.line_aligned == (tok.encode("if x:\n    y\n") == tok.encode("if x:\n") + tok.encode("    y\n"))


def test_sampler_is_deterministic_per_step(corpus):
    tok, data = corpus
    s1 = SequenceSampler(data, tok, SequenceConfig(seq_len=128), seed=3)
    s2 = SequenceSampler(data, tok, SequenceConfig(seq_len=128), seed=3)
    a, b = s1.batch(7, 4), s2.batch(7, 4)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(s1.batch(8, 4)[0], a[0])
    assert not np.array_equal(s1.batch(7, 4, rank=1)[0], a[0])
    assert a[0].shape == (4, 128)


def test_fim_sequences_follow_the_prompt_order(corpus):
    tok, data = corpus
    s = SequenceSampler(data, tok, SequenceConfig(seq_len=256, p_fim=1.0, p_line=1.0, p_lines=0.0), seed=0)
    x0, anchor = s.batch(0, 16)
    for row, a in zip(x0, anchor):
        row = row.tolist()
        assert row[0] == tok.fim_suffix_id and row[a - 1] == tok.fim_middle_id  # blocks start at the middle
        assert row.index(tok.fim_prefix_id) < a - 1
        end = row.index(tok.eos_id, a)
        middle = tok.decode(row[a:end])
        assert middle.strip() and "\n" not in middle[:-1]  # one whole line (Q1)
        prefix = tok.decode(row[row.index(tok.fim_prefix_id) + 1:a - 1])
        assert prefix == "" or prefix.endswith("\n")  # the cursor at a line start
        if tok.pad_id in row:
            assert set(row[row.index(tok.pad_id):]) == {tok.pad_id}


def test_fim_parts_are_what_a_prompt_tokenises(corpus):
    """P + M + S is a piece of the document; M (and, when line-aligned, P and S) tokenise as text would."""
    tok, data = corpus
    s = SequenceSampler(data, tok, SequenceConfig(seq_len=512, p_fim=1.0), seed=1)
    docs = [data.doc_text(d, 0, 10**9).decode() for d in range(data.n_docs)]
    checked = 0
    for k in range(40):
        d = k % data.n_docs
        seg = s.fim_segment(d, 300, np.random.default_rng(k))
        if seg is None:
            continue
        ids, a = seg[0].tolist(), seg[1]
        p_at = ids.index(tok.fim_prefix_id)
        pre, mid, suf = ids[p_at + 1:a - 1], ids[a:-1], ids[1:p_at]
        assert ids[-1] == tok.eos_id and len(ids) <= 300 and mid
        assert tok.decode(pre) + tok.decode(mid) + tok.decode(suf) in docs[d]
        assert tok.encode(tok.decode(mid)) == mid
        if s.line_aligned:
            assert tok.encode(tok.decode(pre)) == pre and tok.encode(tok.decode(suf)) == suf
        checked += 1
    assert checked >= 20
