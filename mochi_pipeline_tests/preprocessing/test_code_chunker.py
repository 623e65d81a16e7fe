"""Chunking with the real tree-sitter grammars: names, line ranges, budgets, merging, fallbacks."""

from __future__ import annotations

import pytest

from mochi_pipeline.preprocessing.code_chunker import chunk_file, chunk_source
from mochi_pipeline.preprocessing.grammars import parser_for, supported_languages
from mochi_pipeline.preprocessing.settings import ChunkingSettings, ChunkStrategy
from mochi_pipeline.preprocessing.token_counter import count_tokens, line_token_counts
from mochi_pipeline.records import SourceFile
from mochi_pipeline_tests import repo_factory as rf

TSX = '''import React from "react";

export function Greeting({ name }: { name: string }) {
  return <h1>Hello {name}</h1>;
}

export class Panel extends React.Component {
  render() { return <div>{this.props.children}</div>; }
}
'''

# (language, source, expected (symbol, kind, start_line, end_line) among the chunks) with min_tokens=0.
CASES = [
    ("python", rf.CORE_PY, [("Point", "class", 7, 12), ("Point.distance_to", "function", 14, 16),
                            ("Point.scaled", "function", 18, 20), ("centroid", "function", 23, 28),
                            ("perimeter", "function", 31, 36)]),
    ("javascript", rf.JS, [("Emitter.constructor", "function", 3, 3), ("Emitter.on", "function", 4, 4),
                           ("Emitter.emit", "function", 5, 5), ("once", "function", 8, 11)]),
    ("typescript", rf.TS, [("Shape.area", "function", 1, 1), ("Square.area", "function", 5, 5),
                           ("totalArea", "function", 8, 10)]),
    ("tsx", TSX, [("Greeting", "function", 3, 5), ("Panel.render", "function", 8, 8)]),
    ("java", rf.JAVA, [("Counter.increment", "function", 6, 8), ("Counter.get", "function", 10, 12)]),
    ("go", rf.GO, [("Sum", "function", 3, 10), ("Stack", "class", 12, 12), ("Stack.Push", "function", 14, 14)]),
    ("rust", rf.RUST, [("Counter", "class", 1, 2), ("Counter.new", "function", 5, 5),
                       ("Counter.tick", "function", 6, 6), ("double", "function", 9, 9)]),
    ("c", rf.C, [("add", "function", 3, 5), ("main", "function", 7, 10)]),
    ("cpp", rf.CPP, [("Accumulator.add", "function", 5, 5), ("Accumulator.total", "function", 6, 6),
                     ("sum", "function", 11, 15)]),
]

NO_MERGE = ChunkingSettings(min_tokens=0)


def _source(text: str, language: str, path: str = "src/file") -> SourceFile:
    return SourceFile(path=path, language=language, text=text, sha="", size=len(text.encode()),
                      last_commit_date="2024-01-01T00:00:00+00:00")


def _covered(text: str, chunks) -> set[int]:
    """1-based lines with a word character that no chunk covers."""
    covered = {n for c in chunks for n in range(c["start_line"], c["end_line"] + 1)}
    return {i for i, line in enumerate(text.split("\n"), 1) if any(ch.isalnum() for ch in line)} - covered


def test_every_language_has_a_grammar():
    assert set(supported_languages()) >= {"python", "javascript", "typescript", "tsx", "java", "go", "rust", "c",
                                          "cpp"}
    for language in supported_languages():
        assert parser_for(language).parse(b"x").root_node is not None
    assert parser_for("cobol") is None


@pytest.mark.parametrize(("language", "source", "expected"), CASES, ids=[c[0] for c in CASES])
def test_definitions_get_qualified_names_and_line_ranges(language, source, expected):
    result = chunk_source(source, language, NO_MERGE)
    assert result.mode == "ast"
    found = {(p["symbol"], p["kind"], p["start_line"], p["end_line"]) for p in result.pieces}
    assert set(expected) <= found
    lines = source.split("\n")
    for p in result.pieces:  # the text is exactly the lines of the range
        assert p["text"] == "\n".join(lines[p["start_line"] - 1:p["end_line"]])
    assert _covered(source, result.pieces) == set()


def test_module_level_code_between_definitions_is_kept():
    source = "import os\n\nX = 1\n\n\ndef f():\n    return os.sep\n\n\nif __name__ == '__main__':\n    f()\n"
    pieces = chunk_source(source, "python", NO_MERGE).pieces
    assert [(p["kind"], p["start_line"], p["end_line"]) for p in pieces] == [
        ("module", 1, 3), ("function", 6, 7), ("module", 10, 11)]


def test_class_strategy_keeps_classes_whole_and_file_strategy_the_file():
    by_class = chunk_source(rf.CORE_PY, "python", ChunkingSettings(strategy=ChunkStrategy.CLASS, min_tokens=0))
    assert ("Point", "class", 7, 20) in {(p["symbol"], p["kind"], p["start_line"], p["end_line"])
                                         for p in by_class.pieces}
    whole = chunk_source(rf.CORE_PY, "python", ChunkingSettings(strategy=ChunkStrategy.FILE))
    assert [(p["kind"], p["start_line"], p["end_line"]) for p in whole.pieces] == [("file", 1, 36)]


