"""Code-aware stops on the generated text.

Each stop depends only on the text before the point where it cuts, so the sampler may apply them
to the contiguous committed part of a block while later positions are still masked, and end the
request early. `find_stop` returns the earliest cut.

- "eol":      single-line mode: the first newline after some non-blank text;
- "dedent":   multi-line mode: the first non-blank line indented less than the block being written
              (when the cursor's line is a `:` header, the completion is its body and a line
              back at the header's indentation ends it);
- "brackets": a closing bracket that closes nothing opened in the completion when the suffix
              already starts with it;
- "suffix":   the text starts to repeat the suffix: a later line equal to the suffix's first
              non-blank line, or (when final) the current line ending with the rest of the
              cursor's line;
- "repeat":   multi-line mode: the same statement line (indentation included) REPEAT_STATEMENT
              times in a row (REPEAT_LINES for list items, comments and lines without a letter),
              or the same block of 2 to REPEAT_BLOCK non-blank lines REPEAT_BLOCK_COPIES
              times, blank lines between them not counting: a model in a loop
              (`current_depth -= 1` a dozen times, or `if x:` / `return False` over and over).
              The text is cut after the first copy. A loop inside one line (a unit of
              3-40 characters, not one character over and over, REPEAT_INLINE times in a row:
              `+ fib(n - 1)` fifty times) cuts the text before that line, at its last whole
              statement, as running out of tokens does.

A stop's cut never moves once the text that decides it is there: later text can only add an
earlier cut of another kind.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

OPEN, CLOSE = "([{", ")]}"
# 3 identical lines in a row: 50 of 200 Q2 completions of the shipped model at threshold 0.9 (AR
# twin: 19), 34 of 3,000 stdlib files anywhere in them (docs/results.md, session 20); 3 copies of
# a block of 2-4 lines: 57 of 200 (AR twin: 59), 3 of 3,000 files (session 21). 2 copies of such
# a block: 43 of 3,000 files, 0.6 in 1,000 lines (mostly tests and data); waiting for the third
# copy cost ~10% of Q2's decoding steps, for the same text (session 25).
REPEAT_LINES = 3
# 2 copies of a statement line (a letter in it, not a comment, not ending with "," as list items
# and arguments do): 1,613 in 10.2M lines of the local stdlib and packages, 365 of 32,822 files
# (`gc.collect()`, `f.close()` twice; session 26)
REPEAT_STATEMENT = 2
REPEAT_BLOCK = 4
REPEAT_BLOCK_COPIES = 2
# a unit repeated 12 times in one line: 36 of 1.16M lines of the local stdlib and packages, all
# data tables (`1, 1, 1, ...`); the runaway lines that took ~7% of Q2's steps (session 25)
REPEAT_INLINE = 12
_INLINE_LOOP = re.compile(r"(.{3,40}?)\1{%d,}" % (REPEAT_INLINE - 1))
PAIR = dict(zip(CLOSE, OPEN))


def indent_width(line: str) -> int:
    return len(line.expandtabs(8)) - len(line.expandtabs(8).lstrip(" "))


@dataclass(kw_only=True)
class StopContext:
    mode: str  # "line" or "block"
    prefix_line: str  # the cursor's line, before the cursor
    suffix: str = ""
    suffix_line: str = field(init=False)  # the cursor's line, after the cursor
    suffix_first: str = field(init=False)  # the first non-blank line of the suffix after the cursor's line

    def __post_init__(self):
        if self.mode not in ("line", "block"):
            raise ValueError(f"mode must be 'line' or 'block', not {self.mode!r}")
        head, _, rest = self.suffix.partition("\n")
        self.suffix_line = head.strip()
        self.suffix_first = next((ln.strip() for ln in rest.split("\n") if ln.strip()), "")

    @classmethod
    def from_text(cls, mode: str, prefix: str, suffix: str) -> "StopContext":
        return cls(mode=mode, prefix_line=prefix[prefix.rfind("\n") + 1:].replace("\r", ""),
                   suffix=suffix.replace("\r\n", "\n"))


def auto_mode(prefix: str, suffix: str) -> str:
    """Multi-line when the cursor's line is blank before the cursor or ends a `:` header."""
    line = prefix[prefix.rfind("\n") + 1:]
    rest = suffix.split("\n", 1)[0]
    if rest.strip():
        return "line"
    if not line.strip() or line.rstrip().endswith(":"):
        return "block"
    return "line"


