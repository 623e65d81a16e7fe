"""Documentation normalisation: markup noise out, prose and code blocks kept."""

from __future__ import annotations

from mochi_pipeline.ingestion.doc_parser import parse_document
from mochi_pipeline.preprocessing.doc_normalizer import normalize_section, normalize_text
from mochi_pipeline.records import CodeBlock, DocSection
from mochi_pipeline_tests import repo_factory as rf

MARKDOWN = """[![build](https://img.shields.io/badge/build-passing-green.svg)](https://ci.example.com)
![coverage](https://codecov.io/gh/x/y/badge.svg)

<!-- generated: do not edit -->
Read <b>the</b> [guide](docs/guide.md) and the [API][api] docs.
![diagram](img/arch.png)



Trailing spaces here.   
[api]: https://example.com/api

```html
<!-- kept --> <b>[x](y)</b>



```
"""


def test_markdown_noise_is_removed_and_code_kept_verbatim():
    out = normalize_text(MARKDOWN, "markdown")
    assert out == (
        "Read the guide and the API docs.\ndiagram\n\nTrailing spaces here.\n\n"
        "```html\n<!-- kept --> <b>[x](y)</b>\n\n\n\n```"
    )


def test_rst_and_asciidoc_links():
    rst = "See `the docs <https://example.com>`_ now.\n\n.. image:: https://img.shields.io/pypi/v/x.svg\n\n" \
          "Example::\n\n    <b>kept</b>   \n"
    assert normalize_text(rst, "rst") == "See the docs now.\n\nExample::\n\n    <b>kept</b>   "
    adoc = "Visit https://example.com[the site] or link:docs/x.html[X].\n\n----\n<i>code</i>\n----\n"
    assert normalize_text(adoc, "asciidoc") == "Visit the site or X.\n\n----\n<i>code</i>\n----"


def test_section_copy_keeps_code_blocks_and_fields():
    section = DocSection(path="README.md", heading_path=["T"], text="a\n\n\n\nb <br/>", start_line=1, end_line=6,
                         format="markdown", code_blocks=[CodeBlock(language="python", code="x  =  1\n\n\n")])
    clean = normalize_section(section)
    assert clean.text == "a\n\nb"
    assert clean.code_blocks == section.code_blocks
    assert clean.model_dump(exclude={"text"}) == section.model_dump(exclude={"text"})
    assert section.text == "a\n\n\n\nb <br/>"  # the input is untouched


def test_sample_readme():
    first = normalize_section(parse_document("README.md", rf.README)[0])
    assert first.text == "A tiny geometry library. See the guide."
