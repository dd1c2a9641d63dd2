"""The sampler's tree-sitter syntax guard (SamplerConfig.syntax_guard, issue 10)."""

import pytest
import torch
import torch.nn as nn

from dllm_ls.diffusion_core.model import ModelConfig
from dllm_ls.diffusion_core.sampler import Sampler, SamplerConfig
from dllm_ls.diffusion_core.stops import statement_boundary
from dllm_ls.diffusion_core.syntax_guard import SyntaxGuard

from .scripted import ScriptedModel


@pytest.fixture(autouse=True, params=["torch", "fused"])
def commit_path(request, monkeypatch):
    """Every test on both commit branches of `DecodeState.advance`: the torch one (CPU) and the
    fused one over the whole block (CUDA's; here with the kernel's torch reference)."""
    if request.param == "fused":
        import dllm_ls.diffusion_core.sampler as sampler_mod

        monkeypatch.setattr(sampler_mod, "use_triton", lambda t: True)


PREFIX = "def f(x):\n    return "
SUFFIX = "\n\n\nprint(f(1))\n"


class ParallelModel(nn.Module):
    """Predicts generated position k as `good[k]` once the block's first position is committed,
    else as `bad[k]` (the incoherence of committing in parallel); confidence `conf[k]` either way.
    Positions past the scripts predict eos."""

    def __init__(self, tokenizer, good: list[int], bad: list[int], conf: list[float]):
        super().__init__()
        self.cfg = ModelConfig(vocab_size=tokenizer.vocab_size, n_layer=1, n_head=1, dim=8, max_seq_len=4096)
        self.dummy = nn.Parameter(torch.zeros(1))
        self.good, self.bad, self.conf = good, bad, conf
        self.eos, self.mask = tokenizer.eos_id, tokenizer.mask_id
        self.prompt_len = None
        self.calls = 0

    def step(self, clean, block, cache):
        self.calls += 1
        if self.prompt_len is None:
            self.prompt_len = cache.length + clean.shape[1]
        cache.advance(clean.shape[1])
        start = cache.length - self.prompt_len
        V = self.cfg.vocab_size
        out = torch.full((block.shape[1], V), -30.0)
        for j in range(block.shape[1]):
            k = start + j
            ready = j == 0 or bool(block[0, 0] != self.mask)
            script = self.good if ready else self.bad
            tok = script[k] if k < len(script) else self.eos
            c = self.conf[k] if k < len(self.conf) else 0.99
            out[j, tok] = 0.0
            out[j, (tok + 7) % V] = float(torch.log(torch.tensor((1 - c) / c)))
        return out[None]


def parallel_sampler(tokenizer, good: list[int], bad: list[int], guard: bool, block_size: int = 16):
    good, bad = good + [tokenizer.eos_id], bad + [tokenizer.eos_id]
    assert len(good) == len(bad), "the scripts must align position by position"
    conf = [0.999] + [0.95] * (len(good) - 1)  # the first position is the most confident
    model = ParallelModel(tokenizer, good, bad, conf)
    cfg = SamplerConfig(block_size=block_size, max_tokens=32, threshold=0.9, syntax_guard=guard)
    return Sampler(model, tokenizer, cfg)


def aligned_pair(tokenizer, newline: bool = False):
    """The ids of "x + 1" and of a same-length text that does not parse after `return `."""
    good = tokenizer.encode("x + 1")
    close = tokenizer.encode(")")
    assert len(close) == 1
    bad = [good[0]] + close * (len(good) - 1)
    if newline:
        nl = tokenizer.encode("\n")
        good, bad = good + nl, bad + nl
    return good, bad


def test_a_commit_that_opens_an_error_is_remasked_and_redone(tokenizer):
    good, bad = aligned_pair(tokenizer)
    off = parallel_sampler(tokenizer, good, bad, guard=False).complete(PREFIX, SUFFIX, mode="line")
    assert off.text == tokenizer.decode(bad) and off.trace.steps == 1  # one parallel step, broken code
    on = parallel_sampler(tokenizer, good, bad, guard=True).complete(PREFIX, SUFFIX, mode="line")
    assert on.text == "x + 1" and on.stop == "eos"
    # step 1: all committed, opens an error -> redone with the most confident position only;
    # step 2: the rest, now coherent
    assert on.trace.guard_redone == 1 and on.trace.guard_kept == 0
    assert on.trace.per_step[0] == 1 and on.trace.steps == 2
    assert on.trace.steps <= on.trace.tokens


