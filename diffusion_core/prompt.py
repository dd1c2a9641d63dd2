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
        ids = tok.encode_lines(prefix[s:])
        if len(ids) <= w.max_prefix_tokens:
            return ids
        if start + w.anchor_chars >= len(prefix):  # a single enormous line: keep its tail
            return ids[-w.max_prefix_tokens:]
        start += w.anchor_chars


def _suffix_window(tok: Tokenizer, suffix: str, w: PromptWindow) -> list[int]:
    cut = suffix[: int(w.max_suffix_tokens * w.chars_per_token)]
    if len(cut) < len(suffix) and "\n" in cut:  # end on a whole line
        cut = cut[: cut.rindex("\n") + 1]
    return tok.encode_lines(cut)[: w.max_suffix_tokens]


def build_prompt(tok: Tokenizer, prefix: str, suffix: str, window: PromptWindow | None = None) -> list[int]:
    return build_healed_prompt(tok, prefix, suffix, window, heal=False)[0]


# token healing moves the cursor's line into the middle when it is at most this long (tokens)
MAX_HEAD_TOKENS = 48


def build_healed_prompt(tok: Tokenizer, prefix: str, suffix: str, window: PromptWindow | None = None, *,
                        heal: bool = True) -> tuple[list[int], str]:
    """The prompt, and with `heal` (token healing) the text the generation must write again.

    With `heal`, the cursor's line up to the cursor (its head) goes after `<|fim_middle|>`,
    tokenised from the line's start, and its last tokens (`heal_split`) are left out, to be
    written again by the generation under a constraint (the Sampler's heal_mask):

        <|fim_suffix|> SUFFIX <|fim_prefix|> PREFIX-UP-TO-THE-LINE <|fim_middle|> HEAD-BUT-ITS-END

    Training cuts most FIM examples at line starts (the middle is whole lines), so the model knows
    a middle that starts with a line, and tokenises that line as in training; a prompt cut at the
    cursor instead ends inside a word (`    ret`) at a token boundary no training text had, and
    the model wrote a new word there. A head longer than MAX_HEAD_TOKENS stays in the prefix,
    healed there. Without `heal`: the prompt of the module docstring, and "".
    """
    w = window or PromptWindow()
    suffix_ids = [tok.fim_suffix_id] + _suffix_window(tok, suffix, w) + [tok.fim_prefix_id]
    if heal:
        ls = prefix.rfind("\n") + 1
        head = tok.encode(prefix[ls:])
        if len(head) <= MAX_HEAD_TOKENS:
            n, text = heal_split(tok, head)
            return suffix_ids + _prefix_window(tok, prefix[:ls], w) + [tok.fim_middle_id] + head[: len(head) - n], text
    ids = _prefix_window(tok, prefix, w)
    n, text = heal_split(tok, ids) if heal else (0, "")
    return suffix_ids + ids[: len(ids) - n] + [tok.fim_middle_id], text


def word_char(c: str) -> bool:
    return c.isalnum() or c == "_"


def heal_split(tok: Tokenizer, ids: list[int], max_tokens: int = 4, max_chars: int = 32) -> tuple[int, str]:
    """(n, text): how many of the prefix's last tokens to leave out of the prompt, and their text.

    The cursor usually sits inside a word while the user types (`    ret`, `x = foo.ba`), and the
    tokenizer cuts that word where no training text was cut (`ret` alone, `res` + `ul`), so the
    model, asked to continue from there, writes a new word instead of finishing this one. Healing
    backs the prompt up over the last token, and over the tokens before it while the cut between
    them falls inside a word (`for i in ran` = ` r` + `an`: both), up to `max_tokens` tokens and
    `max_chars` characters; never over a line break (the text to write again stays on the cursor's
    line). n = 0 when the prefix ends with a line break or the tokens do not decode to the text
    piecewise (a multi-byte character split between tokens)."""
    tail = ids[-(max_tokens + 1):]
    texts = [tok.decode([i]) for i in tail]
    n = 0
    while n < min(max_tokens, len(ids)):
        t = texts[len(texts) - 1 - n]
        if not t or "\n" in t or "\r" in t or sum(map(len, texts[len(texts) - 1 - n:])) > max_chars:
            break
        n += 1
        before = texts[len(texts) - 1 - n] if n < len(texts) else ""
        if not (before and word_char(before[-1]) and word_char(t[0])):
            break
    if n == 0:
        return 0, ""
    text = "".join(texts[len(texts) - n:])
    if tok.decode(tail[: len(tail) - n]) + text != tok.decode(tail):
        return 0, ""
    return n, text
