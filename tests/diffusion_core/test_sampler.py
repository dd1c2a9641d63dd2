"""Sampler: block-size freedom, commit rules, confidence measures, cache reuse, stops end to end."""

import math

import pytest
import torch

from dllm_ls.diffusion_core.sampler import Sampler, SamplerConfig, commit_count, confidence

from .scripted import ScriptedModel

PREFIX = "def mean(xs):\n    total = 0\n    for x in xs:\n        total += x\n    return "
SUFFIX = "\n\n\nprint(mean([1, 2, 3]))\n"


@pytest.mark.parametrize("block_size", [1, 4, 16, 64])
def test_any_block_size_decodes(tiny_model, tokenizer, block_size):
    s = Sampler(tiny_model, tokenizer, SamplerConfig(block_size=block_size, max_tokens=24, threshold=0.5))
    out = s.complete(PREFIX, SUFFIX, mode="block")
    t = out.trace
    assert 1 <= t.steps <= t.tokens
    assert sum(t.per_step) == t.tokens
    assert t.blocks == math.ceil(t.tokens / block_size) or out.stop != "max_tokens"
    if block_size == 1:  # autoregressive decoding: one token per step
        assert set(t.per_step) == {1}


def test_threshold_zero_commits_a_whole_block_per_step(tiny_model, tokenizer):
    s = Sampler(tiny_model, tokenizer, SamplerConfig(block_size=8, max_tokens=32, threshold=0.0))
    t = s.complete(PREFIX, SUFFIX, mode="block").trace
    assert t.per_step[0] == 8
    assert all(n == 8 for n in t.per_step[:-1])


def test_unreachable_threshold_commits_exactly_one_per_step(tiny_model, tokenizer):
    s = Sampler(tiny_model, tokenizer, SamplerConfig(block_size=8, max_tokens=16, threshold=1.5))
    t = s.complete(PREFIX, SUFFIX, mode="block").trace
    assert t.per_step == [1] * t.steps


@pytest.mark.parametrize("rule", ["threshold", "factor"])
@pytest.mark.parametrize("conf", ["maxprob", "margin", "entropy"])
def test_steps_never_exceed_tokens(tiny_model, tokenizer, rule, conf):
    s = Sampler(tiny_model, tokenizer, SamplerConfig(block_size=16, max_tokens=32, rule=rule, confidence=conf))
    t = s.complete(PREFIX, SUFFIX, mode="block").trace
    assert 1 <= t.steps <= t.tokens and min(t.per_step) >= 1


def test_commit_count_rules():
    c = torch.tensor([0.99, 0.95, 0.9, 0.5, 0.1])
    assert commit_count(c, SamplerConfig(threshold=0.9)) == 3
    assert commit_count(c, SamplerConfig(threshold=0.999)) == 0  # none passes: the fallback commits one
    assert commit_count(c, SamplerConfig(threshold=0.0)) == 5
    # factor rule: (n+1)(1-c_n) < f: n=1: 2*.01=.02, n=2: 3*.05=.15, n=3: 4*.1=.4, n=4: 5*.5=2.5
    assert commit_count(c, SamplerConfig(rule="factor", factor=0.5)) == 3
    assert commit_count(c, SamplerConfig(rule="factor", factor=0.1)) == 1
    assert commit_count(torch.tensor([0.2]), SamplerConfig(rule="factor", factor=0.1)) == 0


@pytest.mark.parametrize("fallback,mode,want", [("mode", "block", 0), ("mode", "line", 2), ("leftmost", "line", 0),
                                               ("confident", "block", 2)])
def test_a_step_where_nothing_passes_commits_the_leftmost_mask(tokenizer, fallback, mode, want):
    """Below the threshold everywhere, a step commits one position: in block mode the leftmost
    masked one, not the most confident one far inside the block; in line mode the most confident
    (the default "mode"; "leftmost" and "confident" force one)."""
    script = [tokenizer.encode(w)[0] for w in ("a", "b", "c", "d")]
    model = ScriptedModel(tokenizer, script, conf=[0.3, 0.5, 0.8, 0.6])
    seen = []
    step = model.step
    model.step = lambda clean, block, cache: seen.append(block[0].tolist()) or step(clean, block, cache)
    cfg = SamplerConfig(block_size=4, max_tokens=4, threshold=0.9, fallback=fallback)
    out = Sampler(model, tokenizer, cfg).complete("x = ", "", mode=mode)
    assert out.trace.per_step == [1, 1, 1, 1]
    first = [i for i, t in enumerate(seen[1]) if t != tokenizer.mask_id]  # what step 1 committed
    assert first == [want]
    with pytest.raises(ValueError, match="fallback"):
        SamplerConfig(fallback="random")


