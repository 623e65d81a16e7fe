"""Facts read off a code chunk's text: the names it defines, their docstrings and signatures.

Plain regular expressions over the chunk text: the chunker already cut along syntax boundaries,
so a chunk holds whole definitions and a line-oriented reading is enough here. The patterns are
compiled once; a name is looked for with string searches, never a regular expression compiled per
name (thousands of names made compiling the main cost).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mochi_pipeline.records import Chunk

# A definition keyword followed by the defined name, for the languages the chunker supports.
_DEFINITION = re.compile(
    r"^[ \t]*(?:(?:export|default|async|public|private|protected|static|final|abstract|sealed|pub(?:\([^)]*\))?)\s+)*"
    r"(?:def|class|function|fn|func|struct|interface|enum|trait|impl|type)\s+"
    r"(?:\([^)]*\)\s*)?([A-Za-z_]\w*)",
    re.M,
)
# C-family functions and methods: `int add(int a, int b) {`, `public void increment() {`.
_C_FUNCTION = re.compile(
    r"^[ \t]*(?:(?:public|private|protected|static|final|inline|virtual|const|unsigned|export)\s+)*"
    r"[A-Za-z_][\w:<>,\s\*&\[\]]*?[\s\*&]([A-Za-z_]\w*)\s*\([^;{}]*\)\s*(?:const\s*)?\{",
    re.M,
)
# Methods in JS/TS/C++ class bodies: `  on(name, fn) {`, `  area(): number {`.
_METHOD = re.compile(r"^[ \t]+(?:async\s+|static\s+)*([A-Za-z_]\w*)\s*\([^;{}]*\)\s*(?::\s*[\w<>\[\]|, ]+)?\s*\{", re.M)
_NOT_A_TYPE = {
    "return",
    "new",
    "throw",
    "yield",
    "await",
    "else",
    "case",
    "assert",
    "print",
    "raise",
    "not",
    "and",
    "or",
    "in",
}
_KEYWORDS = {"if", "for", "while", "switch", "return", "catch", "else", "do", "sizeof", "new", "constructor"}

_PY_DEF = re.compile(r"^[ \t]*(?:async\s+)?(?:def|class)\s+(\w+)\b", re.M)
_PY_DOCSTRING_AFTER = re.compile(r".*?:[ \t]*(?:#[^\n]*)?\n\s*[rRuU]?(\"\"\"|''')(.*?)\1", re.S)
_TYPED_PREFIX = re.compile(r"[ \t]*((?:[\w<>\*&:]+\s+)+)")
_TYPE_KEYWORD = re.compile(r"\b(?:class|struct|interface|enum|trait|type|impl)\s+(\w+)")
_COMMENT_PREFIX = re.compile(r"^\s*(?:///?|#|/\*\*?|\*/?|--)\s?")


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _boundary(text: str, i: int) -> bool:
    """Whether a regular expression's ``\\b`` holds at position ``i`` of ``text``."""
    before = i > 0 and _is_word(text[i - 1])
    after = i < len(text) and _is_word(text[i])
    return before != after


def find_word(text: str, name: str, start: int = 0) -> int:
    """Index of ``name`` as a whole word (``\\bname\\b``) in ``text`` from ``start``, or -1."""
    while (i := text.find(name, start)) != -1:
        if _boundary(text, i) and _boundary(text, i + len(name)):
            return i
        start = i + 1
    return -1


def find_call(text: str, name: str, start: int = 0) -> tuple[int, int] | None:
    """(start, end) of ``\\bname\\s*\\(`` in ``text`` from ``start`` (end just after the parenthesis), or None."""
    while (i := text.find(name, start)) != -1:
        j = i + len(name)
        while j < len(text) and text[j].isspace():
            j += 1
        if _boundary(text, i) and j < len(text) and text[j] == "(":
            return i, j + 1
        start = i + 1
    return None


def short_name(symbol: str) -> str:
    """`Point.distance_to` -> `distance_to`."""
    return re.split(r"\.|::", symbol)[-1] if symbol else ""


def defined_names(chunk: Chunk) -> list[str]:
    """Names defined in the chunk: its symbol (qualified and short) and every definition found in its text."""
    names: list[str] = []
    for symbol in re.split(r",\s*", chunk.symbol):  # a merged chunk lists several: "A, A.add, A.total"
        names += [symbol, short_name(symbol)]
    for pattern in (_DEFINITION, _C_FUNCTION, _METHOD):
        names += [m.group(1) for m in pattern.finditer(chunk.text) if m.group(1) not in _KEYWORDS]
    return list(dict.fromkeys(n for n in names if n))