def test_the_guard_works_in_block_mode_at_a_line_end(tokenizer):
    good, bad = aligned_pair(tokenizer, newline=True)
    prefix = "def f(x):\n    y = 0\n    z = "
    suffix = "\n    return z\n"
    on = parallel_sampler(tokenizer, good, bad, guard=True).complete(prefix, suffix, mode="block")
    assert on.text == "x + 1" and on.trace.guard_redone == 1


def test_a_clean_completion_is_untouched(tokenizer):
    good = tokenizer.encode("x + 1")
    off = parallel_sampler(tokenizer, good, good, guard=False).complete(PREFIX, SUFFIX, mode="line")
    on = parallel_sampler(tokenizer, good, good, guard=True).complete(PREFIX, SUFFIX, mode="line")
    assert on.text == off.text == "x + 1"
    assert on.trace.per_step == off.trace.per_step and on.stop == off.stop
    assert on.trace.guard_redone == on.trace.guard_kept == 0


@pytest.mark.parametrize("block_size", [1, 4, 16])
@pytest.mark.parametrize("mode", ["line", "block"])
def test_decoding_terminates_when_every_choice_is_broken(tokenizer, block_size, mode):
    ids = tokenizer.encode("x + ) ] ( :\n    ) ) )\n) ( :\n") * 2
    s = Sampler(ScriptedModel(tokenizer, ids), tokenizer,
                SamplerConfig(block_size=block_size, max_tokens=24, threshold=0.9, syntax_guard=True))
    out = s.complete(PREFIX, SUFFIX, mode=mode)
    t = out.trace
    assert t.steps <= t.tokens and sum(t.per_step) == t.tokens
    assert t.guard_kept >= 1  # the broken text was kept: decoding progresses


def test_other_languages_get_no_guard(tokenizer):
    good, bad = aligned_pair(tokenizer)
    out = parallel_sampler(tokenizer, good, bad, guard=True).complete(PREFIX, SUFFIX, mode="line", language="rust")
    assert out.text == tokenizer.decode(bad) and out.trace.guard_redone == 0


def test_the_scheduler_state_machine_gets_the_guard(tokenizer):
    good, bad = aligned_pair(tokenizer)
    s = parallel_sampler(tokenizer, good, bad, guard=True)
    state = s.begin(PREFIX, SUFFIX, mode="line", language="python")
    assert state.guard is not None
    while not state.done:
        clean, block = state.next_inputs()
        state.advance(s.model.step(clean, block, state.cache)[0])
    assert state.result().text == "x + 1"
    assert s.begin(PREFIX, SUFFIX, mode="line", language="").guard is None


@pytest.mark.parametrize("text,cut", [
    ("x = 1\n", 6), ("if x:\n", 0), ("if x:\n    y = 1\n", 16), ("f(a,\n  b)\n", 10), ("f(a,\n", 0),
    ('s = """doc\nmore\n', 0), ("@d\ndef f(): pass\n", 17), ("x = 1  # c:\n", 12), ("x = (1 +\n 2\n", 0),
    ("a = 1\nb = 2", 6), ("", 0),
])
def test_statement_boundary(text, cut):
    assert statement_boundary(text) == cut


def test_errors_that_were_there_before_are_not_new():
    # the hole leaves `y = ` broken: filling it right clears the error, filling it wrong replaces
    # it with another one (the same count: the guard compares where the errors are)
    g = SyntaxGuard("def f(x):\n    y = ", "\n    return y\n")
    assert g.baseline_errors == 1
    assert not g.check("x + 1", True)
    assert SyntaxGuard("def f(x):\n    y = ", "\n    return y\n").check("x + )", True)
    # a broken line elsewhere in the window stays broken and is not blamed on the completion
    g = SyntaxGuard("def f(x):\n    y = )\n    z = ", "\n    return y\n")
    assert not g.check("x + 1", True)


