"""Byte-level BPE tokenizer (a `tokenizers` JSON file) with the design's special tokens.

Byte-level BPE with no normalizer is lossless: every UTF-8 string encodes and decodes back to
itself, tabs, CRLF, emoji and long lines included. Bytes that are not valid UTF-8 never reach
it: files are decoded with errors="surrogateescape" upstream and such text is refused here
with a clear error rather than silently altered.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tokenizers import Tokenizer as _HFTokenizer

from ..errors import DllmError

PAD, MASK, EOS = "<|pad|>", "<|mask|>", "<|eos|>"
FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE = "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"
SPECIAL_TOKENS = [PAD, MASK, EOS, FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE]

# The code tokenizer's pre-tokenizer regex (trainer/tokenizer_train.py says why): GPT-2's, except that
# blanks at a line start are one pre-token and a line's newline ends the pre-token before it.
# Every character is covered, and no pre-token crosses a line break (`Tokenizer.encode_lines`).
CODE_PATTERN = (r"(?<=\n)[ \t]+|\A[ \t]+"
                r"|'(?:s|t|re|ve|m|ll|d)"
                r"| ?\p{L}+(?:\r?\n)?| ?\p{N}+(?:\r?\n)?| ?[^\s\p{L}\p{N}]+(?:\r?\n)?"
                r"|[ \t]*\r?\n|[ \t]+(?!\S)|[ \t]+|\s")

# CODE_PATTERN for pure-ASCII text in Python's `re` (encode_lines' fast path): on ASCII, \p{L} is
# [A-Za-z], \p{N} is [0-9] and onig's \s is [\t\n\v\f\r ] (Python's \s would add \x1c-\x1f).
_S = r"\t\n\x0b\x0c\r "
_ASCII_PATTERN = re.compile(r"(?<=\n)[ \t]+|\A[ \t]+"
                            r"|'(?:s|t|re|ve|m|ll|d)"
                            r"| ?[A-Za-z]+(?:\r?\n)?| ?[0-9]+(?:\r?\n)?| ?[^" + _S + r"A-Za-z0-9]+(?:\r?\n)?"
                            r"|[ \t]*\r?\n|[ \t]+(?![^" + _S + r"])|[ \t]+|[" + _S + "]")


def _byte_chars() -> dict[int, str]:
    """ByteLevel's byte -> character map (GPT-2's bytes_to_unicode)."""
    keep = {*range(33, 127), *range(161, 173), *range(174, 256)}
    extra = iter(range(256, 512))
    return {b: chr(b) if b in keep else chr(next(extra)) for b in range(256)}


_ASCII_BYTE_CHARS = {b: c for b, c in _byte_chars().items() if b < 128}  # a str.translate table


def _plain_bpe(hf: _HFTokenizer) -> bool:
    """Whether hf's model maps a byte-level piece to ids with nothing but its merges, and every
    added token is special (encoded as text here: `encode_special_tokens`)."""
    m = hf.model
    return (type(m).__name__ == "BPE" and m.dropout is None and not m.continuing_subword_prefix
            and not m.end_of_word_suffix and not m.byte_fallback and not m.ignore_merges
            and all(t.special for t in hf.get_added_tokens_decoder().values()))


def _whole_tokens(hf: _HFTokenizer) -> dict[str, int]:
    """The pure-ASCII texts that the BPE model maps to one token, each to its id: a property of the
    vocabulary and the merges (not a memo of texts seen), checked token by token."""
    raw = {c: chr(b) for b, c in _ASCII_BYTE_CHARS.items()}
    special = {t.content for t in hf.get_added_tokens_decoder().values()}
    out = {}
    for s, i in hf.get_vocab().items():
        if s not in special and all(c in raw for c in s) and [t.id for t in hf.model.tokenize(s)] == [i]:
            out["".join(raw[c] for c in s)] = i
    return out


def _splits_lines(hf: _HFTokenizer) -> bool:
    """Whether hf pre-tokenizes with CODE_PATTERN then byte-level symbols, and nothing else."""
    if hf.normalizer is not None or hf.pre_tokenizer is None:
        return False
    pre = json.loads(hf.pre_tokenizer.__getstate__())
    steps = pre.get("pretokenizers", [])
    return (pre.get("type") == "Sequence" and len(steps) == 2 and steps[0].get("type") == "Split"
            and steps[0].get("pattern") == {"Regex": CODE_PATTERN} and steps[0].get("behavior") == "Isolated"
            and not steps[0].get("invert") and steps[1].get("type") == "ByteLevel" and not steps[1].get("use_regex")
            and not steps[1].get("add_prefix_space"))


class TokenizerError(DllmError, ValueError):
    pass


class Tokenizer:
    LINE_MEMO_SIZE = 1 << 16  # lines; the memo starts over when full (~10 MB of typical code)

    def __init__(self, hf: _HFTokenizer, source: str = "<memory>"):
        self.hf = hf
        self.source = source
        ids = {}
        for t in SPECIAL_TOKENS:
            i = hf.token_to_id(t)
            if i is None:
                raise TokenizerError(f"{source}: special token {t} is missing from the vocabulary")
            ids[t] = i
        self.pad_id, self.mask_id, self.eos_id = ids[PAD], ids[MASK], ids[EOS]
        self.fim_prefix_id, self.fim_suffix_id, self.fim_middle_id = ids[FIM_PREFIX], ids[FIM_SUFFIX], ids[FIM_MIDDLE]
        self.special_ids = frozenset(ids.values())
        self._line_memo: dict[str, list[int]] = {}  # encode_lines: a line's text -> its ids
        self._by_lines = _splits_lines(hf)  # else encode_lines is encode
        self._ascii_fast = self._by_lines and _plain_bpe(hf)
        self._whole = _whole_tokens(hf) if self._ascii_fast else {}  # (~30 ms)
        self._encode_batch = getattr(hf, "encode_batch_fast", hf.encode_batch)  # (tokenizers < 0.21: no fast)
        hf.encode_special_tokens = True  # "<|eos|>" typed in a file is text, not a control token

    @classmethod
    def from_file(cls, path: str | Path) -> "Tokenizer":
        path = Path(path)
        try:
            hf = _HFTokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises plain Exception subclasses with terse text
            raise TokenizerError(f"{path}: not a valid tokenizers JSON file ({e})") from None
        return cls(hf, str(path))

    def save(self, path: str | Path):
        self.hf.save(str(path))

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; special-token strings inside it are encoded as plain text."""
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise TokenizerError(f"text is not valid Unicode at offset {e.start} (lone surrogate)") from None
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_lines(self, text: str) -> list[int]:
        """`encode(text)`, line by line through a memo of each line's ids: a prompt window is mostly
        lines the last request tokenized already (an editor's file changes a line at a time), and
        tokenizing is most of a cold prompt's host time (~1 us a pre-token). The lines not in the
        memo are encoded each on its own: pure-ASCII ones by `_encode_ascii_lines`, the others in one
        batch on all cores.

        Exact: the pre-tokenizer's pieces never cross a line break (each ends at its "\n" at the
        latest, and a line's start matches as the text's start does), and BPE merges inside a
        piece, so the ids of the lines, joined, are the ids of the text (tests/.../test_tokenizer.py
        checks it against `encode` on the standard library and on random text). A tokenizer with
        another pre-tokenizer (GPT-2's glues blank lines together) encodes the text whole."""
        if not self._by_lines:
            return self.encode(text)
        lines = text.split("\n")
        lines = [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
        memo = self._line_memo
        missing = list(dict.fromkeys(line for line in lines if line not in memo))
        if missing:
            if len(memo) + len(missing) > self.LINE_MEMO_SIZE:
                memo.clear()
            if self._ascii_fast:  # pure-ASCII lines without the tokenizers pipeline (~2.5x faster)
                ascii_lines = [line for line in missing if line.isascii()]
                memo.update(zip(ascii_lines, self._encode_ascii_lines(ascii_lines)))
                missing = [line for line in missing if not line.isascii()]
            if missing:  # the others in one batch, each on its own (on all cores)
                memo.update(zip(missing, self.encode_batch(missing)))
        out: list[int] = []
        for line in lines:
            ids = memo.get(line)
            out.extend(ids if ids is not None else self.encode(line))  # (cleared by another thread)
        return out

    def _encode_ascii_lines(self, lines: list[str]) -> list[list[int]]:
        """`[encode(line) for line in lines]` for pure-ASCII lines, each but the last ending in "\n",
        without the tokenizers pipeline (its per-piece offset bookkeeping is most of its cost): the
        pre-tokenizer's regex in Python's `re` over the lines joined, then each piece's id from
        `_whole` (nine pieces in ten) or the BPE model on its ByteLevel characters. About 0.4x of
        `encode`'s time on a cold window (scripts/tokenize_bench.py); test_tokenizer.py compares it
        with `encode`."""
        whole, tokenize = self._whole, self.hf.model.tokenize
        out: list[list[int]] = []
        cur: list[int] = []
        for piece in _ASCII_PATTERN.findall("".join(lines)):
            i = whole.get(piece)
            if i is not None:
                cur.append(i)
            else:
                cur.extend(t.id for t in tokenize(piece.translate(_ASCII_BYTE_CHARS)))
            if piece[-1] == "\n":  # a piece ends at its line's "\n" at the latest
                out.append(cur)
                cur = []
        if cur:  # the last line, without its "\n"
            out.append(cur)
        return out

    def forget_lines(self):
        """Empty encode_lines' memo (a benchmark of cold prompts)."""
        self._line_memo.clear()

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, on all cores; a lone surrogate is refused as in `encode`."""
        try:  # (`encode_batch_fast`: without the offsets, which nothing here reads)
            return [e.ids for e in self._encode_batch(texts, add_special_tokens=False)]
        except (UnicodeEncodeError, TypeError, ValueError):
            for n, t in enumerate(texts):
                try:
                    t.encode("utf-8")
                except UnicodeEncodeError as e:
                    raise TokenizerError(f"text {n} is not valid Unicode at offset {e.start} (lone surrogate)") from None
            raise

    def decode(self, ids) -> str:
        """Text of ids; special tokens are dropped."""
        return self.hf.decode([i for i in ids if i not in self.special_ids], skip_special_tokens=False)

    def token_bytes(self, i: int) -> str:
        return self.hf.id_to_token(i)


def byte_level_bpe(vocab_size: int):
    """An untrained byte-level BPE model and trainer with the special tokens first (ids 0..5)."""
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = _HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    return tok, trainer


def train_tokenizer(texts, vocab_size: int) -> Tokenizer:
    """Train a byte-level BPE on an iterable of strings (the trainer's corpus, or test fixtures)."""
    tok, trainer = byte_level_bpe(vocab_size)
    tok.train_from_iterator(texts, trainer=trainer)
    return Tokenizer(tok)
