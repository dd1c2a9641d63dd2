"""Tokenizer training: round trip, indentation runs as single tokens, line starts as token boundaries,
vocabulary measurement, token counts."""

from __future__ import annotations

import json
import random

import pytest

from dllm_ls.diffusion_core.tokenizer import Tokenizer
from dllm_ls.trainer.corpus import CorpusStats, build_corpus
from dllm_ls.trainer.tokenizer_train import (check_indentation, count_tokens, format_vocab_table,
                                             indentation_tokens, measure_vocab, recommend_vocab,
                                             train_code_tokenizer, train_corpus_tokenizer, truncate)


def synthetic_module(rng: random.Random, n: int) -> str:
    """Nested Python (indent depth up to 4) with varied names: enough for BPE to learn the runs."""
    words = ["value", "item", "total", "count", "result", "index", "name", "data", "node", "key"]
    out = []
    for f in range(n):
        a, b, c = rng.sample(words, 3)
        out.append(
            f"def {a}_{f}({b}, {c}=None):\n"
            f'    """Return the {a} of {b}."""\n'
            f"    {a} = []\n"
            f"    for {b}_{f} in range({c} or 10):\n"
            f"        if {b}_{f} % {f + 2} == 0:\n"
            f"            while {a}:\n"
            f"                {a}.pop()\n"
            f"            {a}.append({b}_{f})\n"
            f"        else:\n"
            f"            continue\n"
            f"    return {a}\n\n\n")
    return "".join(out)


@pytest.fixture(scope="module")
def texts():
    rng = random.Random(0)
    return [synthetic_module(rng, 30) for _ in range(12)]


@pytest.fixture(scope="module")
def tok(texts):
    return train_code_tokenizer(texts, 600)


def test_round_trip(tok):
    for s in ["def f(x):\n\treturn x  # tab\r\n", "s = 'h\u00e9llo \u4e16\u754c \U0001F600'\n",
              "    \n\n\n  x\n", "", " ", "\n", "<|eos|> is text"]:
        assert tok.decode(tok.encode(s)) == s


def test_indentation_runs_are_single_tokens(tok):
    assert check_indentation(tok) == []
    assert indentation_tokens(tok) == {4: 1, 8: 1, 12: 1, 16: 1}


def test_gpt2_regex_alone_does_not_give_single_indent_tokens(texts):
    plain = train_code_tokenizer(texts, 600, isolate_line_starts=False)
    assert check_indentation(plain) != []  # why code_bpe adds its own split


def test_line_starts_are_token_boundaries(tok, texts):
    """encode(prefix + rest) == encode(prefix) + encode(rest) whenever prefix ends a line."""
    lines = texts[0].splitlines(keepends=True)[:60]
    for i in range(1, len(lines)):
        prefix, rest = "".join(lines[:i]), "".join(lines[i:])
        assert tok.encode(prefix + rest) == tok.encode(prefix) + tok.encode(rest), i


def test_truncation_equals_training_smaller(texts, tok):
    small = train_code_tokenizer(texts, 400)
    cut = truncate(tok, 400)
    assert cut.vocab_size == small.vocab_size == 400
    for t in texts[:3]:
        assert cut.encode(t) == small.encode(t)


def test_measure_vocab(texts):
    rows = measure_vocab(texts, sizes=(300, 400, 600), dims=(64, 128), budget_bytes=200_000)
    assert [r.vocab_size for r in rows] == [300, 400, 600]
    bpt = [r.bytes_per_token for r in rows]
    assert bpt == sorted(bpt) and bpt[0] > 1.0
    assert rows[1].embedding_params == {64: 400 * 64, 128: 400 * 128}
    assert rows[2].embedding_share[128] == pytest.approx(600 * 128 / 100_000, abs=1e-4)
    assert "| 400 |" in format_vocab_table(rows)
    assert recommend_vocab(rows, dim=64, max_share=1.0, min_gain=0.0) == 600
    assert recommend_vocab(rows, dim=128, max_share=0.5, min_gain=0.0) == 300


def test_corpus_tokenizer_and_token_counts(tmp_path, texts):
    root = tmp_path / "src"
    for i, t in enumerate(texts):
        (root / f"pkg{i}").mkdir(parents=True)
        (root / f"pkg{i}" / "mod.py").write_text(t)
    corpus = tmp_path / "corpus"
    build_corpus([root], corpus, val_fraction=0.2, workers=1)
    tok = train_corpus_tokenizer(corpus, tmp_path / "ckpt", vocab_size=500)
    saved = Tokenizer.from_file(tmp_path / "ckpt" / "tokenizer.json")
    assert saved.encode(texts[0]) == tok.encode(texts[0])
    stats = CorpusStats.load(corpus / "corpus_stats.json")
    expected = sum(len(tok.encode(json.loads(line)["text"])) for line in open(corpus / "train.jsonl"))
    assert stats.train_tokens == expected == count_tokens(tok, corpus / "train.jsonl", chunk=3)
    assert stats.val_tokens > 0 and stats.tokenizer.endswith("tokenizer.json")