class ChangingModel(ScriptedModel):
    """A ScriptedModel whose script changes from step to step: scripts[i] at step i (the last after)."""

    def __init__(self, tokenizer, scripts, confs):
        super().__init__(tokenizer, scripts[0], confs[0])
        self.scripts, self.confs = scripts, confs

    def step(self, clean, block, cache):
        i = min(self.calls, len(self.scripts) - 1)
        self.script, self.conf = self.scripts[i], self.confs[i]
        return super().step(clean, block, cache)


@pytest.mark.parametrize("revise,second,mode,want", [
    (0.5, "c", "block", "cb"),  # the first commit now reads c at 0.8: revised
    (0.9, "c", "block", "ab"),  # 0.8 is below this revise threshold
    (0.0, "c", "block", "ab"),  # off
    (0.5, "eos", "block", "ab"),  # never to eos (nor from it): where the text ends stays put
    (0.5, "c", "line", "ab"),  # block mode only
])
def test_a_committed_token_is_revised_when_the_model_changes_its_mind(tokenizer, revise, second, mode, want):
    a, b, c = (tokenizer.encode(w)[0] for w in ("a", "b", "c"))
    two, eos = (tokenizer.eos_id if second == "eos" else c), tokenizer.eos_id
    model = ChangingModel(tokenizer, [[a, b, eos], [two, b, eos]], [[0.95, 0.3, 0.3], [0.8, 0.95, 0.95]])
    cfg = SamplerConfig(block_size=3, max_tokens=3, threshold=0.9, revise=revise)
    out = Sampler(model, tokenizer, cfg).complete("x = ", "", mode=mode)
    assert out.trace.per_step == [1, 2]
    assert out.text == want
    with pytest.raises(ValueError, match="revise"):
        SamplerConfig(revise=1.5)


def test_confidence_measures():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3]]))
    c, tok = confidence(logits, "maxprob")
    torch.testing.assert_close(c, torch.tensor([0.7, 1 / 3]))
    assert tok[0] == 0
    c, _ = confidence(logits, "margin")
    torch.testing.assert_close(c, torch.tensor([0.5, 0.0]), atol=1e-6, rtol=0)
    c, _ = confidence(logits, "entropy")
    assert c[1].abs() < 1e-6 and 0 < c[0] < 1  # uniform = 0, peaked > 0


def long_document() -> tuple[str, str]:
    """A whole held-out stdlib file (json/decoder.py, as S2's editor-realistic documents), cut
    after the indentation of a statement line inside a function: the prompt window fills the
    model's context."""
    import sysconfig
    from pathlib import Path

    lines = (Path(sysconfig.get_paths()["stdlib"]) / "json" / "decoder.py").read_text().split("\n")
    i = next(j for j, x in enumerate(lines) if x.strip().startswith("chunk = _m(s, end)"))
    indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
    return "\n".join(lines[:i]) + "\n" + indent, "\n" + "\n".join(lines[i + 1:])


@pytest.mark.parametrize("doc", ["short", "file"])
def test_reused_cache_gives_the_cold_result(tiny_model, tokenizer, doc):
    prefix, suffix = (PREFIX, SUFFIX) if doc == "short" else long_document()
    s = Sampler(tiny_model, tokenizer, SamplerConfig(block_size=8, max_tokens=16, threshold=0.3))
    cache = s.new_cache()
    warm = None
    for mode in ("line", "block"):
        for typed in ["", "t", "to", "tot"] if mode == "line" else ["", " "]:  # keystrokes append to the prefix
            warm = s.complete(prefix + typed, suffix, mode=mode, cache=cache)
            cold = s.complete(prefix + typed, suffix, mode=mode)
            assert warm.text == cold.text and warm.trace.per_step == cold.trace.per_step
            assert cold.trace.reused_tokens == 0
            if typed:
                assert warm.trace.reused_tokens > 0.8 * warm.trace.prompt_tokens
    if doc == "file":  # windowed to the tiny model's 512-token context (the prefix window's start is anchored)
        assert warm.trace.prompt_tokens > 200


@pytest.mark.parametrize("mode", ["line", "block"])
def test_candidate_rows_give_the_full_logits_answer(tiny_model, tokenizer, mode):
    """The sampler asks the model for its commit candidates' logits only (`DecodeState.rows`);
    a model without `step_rows` gets the whole block: same answer, step by step."""
    prefix, suffix = long_document()
    s = Sampler(tiny_model, tokenizer, SamplerConfig(block_size=16, max_tokens=40, threshold=0.3))
    fast = s.complete(prefix, suffix, mode=mode)
    tiny_model.step_rows = False
    try:
        full = s.complete(prefix, suffix, mode=mode)
    finally:
        del tiny_model.step_rows
    assert fast.text == full.text and fast.trace.per_step == full.trace.per_step and fast.stop == full.stop


