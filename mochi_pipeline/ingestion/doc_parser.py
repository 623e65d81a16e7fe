"""Split documentation into sections by heading, keeping code blocks verbatim with their language.

Markdown (ATX and setext headings, ``` and ~~~ fences), reStructuredText (underlined and
overlined titles, ``code-block``/``code``/``sourcecode`` directives, ``::`` literal blocks) and
AsciiDoc (``=`` titles, ``[source,lang]`` listing blocks). Headings inside code blocks are code,
not headings. Any other file is one section. Line numbers are 1-based and inclusive.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field

from mochi_pipeline.ingestion.languages import language_for
from mochi_pipeline.records import CodeBlock, DocSection

FORMATS = {"markdown": "markdown", "rst": "rst", "asciidoc": "asciidoc"}


def doc_format(path: str) -> str:
    """markdown, rst, asciidoc, or text (anything else)."""
    return FORMATS.get(language_for(path), "text")


def parse_document(path: str, text: str) -> list[DocSection]:
    """Sections of one document, in order; sections with no text and no code are left out."""
    fmt = doc_format(path)
    # Windows line endings would defeat every end-of-line pattern; line numbers are unchanged.
    lines = text.replace("\r\n", "\n").splitlines(keepends=True)
    builder = _Builder(path, fmt)
    if fmt == "markdown":
        _parse_markdown(lines, builder)
    elif fmt == "rst":
        _parse_rst(lines, builder)
    elif fmt == "asciidoc":
        _parse_asciidoc(lines, builder)
    else:
        for i, line in enumerate(lines, 1):
            builder.body(i, line)
    return builder.finish()


@dataclass
class _Open:
    heading_path: list[str]
    start_line: int
    lines: list[tuple[int, str]] = field(default_factory=list)
    code_blocks: list[CodeBlock] = field(default_factory=list)


class _Builder:
    """Collects body lines and code blocks under the current heading."""

    def __init__(self, path: str, fmt: str) -> None:
        self.path, self.fmt = path, fmt
        self.stack: list[tuple[int, str]] = []
        self.sections: list[DocSection] = []
        self.current = _Open([], 1)

    def heading(self, level: int, title: str, line_no: int) -> None:
        self._close()
        while self.stack and self.stack[-1][0] >= level:
            self.stack.pop()
        self.stack.append((level, title.strip()))
        self.current = _Open([t for _, t in self.stack], line_no)

    def body(self, line_no: int, line: str) -> None:
        self.current.lines.append((line_no, line))

    def code(self, language: str, code: str, start_line: int) -> None:
        self.current.code_blocks.append(CodeBlock(language=language, code=code, start_line=start_line))

    def _close(self) -> None:
        cur = self.current
        body = [(n, line) for n, line in cur.lines]
        while body and not body[-1][1].strip():
            body.pop()
        first = next((k for k, (_, line) in enumerate(body) if line.strip()), len(body))
        body = body[first:]
        if not body and not cur.code_blocks:
            return
        end = body[-1][0] if body else cur.start_line
        self.sections.append(DocSection(
            path=self.path, heading_path=cur.heading_path, text="".join(line for _, line in body).rstrip("\n"),
            code_blocks=cur.code_blocks, start_line=cur.start_line, end_line=end, format=self.fmt,
        ))

    def finish(self) -> list[DocSection]:
        self._close()
        return self.sections


# --- Markdown -------------------------------------------------------------------------------

_MD_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})(.*)$")
_MD_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_MD_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")


def _fence_language(info: str) -> str:
    word = info.strip().split(maxsplit=1)[0] if info.strip() else ""
    return word.strip("{}.").split(",")[0]


def _parse_markdown(lines: list[str], b: _Builder) -> None:
    i, in_paragraph = 0, False
    while i < len(lines):
        line, n = lines[i], i + 1
        fence = _MD_FENCE.match(line.rstrip("\n"))
        if fence and not (fence.group(2)[0] == "`" and "`" in fence.group(3)):
            mark = fence.group(2)
            close = re.compile(rf"^\s*{re.escape(mark[0])}{{{len(mark)},}}\s*$")
            j = i + 1
            while j < len(lines) and not close.match(lines[j]):
                j += 1
            for k in range(i, min(j + 1, len(lines))):
                b.body(k + 1, lines[k])
            b.code(_fence_language(fence.group(3)), "".join(lines[i + 1 : j]), n + 1)
            i, in_paragraph = j + 1, False
            continue
        atx = _MD_ATX.match(line.rstrip("\n"))
        if atx:
            b.heading(len(atx.group(1)), atx.group(2) or "", n)
            i, in_paragraph = i + 1, False
            continue
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        setext = _MD_SETEXT.match(nxt.rstrip("\n"))
        # A setext underline turns the paragraph line above it into a heading (not after a list of text).
        if setext and line.strip() and not in_paragraph and not line.startswith("    "):
            b.heading(1 if setext.group(1)[0] == "=" else 2, line.strip(), n)
            i, in_paragraph = i + 2, False
            continue
        b.body(n, line)
        in_paragraph = bool(line.strip())
        i += 1


# --- reStructuredText -----------------------------------------------------------------------

_RST_ADORNMENT = re.compile(r"""^([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~])\1{2,}[ \t]*$""")
_RST_CODE_DIRECTIVE = re.compile(r"^(\s*)\.\.\s+(?:code-block|code|sourcecode)::\s*(\S*)\s*$")
_RST_HIGHLIGHT = re.compile(r"^\s*\.\.\s+highlight::\s*(\S+)\s*$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _rst_block(lines: list[str], start: int, base_indent: int, skip_options: bool) -> tuple[str, int, int]:
    """The indented block after line ``start``: (dedented code, first code line number, next index)."""
    j = start
    if skip_options:  # directive options like ":linenos:" directly under the directive
        while j < len(lines) and lines[j].strip().startswith(":") and _indent(lines[j]) > base_indent:
            j += 1
    while j < len(lines) and not lines[j].strip():
        j += 1
    first = j
    while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > base_indent):
        j += 1
    end = j
    while end > first and not lines[end - 1].strip():
        end -= 1
    return textwrap.dedent("".join(lines[first:end])), first + 1, end


def _parse_rst(lines: list[str], b: _Builder) -> None:
    styles: list[tuple[str, bool]] = []  # adornment styles in order of first use = heading levels
    default_language = ""
    i = 0

    def level(style: tuple[str, bool]) -> int:
        if style not in styles:
            styles.append(style)
        return styles.index(style) + 1

    while i < len(lines):
        line, n = lines[i], i + 1
        stripped = line.rstrip("\n")
        directive = _RST_CODE_DIRECTIVE.match(stripped)
        if directive:
            code, code_line, j = _rst_block(lines, i + 1, len(directive.group(1)), skip_options=True)
            b.code(directive.group(2), code, code_line)
            for k in range(i, j):
                b.body(k + 1, lines[k])
            i = j
            continue
        highlight = _RST_HIGHLIGHT.match(stripped)
        if highlight:
            default_language = highlight.group(1)
        if stripped.rstrip().endswith("::") and not stripped.lstrip().startswith(".."):
            b.body(n, line)
            code, code_line, j = _rst_block(lines, i + 1, _indent(line), skip_options=False)
            if code.strip():
                b.code(default_language, code, code_line)
                for k in range(i + 1, j):
                    b.body(k + 1, lines[k])
                i = j
            else:
                i += 1
            continue
        nxt = lines[i + 1].rstrip() if i + 1 < len(lines) else ""
        after = lines[i + 2].rstrip() if i + 2 < len(lines) else ""
        over = _RST_ADORNMENT.match(stripped)
        if over and nxt.strip() and after == stripped.rstrip() and len(stripped.rstrip()) >= len(nxt.strip()):
            b.heading(level((stripped[0], True)), nxt, n)
            i += 3
            continue
        under = _RST_ADORNMENT.match(nxt)
        if (under and stripped.strip() and not line[0].isspace() and not _RST_ADORNMENT.match(stripped)
                and len(nxt) >= len(stripped.rstrip())):
            b.heading(level((nxt[0], False)), stripped, n)
            i += 2
            continue
        b.body(n, line)
        i += 1


# --- AsciiDoc -------------------------------------------------------------------------------

_ADOC_HEADING = re.compile(r"^(={1,6})[ \t]+(.+?)(?:[ \t]+=+)?[ \t]*$")
_ADOC_SOURCE_ATTR = re.compile(r"^\[(?:source)?,\s*([^,\]\s]+)[^\]]*\]\s*$|^\[source\]\s*$")
_ADOC_DELIMITER = re.compile(r"^(-{4,}|\.{4,}|/{4,}|\+{4,}|`{3})([\w+#-]*)\s*$")
_ADOC_CODE_DELIMITERS = ("-", ".", "`")


def _parse_asciidoc(lines: list[str], b: _Builder) -> None:
    i, language = 0, None  # language: set by a [source,...] line for the block right after it
    while i < len(lines):
        line, n = lines[i], i + 1
        stripped = line.rstrip("\n").rstrip()
        attr = _ADOC_SOURCE_ATTR.match(stripped)
        if attr:
            language = attr.group(1) or ""
            b.body(n, line)
            i += 1
            continue
        delim = _ADOC_DELIMITER.match(stripped)
        if delim:
            mark = delim.group(1)
            j = i + 1
            while j < len(lines) and lines[j].rstrip() != mark:
                j += 1
            for k in range(i, min(j + 1, len(lines))):
                b.body(k + 1, lines[k])
            if mark[0] in _ADOC_CODE_DELIMITERS:
                b.code(delim.group(2) or language or "", "".join(lines[i + 1 : j]), n + 1)
            i, language = j + 1, None
            continue
        heading = _ADOC_HEADING.match(stripped)
        if heading:
            b.heading(len(heading.group(1)), heading.group(2), n)
        else:
            b.body(n, line)
        # A [source,...] line reaches past blank lines and a block title (".Title") to its block.
        language = language if not stripped or stripped.startswith(".") else None
        i += 1
