"""tree-sitter: single- vs multi-line from the node at the cursor, and insertions that parse.

Grammars come from the `tree-sitter-<language>` packages (`tree-sitter-python` is a dependency of
the `lsp` extra; others are optional: install e.g. `tree-sitter-javascript` and it is used). A
language with no grammar installed still completes: `grammar_for` returns None and the callers
fall back to line-based rules (`stops.auto_mode`) and skip the syntax check.

Only a window around the cursor is parsed (`WINDOW_BEFORE`/`WINDOW_AFTER` characters, starting
at a line start), so the cost is bounded on any file: tree-sitter takes seconds on 5 MB.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from functools import lru_cache

from ..diffusion_core.stops import auto_mode
from ..diffusion_core.syntax_guard import window as _window

log = logging.getLogger(__name__)

WINDOW_BEFORE = 12_000
WINDOW_AFTER = 4_000

# language id (LSP's languageId) -> (module of the grammar package, function returning the language)
GRAMMARS = {
    "python": ("tree_sitter_python", "language"),
    "javascript": ("tree_sitter_javascript", "language"),
    "javascriptreact": ("tree_sitter_javascript", "language"),
    "typescript": ("tree_sitter_typescript", "language_typescript"),
    "typescriptreact": ("tree_sitter_typescript", "language_tsx"),
    "rust": ("tree_sitter_rust", "language"),
    "go": ("tree_sitter_go", "language"),
    "c": ("tree_sitter_c", "language"),
    "cpp": ("tree_sitter_cpp", "language"),
    "java": ("tree_sitter_java", "language"),
    "lua": ("tree_sitter_lua", "language"),
    "shellscript": ("tree_sitter_bash", "language"),
}
EXTENSIONS = {".py": "python", ".pyi": "python", ".js": "javascript", ".jsx": "javascriptreact",
              ".ts": "typescript", ".tsx": "typescriptreact", ".rs": "rust", ".go": "go", ".c": "c",
              ".h": "c", ".cc": "cpp", ".cpp": "cpp", ".hpp": "cpp", ".java": "java", ".lua": "lua",
              ".sh": "shellscript"}
LINE_COMMENTS = {"python": "#", "shellscript": "#", "lua": "--"}  # others: "//"

# node types (across grammars) that mean "inside a bracketed list": one element per line
BRACKET_NODES = frozenset({
    "argument_list", "arguments", "parameters", "formal_parameters", "list", "tuple", "set",
    "dictionary", "array", "object", "parenthesized_expression", "subscript", "list_comprehension",
    "set_comprehension", "dictionary_comprehension", "generator_expression", "type_arguments",
    "type_parameters", "tuple_expression", "array_expression", "field_initializer_list",
})


def language_id_for(uri: str, language_id: str = "") -> str:
    """The client's languageId, or one guessed from the file extension."""
    if language_id:
        return language_id
    path = uri.rsplit("/", 1)[-1]
    dot = path.rfind(".")
    return EXTENSIONS.get(path[dot:].lower(), "") if dot != -1 else ""


def line_comment_for(language_id: str) -> str | None:
    if not language_id:
        return None
    return LINE_COMMENTS.get(language_id, "//")


@dataclass
class Grammar:
    name: str
    parser: object  # tree_sitter.Parser

    def parse(self, text: str):
        return self.parser.parse(text.encode("utf-8", "surrogatepass"))


@lru_cache(maxsize=None)
def grammar_for(language_id: str) -> Grammar | None:
    """The tree-sitter grammar of a language, or None when its package is not installed."""
    spec = GRAMMARS.get(language_id)
    if spec is None:
        return None
    try:
        import tree_sitter

        module = importlib.import_module(spec[0])
        language = tree_sitter.Language(getattr(module, spec[1])())
        return Grammar(name=language_id, parser=tree_sitter.Parser(language))
    except (ImportError, AttributeError, ValueError, TypeError) as e:
        log.info("no tree-sitter grammar for %s (%s); install %s for syntax-aware completion",
                 language_id, e, spec[0].replace("_", "-"))
        return None


def window(prefix: str, suffix: str) -> tuple[str, str]:
    """The text around the cursor that is parsed: whole lines, at most the WINDOW_* sizes."""
    return _window(prefix, suffix, WINDOW_BEFORE, WINDOW_AFTER)


@dataclass(frozen=True, kw_only=True)
class CursorContext:
    node_type: str = ""  # the smallest node at the cursor
    in_string: bool = False
    in_comment: bool = False
    in_brackets: bool = False


