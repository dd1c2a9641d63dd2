"""Token healing: the cursor's line moves into the middle, the prompt ends before the line's
partial last word, and the completion must write that word's start again (prompt.build_healed_prompt,
prompt.heal_split, Sampler.heal_mask, DecodeState / the AR loop)."""

import pytest

from dllm_ls.diffusion_core.prompt import build_healed_prompt, build_prompt, heal_split
from dllm_ls.diffusion_core.sampler import Sampler, SamplerConfig

from .scripted import ScriptedModel

pytestmark = pytest.mark.usefixtures("one_thread")

HEAD = "def mean(xs):\n    total = sum(xs)\n"


def _wordish(c: str) -> bool:
    return c.isalnum() or c == "_"


@pytest.mark.parametrize("prefix", [HEAD + "    ret", HEAD + "    return tot", HEAD + "    x = foo.ba", HEAD + "    ",
                                    HEAD + "    y = (", "ret", HEAD + "    n = len(xs) "])
def test_heal_split_leaves_out_the_partial_word_and_nothing_past_the_line(tokenizer, prefix):
    ids = tokenizer.encode(prefix)
    n, text = heal_split(tokenizer, ids)
    assert 1 <= n <= 4 and text and "\n" not in text
    assert tokenizer.decode(ids[: len(ids) - n]) + text == prefix
    kept = prefix[: len(prefix) - len(text)]
    # the cut it leaves is not inside a word
    assert not (kept and _wordish(kept[-1]) and _wordish(text[0]))


def test_no_healing_at_a_line_start(tokenizer):
    assert heal_split(tokenizer, tokenizer.encode(HEAD)) == (0, "")
    assert build_healed_prompt(tokenizer, HEAD, "\n") == (build_prompt(tokenizer, HEAD, "\n"), "")


def test_the_cursor_line_goes_into_the_middle_tokenised_from_its_start(tokenizer):
    prompt, healed = build_healed_prompt(tokenizer, HEAD + "    total = tot", "\n")
    mid = prompt.index(tokenizer.fim_middle_id)
    assert prompt[:mid] == build_prompt(tokenizer, HEAD, "\n")[:-1]  # the prefix ends at the line
    head = prompt[mid + 1:]
    assert head == tokenizer.encode("    total = tot")[: len(head)]  # the line's own tokens
    assert tokenizer.decode(head) + healed == "    total = tot" and healed.endswith("tot")
    # without healing: the prompt of the docstring, cut at the cursor
    assert build_healed_prompt(tokenizer, HEAD + "    total = tot", "\n", heal=False) == \
        (build_prompt(tokenizer, HEAD + "    total = tot", "\n"), "")


def test_heal_mask_allows_tokens_that_write_the_text_on(tiny_model, tokenizer):
    s = Sampler(tiny_model, tokenizer)
    texts = s.token_text
    m = s.heal_mask("re")
    allowed = m.nonzero().squeeze(1).tolist()
    assert allowed and all(texts[i].startswith("re") for i in allowed)
    assert all(not texts[i].startswith("re") or i in tokenizer.special_ids for i in range(len(texts)) if i not in allowed)
    # no token starts with this text: its non-empty starts may come first
    left = "rezqxq"
    assert not any(t.startswith(left) for t in texts)
    allowed = s.heal_mask(left).nonzero().squeeze(1).tolist()
    assert allowed and all(texts[i] and left.startswith(texts[i]) for i in allowed)
    assert not s.heal_mask("re")[tokenizer.eos_id] and not s.heal_mask(left)[tokenizer.mask_id]


class PreferModel(ScriptedModel):
    """The script, except that the first generated position prefers `wrong` (a token that does not
    write the healed text) to the script's own first token, which comes second."""

    def __init__(self, tokenizer, script, wrong, causal=False):
        super().__init__(tokenizer, script, causal=causal)
        self.wrong = wrong

    def _logits(self, positions):
        out = super()._logits(positions)
        for row, k in enumerate(positions):
            if k == 0:
                out[row] = -30.0
                out[row, self.script[0]] = 1.0
                out[row, self.wrong] = 5.0
        return out


@pytest.mark.parametrize("causal", [False, True], ids=["diffusion", "ar"])
def test_healing_writes_the_word_on_and_answers_the_rest(tokenizer, causal):
    prefix = HEAD + "    return tot"
    _, healed = build_healed_prompt(tokenizer, prefix, "\n")
    word = tokenizer.encode(healed + "al")  # " total": one token or several (then written one by one)
    script = word + tokenizer.encode(" / len(xs)") + [tokenizer.eos_id]
    wrong = tokenizer.encode("(")[0]
    model = PreferModel(tokenizer, script, wrong, causal=causal)
    healing = Sampler(model, tokenizer, SamplerConfig(block_size=8, token_healing=True))
    out = healing.complete(prefix, "\n", mode="line")
    assert out.text == "al / len(xs)" and out.trace.healed == healed
    # without healing the model's favourite comes first
    model = PreferModel(tokenizer, script, wrong, causal=causal)
    plain = Sampler(model, tokenizer, SamplerConfig(block_size=8))
    assert plain.complete(prefix, "\n", mode="line").text.startswith("(")


def test_healing_keeps_crlf_and_leaves_an_unhealed_line_start_alone(tokenizer):
    _, healed = build_healed_prompt(tokenizer, HEAD + "    ret", "\n")
    script = tokenizer.encode(healed + "urn total") + [tokenizer.eos_id]
    s = Sampler(ScriptedModel(tokenizer, script), tokenizer, SamplerConfig(block_size=8, token_healing=True))
    out = s.complete(HEAD.replace("\n", "\r\n") + "    ret", "\r\n", mode="line")
    assert out.text == "urn total" and out.trace.healed == healed
    script = tokenizer.encode("    return total") + [tokenizer.eos_id]
    s = Sampler(ScriptedModel(tokenizer, script), tokenizer, SamplerConfig(block_size=8, token_healing=True))
    out = s.complete(HEAD, "", mode="line")
    assert out.text == "    return total" and out.trace.healed == ""


def test_a_healed_request_reusing_the_cache_equals_a_cold_one(tiny_model, tokenizer):
    s = Sampler(tiny_model, tokenizer, SamplerConfig(block_size=4, max_tokens=12, token_healing=True))
    cache = s.new_cache()
    s.complete(HEAD + "    tot", "\n", cache=cache)
    warm = s.complete(HEAD + "    tota", "\n", cache=cache)
    cold = s.complete(HEAD + "    tota", "\n")
    assert warm.trace.reused_tokens > 0 and warm.trace.healed == cold.trace.healed
    assert (warm.text, warm.trace.per_step) == (cold.text, cold.trace.per_step)


def test_the_server_config_heals_and_the_plain_one_does_not():
    assert SamplerConfig.for_server().token_healing and not SamplerConfig().token_healing