def test_oversize_class_is_split_into_its_methods():
    methods = "".join(
        f"    def method_{i}(self, value):\n        total = value * {i} + self.offset\n"
        f"        return self.combine(total, value, {i})\n\n" for i in range(30)
    )
    source = f"class Big:\n    \"\"\"A class far over budget.\"\"\"\n\n    offset = 3\n\n{methods}"
    settings = ChunkingSettings(strategy=ChunkStrategy.CLASS, max_tokens=120, min_tokens=0)
    pieces = chunk_source(source, "python", settings).pieces
    assert len(pieces) == 31
    assert pieces[0]["symbol"] == "Big" and pieces[0]["kind"] == "class" and pieces[0]["start_line"] == 1
    assert [p["symbol"] for p in pieces[1:]] == [f"Big.method_{i}" for i in range(30)]
    assert all(p["n_tokens"] <= 120 for p in pieces)
    assert _covered(source, pieces) == set()


def test_oversize_function_is_split_into_statement_groups():
    body = "".join(f"    value_{i} = compute(value_{i - 1}, {i}) if {i} % 3 else {i}\n" for i in range(1, 80))
    source = f"def long_function(value_0):\n{body}    return value_79\n"
    settings = ChunkingSettings(max_tokens=100, min_tokens=0)
    pieces = chunk_source(source, "python", settings).pieces
    assert len(pieces) > 5
    assert {p["symbol"] for p in pieces} == {"long_function"}
    assert all(p["kind"] == "function" and p["n_tokens"] <= 100 for p in pieces)
    assert pieces[0]["start_line"] == 1 and pieces[-1]["end_line"] == 81
    # Statement groups are consecutive and whole lines.
    assert all(a["end_line"] + 1 == b["start_line"] for a, b in zip(pieces, pieces[1:], strict=False))


def test_overlong_single_line_is_cut_within_budget():
    source = "var a=[" + ",".join(str(i) for i in range(600)) + "];\n"
    pieces = chunk_source(source, "javascript", ChunkingSettings(max_tokens=64, min_tokens=0)).pieces
    assert len(pieces) > 1
    assert all(p["n_tokens"] <= 64 and p["start_line"] == 1 for p in pieces)
    assert "".join(p["text"] for p in pieces) == source.strip()


def test_tiny_siblings_are_merged():
    source = "".join(f"def f{i}():\n    return {i}\n\n\n" for i in range(5)) + (
        "def big(items):\n    total = 0\n    for item in items:\n        total += item.weight * item.count\n"
        "    return total / max(1, len(items))\n")
    pieces = chunk_source(source, "python", ChunkingSettings(min_tokens=24)).pieces
    assert [(p["symbol"], p["kind"]) for p in pieces] == [("f0, f1, f2, f3, f4", "merged"), ("big", "function")]
    assert pieces[0]["start_line"] == 1 and pieces[0]["end_line"] == 18


@pytest.mark.parametrize("language", ["ruby", "text-unknown"])
def test_unknown_language_falls_back_to_overlapping_windows(language):
    source = "".join(f"puts 'line number {i} of the script'\n" for i in range(200))
    settings = ChunkingSettings(window_tokens=64, overlap_tokens=16)
    result = chunk_source(source, language, settings)
    assert result.mode == "fallback_unknown_language"
    assert {p["kind"] for p in result.pieces} == {"window"}
    assert all(p["n_tokens"] <= 64 for p in result.pieces)
    assert _covered(source, result.pieces) == set()
    for a, b in zip(result.pieces, result.pieces[1:], strict=False):
        assert a["start_line"] < b["start_line"] <= a["end_line"] + 1  # moves forward, overlaps a little
        overlap_lines = range(b["start_line"], a["end_line"] + 1)
        assert sum(count_tokens(source.split("\n")[i - 1]) for i in overlap_lines) <= 16


def test_garbage_falls_back_to_windows():
    source = "}}}} ((( def class ]]] " * 40 + "\n" + ")))) {{{{ = = = \n" * 30
    assert chunk_source(source, "python", ChunkingSettings()).mode == "fallback_parse_error"


def test_context_header_names_file_module_doc_imports_used_and_class():
    chunks = {c.symbol: c for c in chunk_file(_source(rf.CORE_PY, "python", "pkg/core.py"), NO_MERGE)}
    ctx = chunks["Point.distance_to"].context.split("\n")
    assert ctx[0] == "# File: pkg/core.py"
    assert "# Module: Core geometry helpers for the sample project." in ctx
    assert "import math" in ctx and "from dataclasses import dataclass" not in ctx
    assert ctx[-1] == "# In: @dataclass class Point:"
    assert "import math" not in chunks["centroid"].context  # centroid does not use math
    assert "from dataclasses import dataclass" in chunks["Point"].context
    java = {c.symbol: c for c in chunk_file(_source(rf.JAVA, "java", "Counter.java"), NO_MERGE)}
    assert java["Counter.get"].context.split("\n") == ["// File: Counter.java", "// In: public class Counter"]
    js = "import { a, b as c } from './m';\nimport * as ns from 'x';\n\nexport function f() { return c(ns.q); }\n"
    (f,) = [c for c in chunk_file(_source(js, "javascript"), NO_MERGE) if c.symbol == "f"]
    assert f.context.split("\n")[1:] == ["import { a, b as c } from './m';", "import * as ns from 'x';"]


def test_chunks_are_records_with_stable_ids():
    file = _source(rf.UTIL_PY, "python", "pkg/util.py")
    first, second = chunk_file(file, ChunkingSettings()), chunk_file(file, ChunkingSettings())
    assert [c.id for c in first] == [c.id for c in second]
    assert len({c.id for c in first}) == len(first)
    assert all(c.file_date == file.last_commit_date and c.path == "pkg/util.py" for c in first)


def test_line_token_counts_match_count_tokens():
    text = "def f(x):\n    return x + 1.5  # done \x01\n\n\tfoo_bar->baz();"
    assert line_token_counts(text) == [count_tokens(line) for line in text.split("\n")]
