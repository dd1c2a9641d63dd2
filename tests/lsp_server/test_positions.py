"""Positions in UTF-16/UTF-8/UTF-32, LSP line terminators, and the document store's edits."""

import pytest
from pygls.capabilities import ServerCapabilitiesBuilder
from lsprotocol import types as T

from dllm_ls.lsp_server.documents import DocumentStore, TextChange, UnknownDocument
from dllm_ls.lsp_server.positions import LineIndex, PositionError, negotiate_encoding, units

TEXT = "a = 1\r\ns = '😀世界'\rlast\u2028same line\nend"


def test_only_lsp_line_terminators_split_lines():
    idx = LineIndex(TEXT)
    assert idx.line_count == 4
    assert [idx.line_text(i) for i in range(4)] == ["a = 1", "s = '😀世界'", "last\u2028same line", "end"]
    assert LineIndex("").line_count == 1 and LineIndex("x\n").line_count == 2


@pytest.mark.parametrize("encoding,col_after_emoji,col_after_cjk", [
    ("utf-16", 5 + 2, 5 + 2 + 2),
    ("utf-8", 5 + 4, 5 + 4 + 6),
    ("utf-32", 5 + 1, 5 + 1 + 2),
])
def test_columns_in_each_encoding(encoding, col_after_emoji, col_after_cjk):
    idx = LineIndex(TEXT)
    line_start = TEXT.index("s = ")
    assert idx.offset(1, col_after_emoji, encoding) == TEXT.index("世")
    assert idx.offset(1, col_after_cjk, encoding) == TEXT.index("'", TEXT.index("界"))
    assert idx.position(TEXT.index("世"), encoding) == (1, col_after_emoji)
    assert idx.position(TEXT.index("界") + 1, encoding) == (1, col_after_cjk)
    assert idx.offset(1, 0, encoding) == line_start


def test_a_column_inside_a_character_rounds_down():
    idx = LineIndex(TEXT)
    emoji = TEXT.index("😀")
    assert idx.offset(1, 6, "utf-16") == emoji  # between the two surrogates
    assert idx.offset(1, 7, "utf-8") == emoji  # inside the 4-byte sequence
    assert idx.offset(1, 11, "utf-8") == TEXT.index("世")  # inside a 3-byte CJK sequence


def test_past_the_end():
    idx = LineIndex(TEXT)
    assert idx.offset(0, 99, "utf-16") == TEXT.index("\r\n")  # the line's end, before its terminator
    assert idx.offset(3, 99, "utf-16") == len(TEXT)
    with pytest.raises(PositionError, match="line 4 is past the end"):
        idx.offset(4, 0, "utf-16")
    assert idx.offset(9, 0, "utf-16", clamp_line=True) == len(TEXT)
    with pytest.raises(PositionError):
        idx.offset(-1, 0, "utf-16")


def test_units():
    assert units("😀世a", "utf-16") == 4 and units("😀世a", "utf-8") == 8 and units("😀世a", "utf-32") == 3


@pytest.mark.parametrize("offered,expected", [
    (None, "utf-16"), ([], "utf-16"), (["utf-8", "utf-16"], "utf-8"), (["utf-32"], "utf-32"),
    (["latin-1", "utf-8"], "utf-8"), (["latin-1"], "utf-16"),
])
def test_negotiation_matches_what_pygls_advertises(offered, expected):
    assert negotiate_encoding(offered) == expected
    caps = T.ClientCapabilities(general=T.GeneralClientCapabilities(position_encodings=offered))
    chosen = ServerCapabilitiesBuilder.choose_position_encoding(caps)
    assert getattr(chosen, "value", chosen) == expected


def test_incremental_edits_in_utf16():
    store = DocumentStore("utf-16")
    doc = store.open("file:///a.py", "x = '😀'\r\ny = 2\r\n", 1, "python")
    assert doc.eol == "\r\n"
    # replace the closing quote after the emoji (UTF-16 column 7) with '!'
    store.change("file:///a.py", 2, [TextChange(range=((0, 7), (0, 8)), text="!'")])
    assert doc.text == "x = '😀!'\r\ny = 2\r\n" and doc.version == 2
    # several changes apply in order; a range past the end appends
    store.change("file:///a.py", 3, [TextChange(range=((1, 4), (1, 5)), text="3"),
                                     TextChange(range=((9, 0), (9, 0)), text="z = 1")])
    assert doc.text == "x = '😀!'\r\ny = 3\r\nz = 1"
    assert doc.position(len(doc.text), "utf-16") == (2, 5)
    store.change("file:///a.py", 4, [TextChange(text="full")])
    assert doc.text == "full"
    store.close("file:///a.py")
    with pytest.raises(UnknownDocument, match="didOpen"):
        store.get("file:///a.py")


def test_eol_detection():
    store = DocumentStore()
    assert store.open("u", "a\nb\r\n").eol == "\n"
    assert store.open("u", "a\r\nb\n").eol == "\r\n"
    assert store.open("u", "one line").eol == "\n"
