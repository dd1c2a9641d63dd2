"""Post-processing of a completion before it is shown: plain functions on strings.

The text arrives in LF form (the engine normalises line endings) and goes out in the document's
line ending. Each function takes the completion and what surrounds the cursor and returns the
text to insert; `postprocess` runs them in order:

1. `cut_repeated_lines`      a block of 1-4 lines written twice in a row is kept once;
2. `drop_suffix_duplicate`   never insert what already follows the cursor;
3. `balance_brackets`        a closing bracket the suffix already supplies is not written again;
4. `match_indentation`       the document's tabs/spaces and indentation width;
5. `strip_trailing_whitespace`;
6. `to_eol`                  CRLF documents get CRLF.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..diffusion_core.stops import unmatched_closers

CLOSE = ")]}"
QUOTES = "'\"`"


def normalize_eol(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def to_eol(text: str, eol: str) -> str:
    """`text` (any line endings) with `eol` line endings."""
    text = normalize_eol(text)
    return text if eol == "\n" else text.replace("\n", eol)


def strip_trailing_whitespace(text: str) -> str:
    """No spaces at line ends, no blank lines at the end; a leading newline (a body after a
    header line) is kept. Whitespace-only text becomes ""."""
    if not text.strip():
        return ""
    lines = [ln.rstrip(" \t") for ln in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def _substantive(lines: list[str]) -> bool:
    """A repeated run worth cutting: some line has 2+ word characters (not brackets only)."""
    return any(sum(c.isalnum() or c == "_" for c in ln) >= 2 for ln in lines)


def cut_repeated_lines(text: str, max_period: int = 4) -> str:
    """Cut the text where a run of 1..max_period lines repeats the run just before it.

    Models that lose track degenerate into loops ("x = 1\\nx = 1\\nx = 1"); the first copy is kept.
    Blank lines and runs of brackets only are not considered repetitions.
    """
    lines = text.split("\n")
    bare = [ln.rstrip() for ln in lines]
    for j in range(1, len(lines)):
        for p in range(1, max_period + 1):
            if j - p < 0 or j + p > len(lines):
                continue
            run = bare[j: j + p]
            if run == bare[j - p: j] and all(run) and _substantive(run):
                return "\n".join(lines[:j])
    return text


def _suffix_lines(suffix: str) -> tuple[str, str]:
    """(rest of the cursor's line, first non-blank line after it) of the suffix, LF text."""
    head, _, tail = suffix.partition("\n")
    first = next((ln for ln in tail.split("\n") if ln.strip()), "")
    return head, first


def drop_suffix_duplicate(text: str, prefix: str, suffix: str) -> str:
    """Remove the part of the completion that repeats the text after the cursor.

    - a completion line (with the cursor's line before the first one) equal, indentation
      included, to the first non-blank line of the suffix: the completion ends before it;
    - the completion's last line ending with the rest of the cursor's line (2+ characters, or
      one that is not a bracket): that tail is dropped.
    """
    rest, first = _suffix_lines(suffix)
    line_before = prefix[prefix.rfind("\n") + 1:]
    lines = text.split("\n")
    if first.strip() and any(c not in CLOSE for c in first.strip()):
        for i, ln in enumerate(lines):
            full = line_before + ln if i == 0 else ln
            if full.rstrip() == first.rstrip() and (i > 0 or not line_before.strip()):
                lines = lines[:i]
                break
    text = "\n".join(lines)
    tail = rest.strip()
    if tail and (len(tail) >= 2 or tail not in CLOSE):
        body = text.rstrip(" \t")
        last = body[body.rfind("\n") + 1:]
        if last.strip() != tail and last.endswith(tail):
            text = body[: len(body) - len(tail)]
    return text


def balance_brackets(text: str, suffix: str, line_comment: str | None = "#") -> str:
    """Cut the completion at a closing bracket that closes nothing opened in it when the suffix
    (after blanks) starts with that bracket: the editor's auto-inserted closer is already there.

    Brackets inside string literals and line comments (`line_comment`, None for none) are ignored.
    """
    lead = suffix.lstrip(" \t")
    if not lead or lead[0] not in CLOSE:
        return text
    i = next(unmatched_closers(text, QUOTES, line_comment), None)
    if i is None:
        return text
    return text[:i].rstrip(" \t") if text[i] == lead[0] else text  # else it closes a prefix bracket


@dataclass(frozen=True, kw_only=True)
class IndentStyle:
    tabs: bool = False
    width: int | None = None  # spaces per level, None when the document does not tell


def detect_indent(text: str, min_lines: int = 3) -> IndentStyle:
    """The document's indentation: tabs or spaces, and the width of a level (gcd of the indents)."""
    tabs = spaces = 0
    widths: list[int] = []
    for ln in text.split("\n"):
        if not ln.strip():
            continue
        if ln.startswith("\t"):
            tabs += 1
        elif ln.startswith(" "):
            spaces += 1
            widths.append(len(ln) - len(ln.lstrip(" ")))
    if tabs > spaces:
        return IndentStyle(tabs=True)
    if len(widths) < min_lines:
        return IndentStyle()
    g = 0
    for w in widths:
        g = math.gcd(g, w)
    return IndentStyle(width=g if g in (2, 3, 4, 8) else None)


def _indent_of(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def match_indentation(text: str, prefix: str, style: IndentStyle) -> str:
    """The completion's indentation in the document's style.

    Tabs become spaces (or spaces tabs) as the document uses them; when both the document's and
    the completion's indentation widths are known and differ (the model wrote 4-space levels in a
    2-space file), the completion's levels below its first line are rescaled.
    """
    lines = text.split("\n")
    line_before = prefix[prefix.rfind("\n") + 1:]
    width = style.width or 4
    out = []
    for i, ln in enumerate(lines):
        at_line_start = i > 0 or not line_before.strip(" \t")
        if not at_line_start or not ln.strip():
            out.append(ln)
            continue
        ind, body = _indent_of(ln), ln.lstrip(" \t")
        if style.tabs:
            n = len(ind.expandtabs(width))
            ind = "\t" * (n // width) + " " * (n % width)
        else:
            ind = ind.expandtabs(width)
        out.append(ind + body)
    if not style.tabs and style.width and len(out) > 1:
        out = _rescale(out, line_before, style.width)
    return "\n".join(out)


def _rescale(lines: list[str], line_before: str, width: int) -> list[str]:
    base = len(_indent_of(line_before + lines[0]))
    rel = [len(_indent_of(ln)) - base for ln in lines[1:] if ln.strip()]
    if not rel or min(rel) < 0:
        return lines
    g = 0
    for r in rel:
        g = math.gcd(g, r)
    if g not in (2, 4, 8) or g == width:
        return lines
    out = [lines[0]]
    for ln in lines[1:]:
        if ln.strip():
            r = len(_indent_of(ln)) - base
            ln = " " * (base + r // g * width) + ln.lstrip(" ")
        out.append(ln)
    return out


def postprocess(text: str, *, prefix: str, suffix: str, eol: str = "\n",
                indent: IndentStyle | None = None, line_comment: str | None = "#") -> str:
    """The text to insert at the cursor, "" when nothing is worth showing.

    `prefix`/`suffix` are the LF text before/after the cursor (a window is enough: the
    cursor's line and a few lines after it).
    """
    text = normalize_eol(text)
    text = cut_repeated_lines(text)
    text = drop_suffix_duplicate(text, prefix, suffix)
    text = balance_brackets(text, suffix, line_comment)
    text = match_indentation(text, prefix, indent or IndentStyle())
    text = strip_trailing_whitespace(text)
    return to_eol(text, eol)
