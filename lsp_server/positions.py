"""LSP positions <-> offsets into a Python string, in the negotiated position encoding.

An LSP position is (line, character), 0-based, where `character` counts code units of the
negotiated encoding: UTF-16 (the protocol's default), UTF-8 or UTF-32. Python strings index
code points (= UTF-32 units). Lines end at "\\n", "\\r\\n" or "\\r" only, as the protocol says
(`str.splitlines` would also split at form feeds and U+2028, which LSP clients do not).

A character past the end of its line means the end of the line (the protocol's rule); a
character that falls inside a character (half of a surrogate pair in UTF-16, inside a multi-byte
sequence in UTF-8) is rounded down to the start of that character.
"""

from __future__ import annotations

import numpy as np

from ..errors import DllmError

UTF8, UTF16, UTF32 = "utf-8", "utf-16", "utf-32"
ENCODINGS = (UTF16, UTF8, UTF32)
_CODEC = {UTF8: "utf-8", UTF16: "utf-16-le"}
_UNIT = {UTF8: 1, UTF16: 2}


class PositionError(DllmError):
    """A position that does not exist in the document (a line past its end, a negative number)."""


def negotiate_encoding(offered: list[str] | None) -> str:
    """The client's most preferred encoding that we support; UTF-16 when it offers none we know.

    This is the same choice pygls makes for the `positionEncoding` capability it advertises.
    """
    for enc in offered or []:
        if enc in ENCODINGS:
            return enc
    return UTF16


def units(text: str, encoding: str) -> int:
    """Length of `text` in code units of `encoding`."""
    if encoding == UTF32:
        return len(text)
    return len(text.encode(_CODEC[encoding], "surrogatepass")) // _UNIT[encoding]


def _index_in_line(line: str, character: int, encoding: str) -> int:
    """Code-point index in `line` of a column in code units (clamped, rounded down)."""
    if encoding == UTF32 or line.isascii():
        return min(character, len(line))
    data = line.encode(_CODEC[encoding], "surrogatepass")
    cut = data[: character * _UNIT[encoding]]
    try:
        head = cut.decode(_CODEC[encoding], "surrogatepass")
    except UnicodeDecodeError as e:  # the cut ends inside a multi-byte UTF-8 sequence
        head = cut[: e.start].decode(_CODEC[encoding], "surrogatepass")
    i = len(head)
    if i and "\ud800" <= head[-1] <= "\udbff" and line[i - 1] != head[-1]:
        i -= 1  # the cut split a surrogate pair: round down to the start of the character
    return i


class LineIndex:
    """The start offset of every line of a text, for position <-> offset conversion."""

    def __init__(self, text: str):
        self.text = text
        if not text:
            self.starts = np.zeros(1, dtype=np.int64)
            return
        cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)  # (N,)
        after_lf = np.flatnonzero(cps == 10) + 1
        cr = np.flatnonzero(cps == 13)
        nxt = np.minimum(cr + 1, len(cps) - 1)
        lone_cr = cr[(cr + 1 >= len(cps)) | (cps[nxt] != 10)]
        starts = np.concatenate([np.zeros(1, dtype=np.int64), after_lf, lone_cr + 1])
        starts.sort()
        self.starts = starts

    @property
    def line_count(self) -> int:
        return len(self.starts)

    def line_bounds(self, line: int) -> tuple[int, int]:
        """(start, end) offsets of a line's text, its terminator excluded."""
        start = int(self.starts[line])
        if line + 1 >= len(self.starts):
            return start, len(self.text)
        end = int(self.starts[line + 1]) - 1
        if self.text[end] == "\n" and end > start and self.text[end - 1] == "\r":
            end -= 1
        return start, end

    def line_text(self, line: int) -> str:
        start, end = self.line_bounds(line)
        return self.text[start:end]

    def offset(self, line: int, character: int, encoding: str, *, clamp_line: bool = False) -> int:
        """Offset of an LSP position. A line past the end raises PositionError, or with
        `clamp_line` means the end of the text (how editors treat edits past the end)."""
        if line < 0 or character < 0:
            raise PositionError(f"position {line}:{character} is negative")
        if line >= self.line_count:
            if clamp_line:
                return len(self.text)
            raise PositionError(f"line {line} is past the end of the document "
                                f"({self.line_count} lines, numbered from 0)")
        start, end = self.line_bounds(line)
        return start + _index_in_line(self.text[start:end], character, encoding)

    def position(self, offset: int, encoding: str) -> tuple[int, int]:
        """LSP (line, character) of an offset (clamped to the text)."""
        offset = max(0, min(offset, len(self.text)))
        line = int(np.searchsorted(self.starts, offset, side="right")) - 1
        start, end = self.line_bounds(line)
        return line, units(self.text[start:min(offset, end)], encoding)
