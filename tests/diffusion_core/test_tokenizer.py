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


@pytest.fixture(scope="module")
def code_tokenizer():
    """The shipped model's tokenizer (CODE_PATTERN: its pre-tokens never cross a line break)."""
    from dllm_ls.diffusion_core.checkpoint import default_checkpoint

    return Tokenizer.from_file(default_checkpoint() / "tokenizer.json")


def _random_code_text(rng, n: int, ascii_only: bool = False) -> str:
    atoms = ["\n", "\r\n", "\r", " ", "  ", "    ", "\t", "x", "foo", "Ünïcode", "中文", "🐍", "42", "3.14", "'s",
             "'", '"', "#", "):", "(", "==", "\u2028", "\x0c", "\u00a0", "\n\n\n", " \n", "\t\n", "x\r",
             "\x00", "\x0b", "\x1c", "\x1f", "\x7f", "_", "__x", "`~", "'ll", "'re\n", "9_a", " 'd"]
    if ascii_only:
        atoms = [a for a in atoms if a.isascii()]
    return "".join(rng.choice(atoms) for _ in range(n))


def test_encode_lines_is_encode(code_tokenizer):
    """Line by line through the memo gives the ids of the whole text: on stdlib files (whole, cut
    mid-line, with CRLF), on random text of line breaks, blanks and odd characters, cold and warm."""
    import random

    tok = code_tokenizer
    assert tok._by_lines
    rng = random.Random(0)
    texts = []
    for p in sorted(STDLIB.glob("*.py"))[:120]:
        t = read_source(p)
        if t is not None:
            cut = rng.randrange(len(t) + 1)
            texts += [t, t[:cut], t[cut:], t.replace("\n", "\r\n")[: 2 * cut]]
    texts += [_random_code_text(rng, rng.randrange(1, 80)) for _ in range(3000)]
    texts += [_random_code_text(rng, rng.randrange(1, 80), ascii_only=True) for _ in range(3000)]
    texts += ["", "\n", "x", "\n\n", "  ", "a\n  "]
    assert tok._ascii_fast  # pure-ASCII lines skip the tokenizers pipeline: _encode_ascii_lines
    for warm in (False, True):
        bad = [t[:60] for t in texts if tok.encode_lines(t) != tok.encode(t)]
        assert not bad, (warm, bad[:5])
    assert len(tok._line_memo) > 1000


def test_ascii_fast_path_needs_plain_bpe(code_tokenizer):
    """A BPE that does more than merge (dropout here) keeps the tokenizers pipeline for every line."""
    hf = Tokenizer.from_file(code_tokenizer.source).hf
    hf.model.dropout = 0.5
    assert not Tokenizer(hf)._ascii_fast and code_tokenizer._ascii_fast


def test_encode_lines_memo_is_bounded(code_tokenizer, monkeypatch):
    tok = code_tokenizer
    monkeypatch.setattr(Tokenizer, "LINE_MEMO_SIZE", 50)
    text = "".join(f"x{i} = {i}\n" for i in range(40))
    for k in range(5):
        assert tok.encode_lines(text + f"y = {k}\n") == tok.encode(text + f"y = {k}\n")
        assert len(tok._line_memo) <= 50


def test_encode_lines_falls_back_for_other_pre_tokenizers(tokenizer):
    """GPT-2's regex glues blank lines into one pre-token: such a tokenizer encodes whole texts."""
    assert not tokenizer._by_lines
    text = "def f():\n\n\n    return 1\n   \n"
    assert tokenizer.encode_lines(text) == tokenizer.encode(text)


def test_encode_lines_refuses_a_lone_surrogate(code_tokenizer):
    with pytest.raises(TokenizerError, match="surrogate"):
        code_tokenizer.encode_lines("ok\nx = '\udc80'\n")
