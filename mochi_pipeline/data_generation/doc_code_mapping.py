"""Pairs of documentation and the code it describes, in both directions.

A doc section is linked to a code symbol when the section names it (backticked, ``X()``, or an
identifier-shaped word equal to a defined name) or when one of its code blocks calls or defines it.
A docstring (or the comment block above a definition) links to its own definition. Each link gives
"Explain `X`" -> the documentation and "Implement `X` as documented: ..." -> the code.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from mochi_pipeline.data_generation.code_facts import defined_names, definition_text, docstring, short_name
from mochi_pipeline.records import Chunk, DocSection, TrainingExample

GENERATOR = "doc_code_mapping"
_BACKTICKED = re.compile(r"`{1,2}([A-Za-z_][\w.:]*)(?:\(\))?`{1,2}")
_CALLED = re.compile(r"\b([A-Za-z_]\w*)\s*\(")
_WORD = re.compile(r"\b([A-Za-z_]\w*)\b")
_MIN_DOC_CHARS = 20
_MIN_DOCSTRING_CHARS = 12  # "Sum adds integers." says something; "Getter." does not


def _identifier_shaped(word: str) -> bool:
    """Words that cannot be plain English: snake_case or camelCase/PascalCase with an inner capital."""
    return "_" in word.strip("_") or bool(re.search(r"[a-z][A-Z]", word))


@dataclass
class DocCodeResult:
    examples: list[TrainingExample] = field(default_factory=list)
    links: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)


class SymbolIndex:
    """Defined names -> the chunk that defines them (the smallest such chunk wins: it is the most specific)."""

    def __init__(self, chunks: list[Chunk]):
        self.by_name: dict[str, Chunk] = {}
        for chunk in sorted(chunks, key=lambda c: (len(c.text), c.id), reverse=True):
            for name in defined_names(chunk):
                if len(short_name(name)) >= 3:
                    self.by_name[name] = chunk

    def mentioned_in(self, section: DocSection) -> dict[str, Chunk]:
        found: dict[str, Chunk] = {}
        for m in _BACKTICKED.finditer(section.text):
            for name in (m.group(1), short_name(m.group(1))):
                if name in self.by_name:
                    found.setdefault(short_name(name), self.by_name[name])
                    break
        for m in _WORD.finditer(section.text):
            if _identifier_shaped(m.group(1)) and m.group(1) in self.by_name:
                found.setdefault(m.group(1), self.by_name[m.group(1)])
        for block in section.code_blocks:
            for m in _CALLED.finditer(block.code):
                if m.group(1) in self.by_name:
                    found.setdefault(m.group(1), self.by_name[m.group(1)])
        return found


def _section_title(section: DocSection) -> str:
    return " > ".join(section.heading_path) or section.path


def _pair(name: str, chunk: Chunk, doc: str, source: str, path: str, date: str) -> list[TrainingExample]:
    base = dict(generator=GENERATOR, path=path, language=chunk.language, date=date)
    code = definition_text(chunk, short_name(name))
    return [
        TrainingExample(
            instruction=f"Explain `{name}` from `{chunk.path}`.",
            context=code,
            response=doc,
            task="explain",
            raw_text=f"{source}\n{doc}\n\n{code}",
            **base,
        ),
        TrainingExample(
            instruction=f"Implement `{name}` as documented:\n{doc}",
            context=chunk.context,
            response=code,
            task="implement",
            **base,
        ),
    ]


def doc_code_pairs(sections: list[DocSection], chunks: list[Chunk]) -> DocCodeResult:
    result = DocCodeResult()
    index = SymbolIndex(chunks)
    seen: set[tuple[str, str]] = set()
    file_dates: dict[str, str] = defaultdict(str)
    for chunk in chunks:
        file_dates[chunk.path] = max(file_dates[chunk.path], chunk.file_date)

    for section in sections:
        doc = section.text.strip()
        if len(doc) < _MIN_DOC_CHARS:
            result.skipped["doc_section_too_short"] += 1
            continue
        mentioned = index.mentioned_in(section)
        if not mentioned:
            result.skipped["doc_section_names_no_symbol"] += 1
        for name, chunk in sorted(mentioned.items()):
            if (section.path, section.start_line, chunk.id) in seen:
                continue
            seen.add((section.path, section.start_line, chunk.id))
            source = f"Documentation: {_section_title(section)} ({section.path})"
            # Docs rarely carry the file's commit date; the code's date keeps the pair in the same split as its code.
            result.examples += _pair(name, chunk, doc, source, section.path, file_dates[chunk.path])
            result.links["doc_section"] += 1

    for chunk in chunks:
        for name in defined_names(chunk):
            if "." in name or "::" in name:
                continue
            doc = docstring(chunk, name)
            if len(doc) < _MIN_DOCSTRING_CHARS:
                continue
            if (chunk.path, name, chunk.id) in seen:
                continue
            seen.add((chunk.path, name, chunk.id))
            result.examples += _pair(
                name, chunk, doc, f"Docstring of {name} ({chunk.path})", chunk.path, chunk.file_date
            )
            result.links["docstring"] += 1
    return result