def docstring(chunk: Chunk, name: str) -> str:
    """The documentation of ``name`` inside the chunk: a Python docstring or the comment block above it."""
    if not name:
        return ""
    for definition in _PY_DEF.finditer(chunk.text):
        if definition.group(1) == name and (py := _PY_DOCSTRING_AFTER.match(chunk.text, definition.end())):
            return _dedent_doc(py.group(2))
    lines = chunk.text.splitlines()
    for i, line in enumerate(lines):
        if (
            find_word(line, name) != -1
            and not _COMMENT_PREFIX.match(line)
            and _is_definition_line(line, name)
        ):
            comments: list[str] = []
            j = i - 1
            while (
                j >= 0
                and lines[j].strip()
                and _COMMENT_PREFIX.match(lines[j])
                and not lines[j].strip().startswith("#include")
            ):
                comments.append(_COMMENT_PREFIX.sub("", lines[j]).strip())
                j -= 1
            return " ".join(c for c in reversed(comments) if c and c != "/").strip()
    return ""


def _is_definition_line(line: str, name: str) -> bool:
    for pattern in (_DEFINITION, _C_FUNCTION, _METHOD):
        m = pattern.match(line)
        if m and m.group(1) == name:
            return True
    # `^[ \t]*((?:[\w<>\*&:]+\s+)+)name\s*\(`: a typed C-family definition, `int add(`.
    at = 0
    while (call := find_call(line, name, at)) is not None:
        prefix = _TYPED_PREFIX.fullmatch(line, 0, call[0])
        if prefix:
            return prefix.group(1).split()[0] not in _NOT_A_TYPE
        at = call[0] + 1
    return False


def _dedent_doc(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines()]
    return "\n".join(lines).strip()


@dataclass(frozen=True)
class Signature:
    name: str
    params: list[str]
    returns: str
    text: str


def signature(chunk: Chunk, name: str) -> Signature | None:
    """The parameter list and return annotation of ``name``'s definition, when it is a callable."""
    if not name:
        return None
    start = find_call(chunk.text, name)
    while start and not _is_definition_line(_line_at(chunk.text, start[0]), name):
        start = find_call(chunk.text, name, start[1])
    if not start:
        return None
    if any(m.group(1) == name for m in _TYPE_KEYWORD.finditer(_line_at(chunk.text, start[0]))):
        return None  # a type, not a callable: its parentheses are base classes
    open_at = start[1] - 1
    close_at = _matching_paren(chunk.text, open_at)
    if close_at < 0:
        return None
    params = [p.strip() for p in _split_top_level(chunk.text[open_at + 1 : close_at]) if p.strip()]
    params = [p for p in params if p not in ("self", "cls", "&self", "&mut self", "void")]
    tail = chunk.text[close_at + 1 :].split("\n", 1)[0]
    returns = ""
    arrow = re.match(r"\s*->\s*([^:{]+)", tail)
    colon = re.match(r"\s*:\s*([^{=]+?)\s*(?:\{|=>|$)", tail)
    if arrow:
        returns = arrow.group(1).strip()
    elif colon and chunk.language in ("typescript", "tsx"):
        returns = colon.group(1).strip()
    elif chunk.language == "go":
        returns = tail.split("{", 1)[0].strip()
    line_start = chunk.text.rfind("\n", 0, start[0]) + 1
    text = chunk.text[line_start : close_at + 1] + tail.split("{", 1)[0].rstrip()
    return Signature(name=name, params=params, returns=returns, text=text.strip().rstrip(":").strip())


def _line_at(text: str, pos: int) -> str:
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    return text[start : end if end >= 0 else len(text)]


def _matching_paren(text: str, open_at: int) -> int:
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] in "([{":
            depth += 1
        elif text[i] in ")]}":
            depth -= 1
            if depth == 0:
                return i
    return -1


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, []
    for ch in text:
        if ch in "([{<":
            depth += 1
        elif ch in ")]}>":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _brace_delta(line: str) -> int:
    # Brackets in strings are rare at statement starts; counting them keeps this language-neutral.
    return sum(line.count(c) for c in "({[") - sum(line.count(c) for c in ")}]")


def block_end(lines: list[str], start: int, max_lines: int) -> int:
    """End (exclusive) of the statement starting at ``lines[start]`` with its indented body or braces."""
    base = _indent(lines[start])
    depth = _brace_delta(lines[start])
    end = start + 1
    while end < len(lines) and end - start < max_lines:
        line = lines[end]
        if depth > 0:
            depth += _brace_delta(line)
            end += 1
            continue
        if line.strip() and _indent(line) <= base:
            break
        depth += _brace_delta(line)
        end += 1
    while end - 1 > start and not lines[end - 1].strip():
        end -= 1
    return end


def definition_text(chunk: Chunk, name: str) -> str:
    """The definition of ``name`` alone (decorators and comments above it included), else the whole chunk."""
    lines = chunk.text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if find_word(line, name) != -1 and _is_definition_line(line, name):
            start = i
            while (
                start > 0
                and lines[start - 1].strip().startswith(("@", "//", "#", "/*", "*"))
                and not lines[start - 1].strip().startswith("#include")
            ):
                start -= 1
            return "".join(lines[start : block_end(lines, i, len(lines))])
    return chunk.text
