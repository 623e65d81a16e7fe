"""Context headers: what a reader of one chunk needs from the rest of its file.

A header names the file, gives the first line of the module docstring (or leading comment), the
import lines whose bound names the chunk uses, and the signature of the enclosing class(es). It is
written as comment lines in the chunk's language (imports verbatim), so it can be prepended to the
chunk as valid code.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from tree_sitter import Node

from mochi_pipeline.preprocessing.grammars import LanguageSpec, unwrap

_COMMENT_MARKS = re.compile(r"^\s*(?:/\*+|\*+/?|//+!?|#+!?|--)?\s*")
MAX_IMPORT_LINES = 20
MAX_DOC_CHARS = 160


@dataclass(frozen=True)
class ImportLine:
    text: str
    start: int  # 0-based first line in the file
    end: int
    names: frozenset[str] | None  # None: always relevant (C includes)


@dataclass(frozen=True)
class FileContext:
    comment_prefix: str
    module_doc: str
    imports: tuple[ImportLine, ...]
    uses: dict[str, list[int]]  # imported name -> sorted 0-based lines where it occurs


def _name_lines(text: str, names: set[str]) -> dict[str, list[int]]:
    """Lines on which each name occurs as a whole word (one scan of the file per name)."""
    line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
    found: dict[str, list[int]] = {}
    for name in names:
        lines = []
        for m in re.finditer(re.escape(name) + r"(?![\w])", text):
            before = text[m.start() - 1] if m.start() else " "
            if not (before.isalnum() or before in "_."):
                lines.append(bisect.bisect_right(line_starts, m.start()) - 1)
        found[name] = lines
    return found


def _used_within(lines: list[int] | tuple[()], start: int, end: int) -> bool:
    i = bisect.bisect_left(lines, start)
    return i < len(lines) and lines[i] <= end


def _node_text(node: Node) -> str:
    return node.text.decode("utf-8", "replace") if node.text is not None else ""


def _first_doc_line(raw: str) -> str:
    for line in raw.splitlines():
        line = _COMMENT_MARKS.sub("", line).strip().strip("\"'").strip()
        line = line.rstrip("*/").strip()
        if line:
            return line[:MAX_DOC_CHARS]
    return ""


def _module_doc(spec: LanguageSpec, root: Node) -> str:
    children = root.named_children
    if spec.name == "python":
        first = children[0] if children else None
        if first is not None and first.type == "expression_statement" and first.named_children \
                and first.named_children[0].type == "string":
            return _first_doc_line(_node_text(first.named_children[0]).strip("\"'rbuRBU"))
        return ""
    # Leading comments of the file, unless they sit directly on a definition (then they document it).
    lead: list[Node] = []
    for child in children:
        if child.type not in spec.comments:
            nxt = unwrap(spec, child)
            documents_def = nxt.type in spec.functions or nxt.type in spec.classes
            if lead and documents_def and child.start_point.row <= lead[-1].end_point.row + 1:
                return ""
            break
        lead.append(child)
    return _first_doc_line("\n".join(_node_text(c) for c in lead)) if lead else ""


def _python_names(text: str) -> frozenset[str]:
    text = re.sub(r"[()\\]", " ", text)
    m = re.match(r"\s*from\s+\S+\s+import\s+(.*)", text, re.S)
    items = m.group(1).split(",") if m else re.sub(r"^\s*import\s+", "", text).split(",")
    names = set()
    for item in items:
        parts = item.split()
        if not parts or parts[0] == "*":
            continue
        names.add(parts[-1] if len(parts) >= 3 and parts[-2] == "as" else parts[0].split(".")[0])
    return frozenset(names)


def _js_names(text: str) -> frozenset[str]:
    m = re.match(r"\s*import\s+(?:type\s+)?(.*?)\s+from\s", text, re.S)
    if not m:
        return frozenset()
    names = set()
    for item in re.split(r"[,{}]", m.group(1)):
        parts = [p for p in item.split() if p != "type"]
        if parts and parts[-1] != "*":
            names.add(parts[-1])
    return frozenset(names)


def _path_names(text: str, sep: str) -> frozenset[str]:
    """Java/Rust/C++ ``using``: the last path segment, or the alias, of each imported item."""
    body = re.sub(r"^\s*(?:pub\s+)?(?:import|use|using)\s+(?:static\s+)?", "", text).rstrip().rstrip(";")
    prefix, _, group = body.partition("{")
    items = group.rstrip("}").split(",") if group else [prefix]
    names = set()
    for item in items:
        parts = item.split()
        if not parts:
            continue
        if len(parts) >= 3 and parts[-2] == "as":
            names.add(parts[-1])
            continue
        last = parts[0].split(sep)[-1].strip("{} ")
        if last == "self":
            last = prefix.rstrip(sep).split(sep)[-1]
        if last and last != "*":
            names.add(last)
    return frozenset(names)


def _go_imports(node: Node) -> list[ImportLine]:
    lines = []
    specs = [n for n in node.named_children if n.type == "import_spec"]
    for spec_list in (n for n in node.named_children if n.type == "import_spec_list"):
        specs += [n for n in spec_list.named_children if n.type == "import_spec"]
    for spec in specs:
        path = _node_text(spec.child_by_field_name("path")).strip('"`')
        alias = spec.child_by_field_name("name")
        name = _node_text(alias) if alias is not None else path.rsplit("/", 1)[-1]
        shown = f'import {name} "{path}"' if alias is not None else f'import "{path}"'
        lines.append(ImportLine(shown, spec.start_point.row, spec.end_point.row, frozenset({name})))
    return lines


def _imports(spec: LanguageSpec, root: Node) -> list[ImportLine]:
    found: list[ImportLine] = []
    for child in root.named_children:
        if child.type not in spec.imports:
            continue
        if spec.name == "go":
            found += _go_imports(child)
            continue
        text = _node_text(child).strip()
        if spec.name == "python":
            names: frozenset[str] | None = _python_names(text)
        elif spec.name in {"javascript", "typescript", "tsx"}:
            names = _js_names(text)
        elif spec.name in {"java"}:
            names = _path_names(text, ".")
        elif child.type == "preproc_include":
            names = None
        else:
            names = _path_names(text, "::")
        found.append(ImportLine(text, child.start_point.row, child.end_point.row, names))
    return found


def file_context(spec: LanguageSpec, root: Node, text: str) -> FileContext:
    imports = _imports(spec, root)
    names = {n for imp in imports if imp.names is not None for n in imp.names}
    return FileContext(spec.comment_prefix, _module_doc(spec, root), tuple(imports), _name_lines(text, names))


def class_signature(outer: Node, body: Node | None, source: bytes) -> str:
    """A class's declaration up to its body (decorators included), on one line."""
    end = body.start_byte if body is not None else outer.end_byte
    return " ".join(source[outer.start_byte:end].decode("utf-8", "replace").split())


def context_body(ctx: FileContext, start: int, end: int, scope: tuple[str, ...]) -> str:
    """Header lines (without the file line) for a chunk spanning 0-based lines ``start..end``."""
    prefix = ctx.comment_prefix
    lines = []
    if ctx.module_doc:
        lines.append(f"{prefix} Module: {ctx.module_doc}")
    imports = [imp.text for imp in ctx.imports
               if not (start <= imp.start and imp.end <= end)
               and (imp.names is None or any(_used_within(ctx.uses.get(n, ()), start, end) for n in imp.names))]
    lines += imports[:MAX_IMPORT_LINES]
    lines += [f"{prefix} In: {sig}" for sig in scope]
    return "\n".join(lines)


def context_header(path: str, ctx_prefix: str, body: str) -> str:
    head = f"{ctx_prefix} File: {path}"
    return f"{head}\n{body}" if body else head
