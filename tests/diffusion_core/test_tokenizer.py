"""The tokenizer is lossless over any UTF-8 text."""

import tokenize

import pytest

from dllm_ls.diffusion_core.tokenizer import SPECIAL_TOKENS, Tokenizer, TokenizerError

from ..conftest import STDLIB


def read_source(path):
    """A stdlib file as Python reads it (honouring a coding cookie); None if it is not valid text."""
    try:
        with tokenize.open(path) as f:
            return f.read()
    except (SyntaxError, UnicodeDecodeError, LookupError):
        return None


def test_round_trip_every_stdlib_file(tokenizer):
    paths = sorted(p for p in STDLIB.rglob("*.py") if "site-packages" not in p.parts)
    assert len(paths) > 1000
    texts, unreadable = [], []
    for p in paths:
        t = read_source(p)
        (texts if t is not None else unreadable).append(t if t is not None else p)
    # the stdlib test suite holds a few deliberately undecodable files; everything else is tested
    assert len(unreadable) < 15, unreadable
    bad = []
    for i in range(0, len(texts), 256):
        chunk = texts[i:i + 256]
        decoded = tokenizer.hf.decode_batch(tokenizer.encode_batch(chunk), skip_special_tokens=False)
        bad += [t[:80] for t, d in zip(chunk, decoded) if d != t]
    assert not bad


@pytest.mark.parametrize("text", [
    "def f(x):\r\n\treturn x\r\n",
    "emoji = '🎉🐍' + '中文' + 'é' + '\u200b'\n",
    "x = 1  " * 20000,  # a long line
    "\t\t\tmixed \t tabs\n   \n\n\n",
    "literal = '<|eos|><|mask|><|fim_prefix|>'",
    "",
], ids=["crlf-tabs", "emoji-cjk", "long-line", "whitespace", "special-text", "empty"])
def test_round_trip_edge_cases(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_special_token_text_is_not_a_control_token(tokenizer):
    ids = tokenizer.encode("<|eos|>")
    assert tokenizer.eos_id not in ids and len(ids) > 1


def test_special_ids_are_distinct_and_present(tokenizer):
    ids = [tokenizer.pad_id, tokenizer.mask_id, tokenizer.eos_id,
           tokenizer.fim_prefix_id, tokenizer.fim_suffix_id, tokenizer.fim_middle_id]
    assert len(set(ids)) == len(SPECIAL_TOKENS)


def test_lone_surrogate_is_refused_clearly(tokenizer):
    with pytest.raises(TokenizerError, match="surrogate"):
        tokenizer.encode("x = '\udc80'")
    with pytest.raises(TokenizerError, match="text 1 .*surrogate"):
        tokenizer.encode_batch(["fine", "x = '\udc80'"])


def test_bad_tokenizer_file_names_the_file(tmp_path):
    p = tmp_path / "tokenizer.json"
    p.write_text("{not json")
    with pytest.raises(TokenizerError, match=str(p)):
        Tokenizer.from_file(p)