@lru_cache(maxsize=16)
def _special_chars(quotes: str, line_comment: str | None) -> re.Pattern:
    """The characters `unmatched_closers` acts on; it skips the rest in C (a regex search), not
    one Python iteration per character: it runs on every decoding step's text."""
    chars = set(quotes) | set(OPEN) | set(CLOSE) | {"\\", "\n"} | ({line_comment[0]} if line_comment else set())
    return re.compile("[" + "".join(re.escape(c) for c in sorted(chars)) + "]")


def unmatched_closers(text: str, quotes: str = "'\"", line_comment: str | None = "#"):
    """Yield the index of each closing bracket of `text` that closes nothing opened before it in
    `text`; brackets inside string literals (`quotes`, one line each) and line comments are skipped."""
    stack: list[str] = []
    quote = None
    find = _special_chars(quotes, line_comment).search
    pos = 0
    while (m := find(text, pos)) is not None:
        i = m.start()
        c = text[i]
        pos = i + 1
        if quote:
            if c == "\\":
                pos = i + 2  # the escaped character
            elif c == quote or c == "\n":
                quote = None
        elif c in quotes:
            quote = c
        elif line_comment and text.startswith(line_comment, i):
            nl = text.find("\n", i)
            if nl == -1:
                return
            pos = nl + 1
        elif c in OPEN:
            stack.append(c)
        elif c in CLOSE:
            if stack and stack[-1] == PAIR[c]:
                stack.pop()
            elif not stack:
                yield i


def _brackets_stop(text: str, ctx: StopContext) -> int | None:
    lead = ctx.suffix.lstrip(" \t")
    return next((i for i in unmatched_closers(text) if lead.startswith(text[i])), None)


def statement_boundary(text: str) -> int:
    """The length of the longest prefix of `text` that ends at a statement boundary: after a line
    break, outside brackets and strings opened in `text`, after a line that does not ask for a
    continuation (ending with `:`, `,`, `\\` or an opening bracket, or starting with `@`). 0 when
    there is none. The syntax guard judges text up to it; a multi-line completion that runs out
    of tokens is cut there (`Sampler._cut`)."""
    depth, quote, best = 0, "", 0
    first = last = ""  # the line's first and last significant characters (outside comments)
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if text.startswith(quote, i):
                i += len(quote)
                last, quote = quote[0], ""
                continue
            if c != "\n" or len(quote) == 3:
                i += 1
                continue
            quote = ""  # an unterminated one-line string ends at the line break (tree-sitter judges it)
        if c == "#":
            j = text.find("\n", i)
            i = n if j == -1 else j
            continue
        if c in "'\"":
            quote = c * 3 if text.startswith(c * 3, i) else c
            first = first or c
            i += len(quote)
            continue
        if c == "\n":
            if depth <= 0 and last not in (":", ",", "\\", "(", "[", "{") and first != "@":
                best = i + 1
            first = last = ""
        elif not c.isspace():
            first, last = first or c, c
            depth += (c in OPEN) - (c in CLOSE)
        i += 1
    return best


@lru_cache(maxsize=4096)
def _inline_loop(line: str) -> bool:
    """Whether `line` holds a unit of 3-40 characters REPEAT_INLINE times in a row (a unit of
    one character over and over, a comment rule, does not count). Memoized: every step of a
    decoding asks again about the lines it has already seen (~40 us a 70-character line)."""
    if len(line) < 3 * REPEAT_INLINE:
        return False
    return any(len(set(m.group(1))) > 1 for m in _INLINE_LOOP.finditer(line))


