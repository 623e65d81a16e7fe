"""Completion examples cut from real chunks of the sample repository."""

import pytest

from mochi_pipeline.data_generation.code_facts import block_end
from mochi_pipeline.data_generation.completion_pairs import completion_pairs
from mochi_pipeline.data_generation.settings import CompletionSettings


@pytest.fixture(scope="module")
def chunks(upstream):
    return upstream.chunks


def test_block_end_takes_indented_body_and_braces():
    py = ["def f(x):\n", "    if x:\n", "        return 1\n", "\n", "    return 2\n", "y = 3\n"]
    assert block_end(py, 1, 40) == 3  # the `if` and its body
    assert block_end(py, 0, 40) == 5  # the whole function, trailing blank excluded before `y`
    c = ["int add(int a, int b) {\n", "    return a + b;\n", "}\n", "int main(void) {\n"]
    assert block_end(c, 0, 40) == 3


@pytest.mark.parametrize("fim_rate", [0.0, 1.0])
def test_examples_are_cut_at_line_boundaries(chunks, fim_rate):
    result = completion_pairs(chunks, CompletionSettings(), seed=3, fim_rate=fim_rate, spm_rate=0.5)
    assert result.examples
    by_path = {c.path: c for c in chunks}
    for ex in result.examples:
        chunk_texts = [c.text for c in chunks if c.path == ex.path]
        # The chunker keeps no trailing newline on a file's last chunk; the example ends its line.
        assert ex.response.endswith("\n") and any(ex.response.rstrip("\n") in t for t in chunk_texts)
        assert ex.date == by_path[ex.path].file_date and ex.generator == "completion_pairs"
        if ex.task.startswith("fim"):
            # Model-agnostic: no sentinel tokens, the file as it is split in three.
            assert "<fim" not in ex.raw_text and ex.raw_text == ex.prefix + ex.response + ex.suffix
            # One chunk as a document: its context header leads, then the chunk's text.
            documents = {(c.context.rstrip("\n") + "\n" if c.context.strip() else "") + c.text.rstrip("\n")
                         for c in chunks if c.path == ex.path}
            assert ex.raw_text.rstrip("\n") in documents
        else:
            assert ex.prefix == ex.suffix == "" and ex.raw_text == ex.context + ex.response
    tasks = {ex.task for ex in result.examples}
    assert tasks <= ({"fim_psm", "fim_spm"} if fim_rate else {"next_line", "next_block"})
    assert len(tasks) == 2


def test_seeded_and_independent_of_order(chunks):
    settings = CompletionSettings()
    a = completion_pairs(chunks, settings, seed=7, fim_rate=0.5, spm_rate=0.5).examples
    b = completion_pairs(list(reversed(chunks)), settings, seed=7, fim_rate=0.5, spm_rate=0.5).examples
    c = completion_pairs(chunks, settings, seed=8, fim_rate=0.5, spm_rate=0.5).examples
    assert sorted(e.model_dump_json() for e in a) == sorted(e.model_dump_json() for e in b)
    assert sorted(e.model_dump_json() for e in a) != sorted(e.model_dump_json() for e in c)


def test_fim_rate_controls_share(chunks):
    settings = CompletionSettings(examples_per_chunk=8)
    examples = completion_pairs(chunks, settings, seed=0, fim_rate=0.5, spm_rate=0.5).examples
    fim = sum(e.task.startswith("fim") for e in examples)
    assert 0.25 < fim / len(examples) < 0.75


def test_one_line_chunk_is_skipped_and_counted(chunks):
    tiny = chunks[0].model_copy(update={"text": "x = 1\n", "id": "tiny"})
    result = completion_pairs([tiny], CompletionSettings(), seed=0, fim_rate=0.5, spm_rate=0.5)
    assert result.examples == [] and result.skipped == {"too_few_code_lines": 1}