@pytest.mark.parametrize("mode", ["line", "block"])
def test_the_fused_commit_path_gives_the_same_answer(tiny_model, tokenizer, monkeypatch, mode):
    """The CUDA branch of `DecodeState.advance` (one fused commit over the whole block, one read
    back to the host), run on CPU with the kernel's torch reference: the answer of the
    candidate-rows branch, step by step (the syntax guard's tests run it too)."""
    import dllm_ls.diffusion_core.sampler as sampler_mod

    prefix, suffix = long_document()
    s = Sampler(tiny_model, tokenizer, SamplerConfig(block_size=16, max_tokens=40, threshold=0.3))
    want = s.complete(prefix, suffix, mode=mode)
    monkeypatch.setattr(sampler_mod, "use_triton", lambda t: True)
    tiny_model.step_rows = False  # the whole block's logits, as on CUDA
    try:
        got = s.complete(prefix, suffix, mode=mode)
    finally:
        del tiny_model.step_rows
    assert (got.text, got.stop, got.trace.per_step) == (want.text, want.stop, want.trace.per_step)


def test_special_tokens_other_than_eos_never_emitted(tiny_model, tokenizer):
    s = Sampler(tiny_model, tokenizer, SamplerConfig(block_size=16, max_tokens=48, threshold=0.0))
    out = s.complete(PREFIX, SUFFIX, mode="block")
    assert "<|" not in out.text


# --- stops, through the sampler with a scripted model ------------------------------------------

def scripted(tokenizer, text, block_size=8, conf=None, causal=False, eos=True):
    ids = tokenizer.encode(text) + ([tokenizer.eos_id] if eos else [])
    m = ScriptedModel(tokenizer, ids, conf=conf, causal=causal)
    return Sampler(m, tokenizer, SamplerConfig(block_size=block_size, max_tokens=64, threshold=0.9))


def test_eos_ends_the_completion(tokenizer):
    out = scripted(tokenizer, "total / len(xs)").complete(PREFIX, "", mode="block")
    assert out.text == "total / len(xs)" and out.stop == "eos"


def test_line_mode_stops_at_end_of_line_early(tokenizer):
    text = "total / len(xs)\n    print('never')\n" * 3
    s = scripted(tokenizer, text, block_size=64)
    out = s.complete(PREFIX, "", mode="line")
    assert out.text == "total / len(xs)" and out.stop == "eol"
    assert out.trace.steps == 1  # all confident: one step, and no second block


def test_line_mode_stop_waits_for_the_newline_to_be_committed(tokenizer):
    ids = tokenizer.encode("x + 1\nfoo()\n")
    conf = [0.99] * len(ids)
    nl = tokenizer.encode("x + 1\n").__len__() - 1
    conf[nl] = 0.5  # the newline comes late: the text after it must not leak in
    s = Sampler(ScriptedModel(tokenizer, ids + [tokenizer.eos_id], conf=conf + [0.99]),
                tokenizer, SamplerConfig(block_size=16, max_tokens=16, threshold=0.9))
    out = s.complete("y = ", "", mode="line")
    assert out.text == "x + 1" and out.stop == "eol" and out.trace.steps == 2


def test_block_mode_stops_at_dedent(tokenizer):
    body = "if x:\n        y = 1\n    z = 2\nprint(z)\n"
    out = scripted(tokenizer, body, block_size=8).complete("def f(x):\n    ", "", mode="block")
    assert out.text == "if x:\n        y = 1\n    z = 2" and out.stop == "dedent"


def test_block_mode_stops_a_loop_of_one_line(tokenizer):
    """The model repeats a line: the completion keeps the first and ends (stop "repeat"), for the
    diffusion sampler and the AR path alike, without running to max_tokens."""
    loop = "d -= 1\n" + "    d -= 1\n" * 12
    for causal in (False, True):
        s = scripted(tokenizer, loop, block_size=8, causal=causal, eos=False)
        out = s.complete("def f(d):\n    ", "", mode="block")
        assert out.text == "d -= 1" and out.stop == "repeat"
        assert out.trace.tokens < len(tokenizer.encode(loop)) // 2