def _statement(line: str) -> bool:
    """A line that a loop repeats, not a list item, a comment or a lone bracket."""
    s = line.strip()
    return not s.startswith("#") and not s.endswith(",") and re.search(r"[A-Za-z_]", s) is not None


def _repeat_start(keys: list[str]) -> int | None:
    """If the last lines of `keys` are copies in a row of one line (REPEAT_STATEMENT of them for
    a statement, else REPEAT_LINES) or of one block of 2 to REPEAT_BLOCK lines
    (REPEAT_BLOCK_COPIES): the index of the first copy's last line."""
    for k in range(1, REPEAT_BLOCK + 1):
        copies = REPEAT_BLOCK_COPIES if k > 1 else REPEAT_STATEMENT if _statement(keys[-1]) else REPEAT_LINES
        n = k * copies
        if len(keys) >= n and keys[-1] == keys[-1 - k] and keys[-n:-k] == keys[-n + k:]:
            return len(keys) - n + k - 1
    return None


def find_stop(text: str, ctx: StopContext, final: bool = False) -> tuple[int, str] | None:
    """The earliest (cut index, reason) in the generated `text`, or None.

    final=True when no more text will come (eos or max_tokens), which decides the stops that wait
    for the end of a line.
    """
    text = text.replace("\r\n", "\n")  # indices below are for LF text; the sampler works in LF
    cuts: list[tuple[int, str]] = []
    b = _brackets_stop(text, ctx)
    if b is not None:
        cuts.append((b, "brackets"))

    lines = text.split("\n")
    offset = 0
    first_full = ctx.prefix_line + lines[0]
    base = indent_width(first_full)
    opener = False
    seen_content = bool(lines[0].strip())
    keys: list[str] = []  # the non-blank complete lines so far (the cursor's line with its prefix)
    ends: list[int] = []  # where each of them ends in `text`
    repeat = None
    for n, line in enumerate(lines):
        complete = n < len(lines) - 1 or final
        if ctx.mode != "line" and repeat is None and _inline_loop(line):
            repeat = statement_boundary(text[:offset]) or offset  # the line start: whole lines
        if ctx.mode != "line" and complete and line.strip():
            keys.append((first_full if n == 0 else line).rstrip())
            ends.append(offset + len(line.rstrip()))
            if repeat is None and (i := _repeat_start(keys)) is not None:
                # the first copy, taken on to a whole statement: a copy may start mid-statement
                # (`return False` / `if x:`, over and over)
                while i < len(ends) - 1 and statement_boundary(text[:ends[i]] + "\n") <= ends[i]:
                    i += 1
                repeat = ends[i]
        if n == 0:
            if ctx.mode == "line" and seen_content and n < len(lines) - 1:
                cuts.append((len(line), "eol"))
            if ctx.suffix_line and complete and line.rstrip().endswith(ctx.suffix_line) and line.strip():
                cuts.append((len(line.rstrip()) - len(ctx.suffix_line), "suffix"))
            # a header the user is writing on the cursor's line: the completion is its body
            if ctx.prefix_line.strip():
                opener = first_full.rstrip().endswith(":")
            offset += len(line) + 1
            continue
        decided = line.strip() != "" or n < len(lines) - 1
        if line.strip() and ctx.suffix_first and line.strip() == ctx.suffix_first and complete:
            cuts.append((offset - 1, "suffix"))
        if ctx.mode == "line":
            if not seen_content and line.strip() and complete:
                cuts.append((offset + len(line), "eol"))
            seen_content = seen_content or bool(line.strip())
        elif decided and line.strip():
            if not first_full.strip() and not seen_content:
                # the first content line sets the block's indentation
                base, opener, seen_content = indent_width(line), False, True
                if complete:
                    opener = line.rstrip().endswith(":")
            else:
                limit = base + 1 if opener else base
                if indent_width(line) < limit:
                    cuts.append((offset - 1, "dedent"))
                seen_content = True
        offset += len(line) + 1
    if repeat is not None:
        cuts.append((repeat, "repeat"))
    return min(cuts) if cuts else None