def test_partial_statements_are_not_judged_until_they_end():
    g = SyntaxGuard("def f(x):\n", "    return y\n")
    assert not g.check("    y = 1\n    z = (", False)  # judged: "    y = 1\n"
    assert not g.check("    y = 1\n    z = (2,\n", False)  # still inside the bracket
    assert g.check("    y = 1\n    z = (2,\n 3))\n", False)  # one ")" too many
    assert not g.check("    y = 1\n    z = (2,\n 3)\n", False)
    assert g.judged == b"    y = 1\n    z = (2,\n 3)\n"


def test_a_completion_on_its_own_line_is_judged_with_its_line_break():
    # Q1's harness: the cursor at a line start, the suffix the next line (no line break first)
    g = SyntaxGuard("def f(x):\n    y = 0\n    ", "    y += i\n    return y\n")
    assert not g.check("for i in range(x):", True)
    g = SyntaxGuard("def f(x):\n    y = 0\n    ", "    y += i\n    return y\n")
    assert g.check("for i in range(x", True)


class RunnerUpModel(ScriptedModel):
    """ScriptedModel whose second most likely token at position k is `second[k]`."""

    def __init__(self, tokenizer, script, second, conf):
        super().__init__(tokenizer, script, conf)
        self.second = second

    def _logits(self, positions):
        out = torch.full((len(positions), self.cfg.vocab_size), -30.0)
        for row, k in enumerate(positions):
            tok = self.script[k] if 0 <= k < len(self.script) else self.eos
            c = self.conf[k] if 0 <= k < len(self.conf) else 0.99
            out[row, tok] = 0.0
            if 0 <= k < len(self.second):
                out[row, self.second[k]] = float(torch.log(torch.tensor((1 - c) / c)))
        return out


@pytest.mark.parametrize("alternatives", [0, 4])
def test_the_last_commit_is_replaced_by_a_runner_up_that_parses(tokenizer, alternatives):
    good, bad = aligned_pair(tokenizer)  # "x + 1" and "x" + ")" * n
    script = good[:-1] + bad[-1:] + [tokenizer.eos_id]
    second = [tokenizer.eos_id] * (len(good) - 1) + good[-1:] + [tokenizer.eos_id]
    # one commit per step (threshold out of reach), the culprit last: the text is final only then
    conf = [0.9 - 0.05 * i for i in range(len(good) - 1)] + [0.55, 0.6]
    s = Sampler(RunnerUpModel(tokenizer, script, second, conf), tokenizer,
                SamplerConfig(block_size=len(script), max_tokens=len(script), threshold=0.95, syntax_guard=True,
                              syntax_guard_alternatives=alternatives))
    out = s.complete(PREFIX, SUFFIX, mode="line")
    assert out.trace.per_step == [1] * len(script)
    if alternatives:
        assert out.text == "x + 1" and out.trace.guard_replaced == 1 and out.trace.guard_kept == 0
    else:
        assert out.text == tokenizer.decode(script[:-1]) and out.trace.guard_kept == 1


def test_a_window_cut_inside_a_docstring_starts_at_the_next_definition():
    """The 4 KB cut of a long file falls inside a docstring: the window moves on to the next
    `def`/`class`/decorator line, so the document parses clean (no baseline errors to hide new
    ones behind, and a cheap parse), not as a string turned inside out."""
    from dllm_ls.diffusion_core.syntax_guard import WINDOW_BEFORE, window

    doc = 'def g():\n    """' + "A long docstring line.\n    " * (WINDOW_BEFORE // 20) + '"""\n    return 1\n\n\n'
    prefix = doc + "class A:\n    @property\n    def f(self):\n        return "
    p, _ = window(prefix, "\n")
    assert p.startswith("class A:\n") and prefix.endswith(p)
    assert SyntaxGuard(prefix, "\n").baseline_errors <= 1  # the hole after `return` at most
    # the premise: the plain line cut lands inside the docstring, and that text is one big error
    from dllm_ls.diffusion_core.syntax_guard import error_spans, python_parser

    raw = prefix[prefix.find("\n", len(prefix) - WINDOW_BEFORE) + 1:] + "\n"
    assert any(e - s > len(raw) // 2 for _, s, e in error_spans(python_parser().parse(raw.encode()).root_node))