def cursor_context(grammar: Grammar, prefix: str, suffix: str) -> CursorContext:
    """What the cursor is inside, from the syntax tree of the window around it."""
    prefix, suffix = window(prefix, suffix)
    tree = grammar.parse(prefix + suffix)
    at = len(prefix.encode("utf-8", "surrogatepass"))
    node = tree.root_node.descendant_for_byte_range(max(at - 1, 0), at)
    first = node.type if node is not None else ""
    in_string = in_comment = in_brackets = False
    while node is not None:
        t = node.type
        inside = node.start_byte < at and (at < node.end_byte or node.has_error or node.is_missing)
        if "comment" in t and node.start_byte < at <= node.end_byte:
            in_comment = True  # a line comment runs to the end of its line: its end is inside
        elif inside and ("string" in t or t in ("template_string", "raw_string_literal")):
            # a string that ends at the cursor is closed: the cursor is after it
            closed = node.end_byte == at and not node.has_error
            in_string = in_string or not closed
        elif t in BRACKET_NODES and node.start_byte < at < node.end_byte:
            in_brackets = True
        if t in ("block", "statement_block", "compound_statement", "function_definition",
                 "class_definition", "module", "program", "source_file"):
            break  # bracket/string context is local: stop at the enclosing statement block
        node = node.parent
    return CursorContext(node_type=first, in_string=in_string, in_comment=in_comment,
                         in_brackets=in_brackets)


def choose_mode(prefix: str, suffix: str, grammar: Grammar | None, modes: tuple[str, ...] = ("line", "block")) -> str:
    """"line" (finish the current line) or "block" (write several lines) at the cursor.

    - mid-line (text other than closing brackets after the cursor): line;
    - inside a string, a comment or a bracketed list (tree-sitter): line;
    - at the start of a blank line, or after a line that opens a block (`:` or `{`): block;
    - otherwise line. Without a grammar, `stops.auto_mode` decides.
    `modes` are the modes the user allows; when it holds one, that one is used.
    """
    if len(modes) == 1:
        return modes[0]
    rest = suffix.split("\n", 1)[0].replace("\r", "")
    line_before = prefix[prefix.rfind("\n") + 1:]
    if rest.strip(" \t)]}\"'`;,"):
        return "line"
    if grammar is None:
        mode = auto_mode(prefix, suffix.lstrip(")]}\"'`;, \t"))
    else:
        ctx = cursor_context(grammar, prefix, suffix)
        if ctx.in_string or ctx.in_comment or ctx.in_brackets:
            mode = "line"
        elif not line_before.strip() or line_before.rstrip().endswith((":", "{")):
            mode = "block"
        else:
            mode = "line"
    return mode if mode in modes else modes[0]


def _count_errors(node) -> int:
    """ERROR and MISSING nodes under `node` (visiting only subtrees that hold errors)."""
    if not node.has_error and not node.is_missing:
        return 0
    n = int(node.is_error or node.is_missing)
    return n + sum(_count_errors(c) for c in node.children)


def new_errors(grammar: Grammar, prefix: str, text: str, suffix: str) -> int:
    """How many syntax errors inserting `text` adds to the window around the cursor (<= 0: none)."""
    prefix, suffix = window(prefix, suffix)
    before = _count_errors(grammar.parse(prefix + suffix).root_node)
    after = _count_errors(grammar.parse(prefix + text + suffix).root_node)
    return after - before


def trim_to_parse(grammar: Grammar | None, prefix: str, text: str, suffix: str) -> str:
    """The longest whole-line prefix of a multi-line `text` that adds no syntax error.

    Single-line text, text that parses, and text none of whose line prefixes parse are
    returned unchanged (a partial line is as likely to be completed by the user as wrong).
    """
    if grammar is None or "\n" not in text.strip("\n") or new_errors(grammar, prefix, text, suffix) <= 0:
        return text
    lines = text.split("\n")
    for k in range(len(lines) - 1, 0, -1):
        head = "\n".join(lines[:k])
        if head.strip() and new_errors(grammar, prefix, head, suffix) <= 0:
            return head
    return text


FUNCTION_NODES = frozenset({"function_definition", "function_declaration", "method_definition",
                            "function_item", "arrow_function", "function_expression", "method_declaration"})


def _char_offset(text_bytes: bytes, byte: int) -> int:
    return len(text_bytes[:byte].decode("utf-8", "surrogatepass"))


def function_span(grammar: Grammar, text: str, offset: int) -> tuple[int, int] | None:
    """[start, end) (characters) of the innermost function around `offset`, from the start of
    its first line (decorators included) to the end of its last line (newline included), or None
    outside any function. The whole document is parsed (a function may be long)."""
    data = text.encode("utf-8", "surrogatepass")
    at = len(text[:offset].encode("utf-8", "surrogatepass"))
    node = grammar.parse(text).root_node.descendant_for_byte_range(at, at)
    while node is not None and node.type not in FUNCTION_NODES:
        node = node.parent
    if node is None:
        return None
    if node.parent is not None and node.parent.type == "decorated_definition":
        node = node.parent
    start = _char_offset(data, node.start_byte)
    start = text.rfind("\n", 0, start) + 1
    end = _char_offset(data, node.end_byte)
    nl = text.find("\n", end)
    return start, (nl + 1 if nl != -1 else len(text))


def error_in(grammar: Grammar, text: str, start: int, end: int) -> bool:
    """Whether tree-sitter sees a syntax error (ERROR or MISSING node) within text[start:end]."""
    a = len(text[:start].encode("utf-8", "surrogatepass"))
    b = a + len(text[start:end].encode("utf-8", "surrogatepass"))

    def walk(node) -> bool:
        if node.end_byte <= a or node.start_byte >= b or not (node.has_error or node.is_missing):
            return False
        return node.is_error or node.is_missing or any(walk(c) for c in node.children)
    return walk(grammar.parse(text).root_node)
