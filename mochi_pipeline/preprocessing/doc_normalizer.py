"""Clean documentation text for training: markup noise out, prose and code in.

Outside code blocks: HTML comments and tags removed (their inner text kept), badge images removed,
other images reduced to their alt text, links reduced to their text (Markdown inline and reference
links, reStructuredText ```text <url>`_``, AsciiDoc ``link:url[text]``), reference-link definitions
dropped, trailing spaces stripped and runs of blank lines collapsed to one. Code blocks (Markdown
fences, AsciiDoc ``----``/``....`` blocks, reStructuredText literal blocks) are kept verbatim, and
so is every ``CodeBlock`` of the section.
"""

from __future__ import annotations

import re

from mochi_pipeline.records import DocSection

_HTML_COMMENT = re.compile(r"<!--.*?-->", re.S)
_HTML_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>")
_BADGE_HOSTS = r"(?:shields\.io|badge|travis-ci|circleci|codecov|coveralls|badgen|github\.com/[^)\s]*/workflows/)"
# [![alt](image)](link) and ![alt](image) whose image is a badge.
_LINKED_BADGE = re.compile(r"\[!\[[^\]]*\]\([^)]*" + _BADGE_HOSTS + r"[^)]*\)\]\([^)]*\)")
_BADGE_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*" + _BADGE_HOSTS + r"[^)]*\)")
_RST_BADGE = re.compile(r"^\.\. (?:\|[^|]+\| )?image:: \S*" + _BADGE_HOSTS + r"\S*\n(?:[ \t]+:\w+:.*\n)*", re.M)
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_INLINE_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_REF_LINK = re.compile(r"\[([^\]]+)\]\[[^\]]*\]")
_REF_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s+\S+.*(?:\n|$)", re.M)
_RST_LINK = re.compile(r"`([^`<]+?)\s*<[^>]+>`__?")
_ADOC_URL_LINK = re.compile(r"\b(?:link:\S+|https?://\S+)\[([^\]]*)\]")
_BLANK_RUNS = re.compile(r"\n{3,}")

_MD_FENCE = re.compile(r"^(?P<i>[ \t]{0,3})(?P<f>`{3,}|~{3,}).*?\n(?:.*\n)*?(?P=i)?(?P=f)[ \t]*$", re.M)
_ADOC_BLOCK = re.compile(r"^(?P<d>-{4,}|\.{4,})[ \t]*\n(?:.*\n)*?(?P=d)[ \t]*$", re.M)
# An rST literal block: a line ending in "::" (or a code directive), then indented lines.
_RST_LITERAL = re.compile(
    r"^(?:.*::|\.\. (?:code-block|code|sourcecode)::.*)\n(?:[ \t]*\n)*(?:[ \t]+\S.*(?:\n|\Z)(?:[ \t]*\n)*)+", re.M
)


def _protected_spans(text: str, fmt: str) -> list[tuple[int, int]]:
    patterns = {"markdown": [_MD_FENCE], "asciidoc": [_ADOC_BLOCK], "rst": [_RST_LITERAL]}.get(fmt, [_MD_FENCE])
    spans = sorted(m.span() for p in patterns for m in p.finditer(text))
    merged: list[tuple[int, int]] = []
    for s, e in spans:
        if merged and s < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(e, merged[-1][1]))
        else:
            merged.append((s, e))
    return merged


def _clean_prose(text: str, fmt: str) -> str:
    text = _HTML_COMMENT.sub("", text)
    text = _LINKED_BADGE.sub("", text)
    text = _BADGE_IMAGE.sub("", text)
    if fmt == "rst":
        text = _RST_BADGE.sub("", text)
        text = _RST_LINK.sub(r"\1", text)
    if fmt == "asciidoc":
        text = _ADOC_URL_LINK.sub(lambda m: m.group(1) or m.group(0).split("[")[0].removeprefix("link:"), text)
    text = _IMAGE.sub(r"\1", text)
    text = _INLINE_LINK.sub(r"\1", text)
    text = _REF_LINK.sub(r"\1", text)
    text = _REF_DEFINITION.sub("", text)
    text = _HTML_TAG.sub("", text)
    return _BLANK_RUNS.sub("\n\n", "\n".join(line.rstrip() for line in text.split("\n")))


def normalize_text(text: str, fmt: str) -> str:
    """Normalised prose of a document in ``fmt`` (markdown, rst, asciidoc, text); code blocks untouched."""
    text = text.replace("\r\n", "\n")
    out, pos = [], 0
    for start, end in _protected_spans(text, fmt):
        out.append(_clean_prose(text[pos:start], fmt))
        out.append(text[start:end])
        pos = end
    out.append(_clean_prose(text[pos:], fmt))
    return "".join(out).strip("\n")


def normalize_section(section: DocSection) -> DocSection:
    """A copy of ``section`` with normalised text (code blocks as they were)."""
    return section.model_copy(update={"text": normalize_text(section.text, section.format)})
