"""Byte-level BPE tokenizer (a `tokenizers` JSON file) with the design's special tokens.

Byte-level BPE with no normalizer is lossless: every UTF-8 string encodes and decodes back to
itself, tabs, CRLF, emoji and long lines included. Bytes that are not valid UTF-8 never reach
it: files are decoded with errors="surrogateescape" upstream and such text is refused here
with a clear error rather than silently altered.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer as _HFTokenizer

from ..errors import DllmError

PAD, MASK, EOS = "<|pad|>", "<|mask|>", "<|eos|>"
FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE = "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"
SPECIAL_TOKENS = [PAD, MASK, EOS, FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE]


class TokenizerError(DllmError, ValueError):
    pass


class Tokenizer:
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

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, on all cores; a lone surrogate is refused as in `encode`."""
        try:
            return [e.ids for e in self.hf.encode_batch(texts, add_special_tokens=False)]
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
