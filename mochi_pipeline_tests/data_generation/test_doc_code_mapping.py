"""Doc <-> code pairs from the sample repository's README, guide and docstrings."""


from mochi_pipeline.data_generation.code_facts import defined_names, docstring, signature
from mochi_pipeline.data_generation.doc_code_mapping import doc_code_pairs
from mochi_pipeline.records import CodeBlock, DocSection


def _by(examples, task, name):
    return [e for e in examples if e.task == task and f"`{name}`" in e.instruction]


def test_backticked_symbols_link_both_directions(upstream):
    chunks, docs = upstream.chunks, upstream.docs
    result = doc_code_pairs(docs, chunks)
    explain = [e for e in _by(result.examples, "explain", "perimeter") if e.path == "docs/guide.rst"]
    assert len(explain) == 1
    assert "sums the sides of a closed polygon" in explain[0].response
    assert explain[0].context.startswith("def perimeter(")  # the definition alone, not its whole chunk
    implement = [e for e in _by(result.examples, "implement", "perimeter") if e.path == "docs/guide.rst"]
    assert "sums the sides" in implement[0].instruction and implement[0].response.startswith("def perimeter(")
    # README names `load_settings` and `clamp` in one section: both linked.
    readme = {e.instruction.split("`")[1] for e in result.examples if e.path == "README.md" and e.task == "explain"}
    assert {"centroid", "load_settings", "clamp"} <= readme


def test_docstrings_of_other_languages(upstream):
    chunks = upstream.chunks
    result = doc_code_pairs([], chunks)
    go = _by(result.examples, "explain", "Sum")
    assert go and go[0].response == "Sum adds integers." and go[0].language == "go"
    assert result.links["doc_section"] == 0 and result.links["docstring"] >= 8


def test_code_block_calling_a_symbol_links_it(upstream):
    chunks = upstream.chunks
    section = DocSection(
        path="docs/api.md",
        heading_path=["API"],
        text="An example of the geometry helpers in use, no names in prose.",
        code_blocks=[CodeBlock(language="python", code="print(perimeter(pts))\n")],
        start_line=1,
        end_line=5,
        format="markdown",
    )
    result = doc_code_pairs([section], chunks)
    assert [e.instruction.split("`")[1] for e in result.examples if e.path == "docs/api.md"] == [
        "perimeter",
        "perimeter",
    ]


def test_prose_words_do_not_match_short_or_plain_names(upstream):
    chunks = upstream.chunks
    section = DocSection(
        path="docs/x.md",
        heading_path=["X"],
        text="We add things and get the total sum of a double count.",
        start_line=1,
        end_line=2,
        format="markdown",
    )
    result = doc_code_pairs([section], chunks)
    assert not [e for e in result.examples if e.path == "docs/x.md"]
    assert result.skipped["doc_section_names_no_symbol"] == 1


def test_code_facts_on_several_languages(upstream):
    chunks = upstream.chunks
    by_path: dict[str, list] = {}
    for c in chunks:  # the chunker cuts a file at its definitions: several chunks a file
        by_path.setdefault(c.path, []).append(c)

    def names(path: str) -> set[str]:
        return set().union(*(defined_names(c) for c in by_path[path]))

    def holding(path: str, name: str):
        return next(c for c in by_path[path] if name in defined_names(c))

    assert {"Counter", "increment", "get"} <= names("java/sample/Counter.java")
    assert {"Sum", "Stack", "Push"} <= names("go/sum.go")
    assert docstring(holding("rust/counter.rs", "Counter"), "Counter") == "A simple counter."
    sig = signature(holding("web/shapes.ts", "totalArea"), "totalArea")
    assert sig.params == ["shapes: Shape[]"] and sig.returns == "number"
    core = next(c for c in chunks if c.symbol == "Point")
    assert signature(core, "Point") is None  # a class, not a callable
    method = next(c for c in chunks if "scaled" in defined_names(c))  # the chunker may cut a long class
    assert signature(method, "scaled").params == ["factor: float"]


def test_merged_chunk_symbols_are_split(upstream):
    chunks = upstream.chunks
    cpp = next(c for c in chunks if c.path == "cpp/acc.cpp")
    merged = cpp.model_copy(update={"symbol": "Accumulator, Accumulator.add, Accumulator.total", "kind": "merged"})
    names = defined_names(merged)
    assert {"Accumulator", "Accumulator.add", "add", "Accumulator.total", "total"} <= set(names)
    assert "Accumulator, Accumulator.add, Accumulator.total" not in names
