"""Open documents: full text, version, language, line ending; incremental edits applied in place.

The server keeps its own store instead of pygls' workspace: positions are converted with
`positions.LineIndex` (LSP's three line terminators only, any of the three encodings), and the
line index of a document is built once per version (lazily), so a 5 MB file costs tens of
milliseconds per edit, not a split of its lines per position.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import DllmError
from .history import EditHistory, common_affixes
from .positions import UTF16, LineIndex


class UnknownDocument(DllmError):
    """A request names a document the client never opened (or already closed)."""


@dataclass(kw_only=True)
class TextChange:
    """One content change of textDocument/didChange; `range` None replaces the whole text.

    range: ((start line, start character), (end line, end character)) in the client's encoding.
    """

    range: tuple[tuple[int, int], tuple[int, int]] | None = None
    text: str


@dataclass(kw_only=True)
class Document:
    uri: str
    text: str
    version: int = 0
    language_id: str = ""
    history: EditHistory = field(default_factory=EditHistory, repr=False)  # recent edits (history.py)
    _index: LineIndex | None = field(default=None, init=False, repr=False)

    @property
    def index(self) -> LineIndex:
        if self._index is None or self._index.text is not self.text:
            self._index = LineIndex(self.text)
        return self._index

    @property
    def eol(self) -> str:
        """The document's line ending: that of its first line ("\\n" for a one-line document)."""
        nl = self.text.find("\n", 0, 1 << 16)
        if nl > 0 and self.text[nl - 1] == "\r":
            return "\r\n"
        if nl == -1 and "\r" in self.text[: 1 << 16]:
            return "\r"
        return "\n"

    def offset(self, line: int, character: int, encoding: str = UTF16) -> int:
        return self.index.offset(line, character, encoding)

    def position(self, offset: int, encoding: str = UTF16) -> tuple[int, int]:
        return self.index.position(offset, encoding)

    def apply(self, change: TextChange, encoding: str = UTF16):
        """Apply one change (and record it in `history`); positions past the end of the text clamp
        to it (as editors do). A whole-text change is recorded as the span that differs."""
        old = self.text
        if change.range is None:
            self.text = change.text
            start, end, inserted = _differing(old, change.text)
        else:
            (sl, sc), (el, ec) = change.range
            idx = self.index
            start = idx.offset(sl, sc, encoding, clamp_line=True)
            end = idx.offset(el, ec, encoding, clamp_line=True)
            if end < start:
                start, end = end, start
            self.text = old[:start] + change.text + old[end:]
            inserted = change.text
        self.history.record(old, start, end, inserted, self.text, self.version)


def _differing(old: str, new: str) -> tuple[int, int, str]:
    """(start, end, inserted): old[start:end] -> inserted gives `new` (common prefix and suffix)."""
    p, s = common_affixes(old, new)
    return p, len(old) - s, new[p:len(new) - s]


class DocumentStore:
    """The documents the client has open, by URI."""

    def __init__(self, encoding: str = UTF16):
        self.encoding = encoding
        self.docs: dict[str, Document] = {}

    def open(self, uri: str, text: str, version: int = 0, language_id: str = "") -> Document:
        doc = Document(uri=uri, text=text, version=version, language_id=language_id)
        self.docs[uri] = doc
        return doc

    def change(self, uri: str, version: int, changes: list[TextChange]) -> Document:
        doc = self.get(uri)
        doc.version = version
        for ch in changes:
            doc.apply(ch, self.encoding)
        return doc

    def close(self, uri: str):
        self.docs.pop(uri, None)

    def get(self, uri: str) -> Document:
        doc = self.docs.get(uri)
        if doc is None:
            raise UnknownDocument(f"{uri} is not open; the client must send textDocument/didOpen "
                                  "before asking for completions in it")
        return doc
