"""A document's recent edits, kept from didChange for "Propagate this edit".

An *edit* is what the user changed in one place: a run of content changes that touch each other
(overlapping or adjacent, or on the same line), e.g. the keystrokes that rename `w` to `width`.
Each edit keeps its region in the current text and the text that region held before the edit, so
the document as it was without that edit is `before(edit, text)`: the other edits stay, and
propagating one edit trusts only its own region. A change far from every edit starts a new one;
a change that touches older edits merges them into one, now the newest. An edit that is undone
(its region holds its old text again) is not offered, but kept: deleting `w` then typing `width`
goes through the old text and stays one edit.

Bounded: at most `max_edits` edits (the oldest dropped), each holding at most `max_chars` of old
text (a larger one, e.g. a whole file pasted, is not kept). Nothing here copies the document.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

_ids = itertools.count(1)


@dataclass
class Edit:
    start: int  # the region [start, end) in the current text (characters)
    end: int
    old: str  # what the region held before the edit
    version: int = 0  # the document version of its last change
    id: int = field(default_factory=lambda: next(_ids))
    time: float = field(default_factory=time.monotonic)


class EditHistory:
    def __init__(self, max_edits: int = 8, max_chars: int = 256 << 10):
        self.max_edits, self.max_chars = max_edits, max_chars
        self._edits: list[Edit] = []  # oldest first
        self.expected: set[str] = set()  # texts a preview of ours would produce (`expect`)

    def __len__(self):
        return len(self._edits)

    def edits(self) -> list[Edit]:
        """The edits, newest first (undone ones included)."""
        return self._edits[::-1]

    def get(self, edit_id: int) -> Edit | None:
        return next((e for e in self._edits if e.id == edit_id), None)

    def clear(self):
        self._edits.clear()
        self.expected.clear()

    def expect(self, text: str):
        """A preview of ours would turn the document into `text` (the last two are kept)."""
        if len(self.expected) >= 2:
            self.expected.clear()
        self.expected.add(text)

    @staticmethod
    def before(edit: Edit, text: str) -> str:
        """`text` without `edit` (the other edits kept)."""
        return text[:edit.start] + edit.old + text[edit.end:]

    def record(self, old_text: str, start: int, end: int, inserted: str, new_text: str, version: int = 0):
        """One content change: old_text[start:end] became `inserted`, giving new_text."""
        if not (0 <= start <= end <= len(old_text)):
            self.clear()
            return
        if new_text in self.expected:  # the client applied a whole preview of ours: not a user edit
            self.clear()
            return
        delta = len(inserted) - (end - start)
        touching, rest = [], []
        for e in self._edits:
            (touching if _touches(old_text, e, start, end) else rest).append(e)
        s0 = min([start] + [e.start for e in touching])
        e0 = max([end] + [e.end for e in touching])
        old, pos = [], s0  # the pre-edit text of old_text[s0:e0]: each merged edit's region put back
        for e in sorted(touching, key=lambda e: e.start):
            old.append(old_text[pos:e.start])
            old.append(e.old)
            pos = e.end
        old.append(old_text[pos:e0])
        merged = Edit(start=s0, end=e0 + delta, old="".join(old), version=version)
        for e in rest:  # the others move with the text after the change
            if e.start >= end:
                e.start += delta
                e.end += delta
        self._edits = rest
        if len(merged.old) <= self.max_chars:
            self._edits.append(merged)
        del self._edits[:-self.max_edits]

    def nearest(self, text: str, line: int, end_line: int, *, near: int | None = None) -> Edit | None:
        """The edit whose region is closest to lines [line, end_line] (0-based), newest first on
        ties; with `near`, only an edit within that many lines."""
        best, best_d = None, None
        for e in self.edits():
            if text[e.start:e.end] == e.old:  # undone (kept: typing on may still make it an edit)
                continue
            a = text.count("\n", 0, e.start)
            b = a + text.count("\n", e.start, e.end)
            d = 0 if a <= end_line and line <= b else min(abs(a - end_line), abs(line - b))
            if near is not None and d > near:
                continue
            if best_d is None or d < best_d:
                best, best_d = e, d
        return best


def common_affixes(a: str, b: str) -> tuple[int, int]:
    """(p, s): the lengths of the common prefix and the common suffix of a and b, not overlapping
    (p + s <= min(len)). Slice comparisons halve the range, so a 5 MB text costs milliseconds."""
    n = min(len(a), len(b))
    lo, hi = 0, n  # a[:lo] == b[:lo]; the prefix is shorter than hi + 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid - 1
    p = lo
    lo, hi = 0, n - p
    la, lb = len(a), len(b)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[la - mid:la - lo] == b[lb - mid:lb - lo]:
            lo = mid
        else:
            hi = mid - 1
    return p, lo


def _touches(text: str, e: Edit, start: int, end: int) -> bool:
    """The change [start, end) overlaps the edit's region, is adjacent to it, or is on a line the
    region is on (no newline between them)."""
    if start <= e.end and e.start <= end:
        return True
    if start > e.end:
        return text.find("\n", e.end, start) == -1
    return text.find("\n", end, e.start) == -1
