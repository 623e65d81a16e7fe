"""Offline question/answer generation and back-end selection."""

import logging

import pytest

from mochi_pipeline.data_generation.assets import qa_writer
from mochi_pipeline.data_generation.llm_client import OfflineQA, OpenAICompatibleQA
from mochi_pipeline.data_generation.qa_generator import is_test_path, qa_pairs, qa_subjects
from mochi_pipeline.data_generation.settings import QASettings


def test_subjects_carry_docstring_signature_tests_and_docs(upstream):
    chunks, docs = upstream.chunks, upstream.docs
    subjects = {s.name: s for s in qa_subjects(chunks, docs, max_subjects=100)}
    centroid = subjects["centroid"]
    assert centroid.docstring.startswith("Return the centroid of ``points``")
    assert centroid.params == ["points: list[Point]"] and centroid.returns == "Point"
    assert centroid.tests and centroid.tests[0][0] == "tests/test_core.py"
    assert any("Compute the centroid" in d for d in centroid.docs)
    assert "test_centroid" not in subjects  # tests are material, not subjects
    assert set(list(subjects)[:2]) == {"Point", "centroid"}  # best documented (docstring, docs, tests) first
    assert len(qa_subjects(chunks, docs, max_subjects=3)) == 3


def test_offline_answers_come_from_the_code(upstream, tmp_path):
    chunks, docs = upstream.chunks, upstream.docs
    examples, batch = qa_pairs(
        chunks, docs, OfflineQA(), max_subjects=100, pairs_per_subject=3, cache_dir=tmp_path, log=logging.getLogger("t")
    )
    qa = {e.instruction: e.response for e in examples}
    assert (
        "centroid of ``points``" in qa["What does `centroid` return?"]
        and "`Point`" in qa["What does `centroid` return?"]
    )
    assert "centroid([Point(0, 0), Point(2, 2)])" in qa["How is `centroid` used?"]
    assert qa["What parameters does `clamp` take?"].count("float") == 3
    assert qa["What does `Sum` do?"] == "Sum adds integers."
    assert all(e.task == "qa" and e.generator == "qa_generator" and e.path for e in examples)
    assert batch.outcomes["answered"] == len({e.path + e.instruction.split("`")[1] for e in examples})
    assert not list(tmp_path.iterdir())  # offline needs no cache


def test_writer_follows_the_settings():
    assert isinstance(qa_writer(QASettings()), OfflineQA)
    http = qa_writer(QASettings(base_url="http://127.0.0.1:9/v1", model="m", concurrency=2))
    assert isinstance(http, OpenAICompatibleQA) and http.concurrency == 2 and http.model == "m"
    assert http.url == "http://127.0.0.1:9/v1/chat/completions"
    assert OpenAICompatibleQA(base_url="http://h:1").url == "http://h:1/v1/chat/completions"


@pytest.mark.parametrize(
    ("path", "is_test"),
    [
        ("tests/test_core.py", True),
        ("pkg/test_util.py", True),
        ("go/sum_test.go", True),
        ("web/a.test.js", True),
        ("src/FooTest.java", True),
        ("pkg/core.py", False),
        ("pkg/contest.py", False),
    ],
)
def test_test_paths(path, is_test):
    assert is_test_path(path) == is_test
