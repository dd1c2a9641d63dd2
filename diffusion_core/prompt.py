"""The prompt: `<|fim_suffix|> SUFFIX <|fim_prefix|> PREFIX <|fim_middle|>`, then the generation.

Suffix-first order puts the part that changes while the user types (the end of PREFIX) last, so
the token ids of a prompt stay a prefix of the next keystroke's prompt and its KV cache is reused.
For that the window over a long document must not slide with every keystroke: the prefix window
starts at a line boundary found from a multiple of `anchor_chars`, so its start only moves when
the prefix has grown by that much.
"""

from __future__ import annotations

from dataclasses import dataclass

from .tokenizer import Tokenizer


@dataclass(kw_only=True)
class PromptWindow:
    max_prefix_tokens: int = 1024
    max_suffix_tokens: int = 256
    anchor_chars: int = 2048  # the prefix window's start moves in steps of this many characters
    chars_per_token: float = 4.0  # a generous bound used to cut text before tokenizing


def _prefix_window(tok: Tokenizer, prefix: str, w: PromptWindow) -> list[int]:
    approx = int(w.max_prefix_tokens * w.chars_per_token)
    start = max(0, len(prefix) - approx)
    start -= start % w.anchor_chars  # anchored: moves only every anchor_chars of growth
    while True:
        s = start
        if s > 0:  # begin at a line start when one is near
            nl = prefix.find("\n", s, s + w.anchor_chars)
            if nl != -1:
                s = nl + 1
        ids = tok.encode(prefix[s:])
        if len(ids) <= w.max_prefix_tokens:
            return ids
        if start + w.anchor_chars >= len(prefix):  # a single enormous line: keep its tail
            return ids[-w.max_prefix_tokens:]
        start += w.anchor_chars


def _suffix_window(tok: Tokenizer, suffix: str, w: PromptWindow) -> list[int]:
    cut = suffix[: int(w.max_suffix_tokens * w.chars_per_token)]
    if len(cut) < len(suffix) and "\n" in cut:  # end on a whole line
        cut = cut[: cut.rindex("\n") + 1]
    return tok.encode(cut)[: w.max_suffix_tokens]


def build_prompt(tok: Tokenizer, prefix: str, suffix: str, window: PromptWindow | None = None) -> list[int]:
    w = window or PromptWindow()
    return ([tok.fim_suffix_id] + _suffix_window(tok, suffix, w) + [tok.fim_prefix_id]
            + _prefix_window(tok, prefix, w) + [tok.fim_middle_id])