def test_block_mode_out_of_tokens_keeps_whole_statements(tokenizer):
    """A multi-line completion that runs out of tokens mid-statement ends at its last whole
    statement, for the diffusion sampler and the AR path alike; a line completion keeps its text."""
    body = "total = 0\n    for x in xs:\n        total += x\n    return compute(total, " + "".join(f"x{i}, " for i in range(40))
    for causal in (False, True):
        s = scripted(tokenizer, body, block_size=8, causal=causal, eos=False)
        out = s.complete("def f(xs):\n    ", "", mode="block")
        assert out.stop == "max_tokens" and out.trace.tokens == 64
        assert out.text == "total = 0\n    for x in xs:\n        total += x"
        # the same text with a loop inside its last line: the same cut, long before the limit
        loop = scripted(tokenizer, body.split("compute(")[0] + "compute(total, " + "x, " * 40, block_size=8,
                        causal=causal, eos=False).complete("def f(xs):\n    ", "", mode="block")
        assert loop.stop == "repeat" and loop.text == out.text and loop.trace.tokens < 64
    # no whole statement: the entries of a literal the prefix opened keep their whole lines
    entries = "".join(f"    'k{i}': {i},\n" for i in range(40))
    out = scripted(tokenizer, entries, eos=False).complete("table = {\n", "}\n", mode="block")
    assert out.stop == "max_tokens" and out.text.endswith(",") and "\n" in out.text
    assert out.text.splitlines() == entries.splitlines()[:out.text.count("\n") + 1]
    out = scripted(tokenizer, "compute(" + "x, " * 70, eos=False).complete("y = ", "", mode="line")
    assert out.stop == "max_tokens" and out.text.startswith("compute(x, x,")


def test_block_mode_after_header_stops_at_same_indent(tokenizer):
    body = "\n    return 1\ndef g():\n    pass\n"
    out = scripted(tokenizer, body).complete("def f():", "", mode="block")
    assert out.text == "\n    return 1" and out.stop == "dedent"


def test_bracket_closed_by_the_suffix_is_not_repeated(tokenizer):
    out = scripted(tokenizer, "a, b)").complete("print(", ")\n", mode="line")
    assert out.text == "a, b" and out.stop == "brackets"


def test_brackets_opened_in_the_completion_are_kept(tokenizer):
    out = scripted(tokenizer, "f(a), [b]").complete("print(", ")\n", mode="line")
    assert out.text == "f(a), [b]"


def test_suffix_is_never_duplicated(tokenizer):
    suffix = "\n    return total\n"
    out = scripted(tokenizer, "for x in xs:\n        total += x\n    return total\n").complete(
        "def s(xs):\n    total = 0\n    ", suffix, mode="block")
    assert out.text == "for x in xs:\n        total += x" and out.stop in ("suffix", "dedent")
    out = scripted(tokenizer, "total = sum(xs)\n    return total\n").complete(
        "def s(xs):\n    ", suffix, mode="block")
    assert out.text == "total = sum(xs)" and out.stop == "suffix"
    # the rest of the cursor's line is not repeated either
    out = scripted(tokenizer, "x, y):").complete("def f(", "):\n    pass\n", mode="line")
    assert out.text == "x, y" and not (out.text + "):").count("):") > 1


def test_ar_model_decodes_through_the_same_stops(tokenizer):
    out = scripted(tokenizer, "total / len(xs)\nmore\n", causal=True).complete(PREFIX, "", mode="line")
    assert out.text == "total / len(xs)" and out.trace.steps == out.trace.tokens


def test_crlf_documents_get_crlf(tokenizer):
    out = scripted(tokenizer, "\n    return 1\n").complete("def f():", "\r\n\r\nx = 1\r\n", mode="block")
    assert out.text == "\r\n    return 1"


def test_line_mode_commits_nothing_after_a_committed_line_break():
    import torch

    from dllm_ls.kernels.block_update import line_candidates

    M, A, NL = 0, 1, 2
    newline = torch.tensor([False, False, True])
    # a break committed at 1 with a masked position before it: only that one is a candidate
    block = torch.tensor([M, NL, M, M])
    masked = torch.tensor([True, False, True, True])
    assert line_candidates(block, masked, newline).tolist() == [True, False, False, False]
    # nothing masked before the break (the text so far did not end the line): every masked one
    block = torch.tensor([A, NL, M, M])
    masked = torch.tensor([False, False, True, True])
    assert line_candidates(block, masked, newline).tolist() == [False, False, True, True]
    # no break committed: every masked position
    block = torch.tensor([M, A, M, M])
    masked = torch.tensor([True, False, True, True])
    assert line_candidates(block, masked, newline).tolist() == [True, False, True, True]
