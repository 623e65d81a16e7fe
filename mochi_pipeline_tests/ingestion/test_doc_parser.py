"""Document sectioning for Markdown, reStructuredText, AsciiDoc and plain text."""

from __future__ import annotations

import pytest

from mochi_pipeline.ingestion.doc_parser import doc_format, parse_document
from mochi_pipeline_tests.repo_factory import GUIDE_RST, NOTES_ADOC, README


@pytest.mark.parametrize(("path", "fmt"), [
    ("README.md", "markdown"), ("a/b.markdown", "markdown"), ("g.rst", "rst"), ("n.adoc", "asciidoc"),
    ("n.asciidoc", "asciidoc"), ("notes.txt", "text"), ("main.py", "text"),
])
def test_doc_format(path, fmt):
    assert doc_format(path) == fmt


def test_sample_readme():
    sections = parse_document("README.md", README)
    assert [s.heading_path for s in sections] == [
        ["Sample project"], ["Sample project", "Usage"], ["Sample project", "Settings"]]
    usage = sections[1]
    (block,) = usage.code_blocks
    assert block.language == "python"
    assert block.code == "from pkg.core import Point, centroid\ncentroid([Point(0, 0), Point(2, 2)])\n"
    assert README.splitlines()[block.start_line - 1] == "from pkg.core import Point, centroid"
    assert (usage.start_line, usage.end_line) == (7, 14)
    assert usage.text.startswith("Compute the centroid") and "```python" in usage.text
    assert all(s.format == "markdown" and s.path == "README.md" for s in sections)


def test_markdown_headings_fences_and_setext():
    text = (
        "Title\n"
        "=====\n"
        "\n"
        "Intro text.\n"
        "\n"
        "Part A\n"
        "------\n"
        "\n"
        "~~~~ js\n"
        "# not a heading\n"
        "```\n"
        "still code\n"
        "~~~~\n"
        "\n"
        "### Deep ###\n"
        "\n"
        "````\n"
        "Fake\n"
        "====\n"
        "````\n"
        "\n"
        "## Part B\n"
        "After.\n"
        "\n"
        "```unclosed-lang\n"
        "## inside an unclosed fence\n"
    )
    sections = parse_document("doc.md", text)
    assert [s.heading_path for s in sections] == [
        ["Title"], ["Title", "Part A"], ["Title", "Part A", "Deep"], ["Title", "Part B"]]
    part_a = sections[1]
    (tilde,) = part_a.code_blocks
    assert tilde.language == "js"
    assert tilde.code == "# not a heading\n```\nstill code\n"
    assert tilde.start_line == 10
    deep = sections[2]
    assert deep.code_blocks[0].code == "Fake\n====\n" and deep.code_blocks[0].language == ""
    part_b = sections[3]
    assert part_b.code_blocks[0].language == "unclosed-lang"
    assert part_b.code_blocks[0].code == "## inside an unclosed fence\n"
    assert part_b.end_line == len(text.splitlines())


def test_windows_line_endings():
    sections = parse_document("w.md", "# A\r\n\r\ntext\r\n\r\n```py\r\nx = 1\r\n```\r\n## B\r\nmore\r\n")
    assert [s.heading_path for s in sections] == [["A"], ["A", "B"]]
    assert sections[0].code_blocks[0].code == "x = 1\n" and sections[0].code_blocks[0].language == "py"


def test_markdown_without_headings_is_one_untitled_section():
    (section,) = parse_document("x.md", "just text\n\nmore\n")
    assert section.heading_path == [] and section.text == "just text\n\nmore"
    assert (section.start_line, section.end_line) == (1, 3)


def test_sample_rst_guide():
    sections = parse_document("docs/guide.rst", GUIDE_RST)
    assert [s.heading_path for s in sections] == [["Guide", "Points"], ["Guide", "Polygons"]]
    (block,) = sections[0].code_blocks
    assert block.language == "python"
    assert block.code == "a = Point(0, 0)\na.distance_to(Point(3, 4))\n"
    assert GUIDE_RST.splitlines()[block.start_line - 1].strip() == "a = Point(0, 0)"
    assert sections[1].text == "``perimeter`` sums the sides of a closed polygon."
    assert all(s.format == "rst" for s in sections)


def test_rst_overlines_literal_blocks_and_options():
    text = (
        "=======\n"
        " Title\n"
        "=======\n"
        "\n"
        "Chapter\n"
        "=======\n"
        "\n"
        "Example::\n"
        "\n"
        "    Not a title\n"
        "    -----------\n"
        "\n"
        ".. highlight:: c\n"
        "\n"
        "Shell::\n"
        "\n"
        "    int x;\n"
        "\n"
        "Section\n"
        "-------\n"
        "\n"
        ".. code:: bash\n"
        "   :linenos:\n"
        "\n"
        "   echo one\n"
        "     indented\n"
        "\n"
        "Back to prose.\n"
    )
    sections = parse_document("x.rst", text)
    assert [s.heading_path for s in sections] == [["Title", "Chapter"], ["Title", "Chapter", "Section"]]
    literal, c_block = sections[0].code_blocks
    assert (literal.language, literal.code) == ("", "Not a title\n-----------\n")
    assert (c_block.language, c_block.code) == ("c", "int x;\n")
    (bash,) = sections[1].code_blocks
    assert bash.language == "bash"
    assert bash.code == "echo one\n  indented\n"
    assert bash.start_line == 25
    assert sections[1].text.endswith("Back to prose.")


def test_sample_asciidoc_notes():
    (section,) = parse_document("docs/notes.adoc", NOTES_ADOC)
    assert section.heading_path == ["Notes", "Design"]
    (block,) = section.code_blocks
    assert block.language == "javascript"
    assert block.code == 'const e = new Emitter();\ne.on("x", console.log);\n'
    assert section.format == "asciidoc"


def test_asciidoc_blocks_hide_headings():
    text = (
        "= Book\n"
        "\n"
        "Preface.\n"
        "\n"
        "== One\n"
        "\n"
        "[source, python, linenums]\n"
        ".A block title\n"
        "----\n"
        "== not a heading\n"
        "----\n"
        "\n"
        "////\n"
        "== commented out\n"
        "////\n"
        "\n"
        "....\n"
        "literal\n"
        "....\n"
        "\n"
        "=== One.A\n"
        "\n"
        "```ruby\n"
        "puts 1\n"
        "```\n"
    )
    sections = parse_document("b.adoc", text)
    assert [s.heading_path for s in sections] == [["Book"], ["Book", "One"], ["Book", "One", "One.A"]]
    assert [(c.language, c.code) for c in sections[1].code_blocks] == [
        ("python", "== not a heading\n"), ("", "literal\n")]
    assert sections[2].code_blocks[0].language == "ruby"


def test_other_files_are_one_section():
    (section,) = parse_document("notes.txt", "# not markdown here\nline two\n")
    assert section.heading_path == [] and section.format == "text"
    assert section.text == "# not markdown here\nline two"
    assert (section.start_line, section.end_line) == (1, 2)
    assert parse_document("empty.md", "") == []
